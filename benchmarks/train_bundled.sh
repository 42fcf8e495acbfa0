#!/usr/bin/env bash
# Reproduce a bundled model (see its card, models/weights/<MODEL>.md):
#
#   benchmarks/train_bundled.sh MODEL WORK_DIR        # MODEL: dzsr-small-x2, dzsr-small-x4, dzsr-small-x2-sharp
#
# Everything it trains on is downloaded by the script itself from Debian (`apt-get download`, no root
# needed): the photographs of lomiri-wallpapers-16.04 (the project's photos come from it),
# lomiri-wallpapers-20.04 and ukui-wallpapers, photographs only (the illustrations and renders are listed
# below and left out; ukui-wallpapers holds none), each file checked against its SHA-256. The five photos
# of benchmarks/quality.py and of the example capture are held out.
#
# Data: the 11 photos x 5 seeds, each a simulated capture at the model's ratio: 4 through the phone pipeline
# (`dzsr simulate --camera phone`), 1 through the plain one (`--camera none`), prepared with
# `dzsr prepare --scale S --test-fraction 0.15`. Each training starts from pinned weights taken from the
# repository's history and checked by their SHA-256 (INIT=PATH overrides them), two threads on the CPU:
#   dzsr-small-x2        x2 captures (longer side 2800 px); from the previous bundled x2 (7ab56d5b…, itself
#                        trained in two earlier stages, listed at the end); l1, lr 1e-4, 1600 steps
#   dzsr-small-x4        x4 captures (longer side 4000 px, so that the tele's footprint keeps enough pixels);
#                        from dzsr-small-x2 (822a211b…) across scales (`--init` carries the scale-free
#                        weights, an extra upsampling stage starts as nearest neighbour); l1, lr 1e-4, 1600
#   dzsr-small-x2-sharp  x2 captures at two sizes (longer side 2800 and 1400 px, 110 captures); from
#                        dzsr-small-x2 (822a211b…); the SelfDZSR++ perceptual recipe, l1 + 0.08 x local
#                        overlapped sliced-Wasserstein on VGG16 features (`--loss l1+losw`), the latter against
#                        the tele with its flat areas' noise taken out (`--sw-target quiet`), lr 5e-5, 600 steps
# All: batch 16, LR patch 48, validation and checkpoints every 200 steps. Re-running continues an
# interrupted run (--resume) and skips what is already there; STEPS=N changes the number of steps.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
model=$1 work=$2
case $model in
  dzsr-small-x2)       ratio=2 sides=(2800) set=x2 run=run_phone loss=l1 lr=1e-4 steps=1600 seed=2
                       init=(8e39447 7ab56d5b450de09ff63322a7e012ef1623529c527db0a06527cbdfe1b8db10e3) ;;
  dzsr-small-x4)       ratio=4 sides=(4000) set=x4 run=run_x4 loss=l1 lr=1e-4 steps=1600 seed=4
                       init=(3819f51 822a211b1dd499637c7c0fc81fe473f2ed440ac3e21612de0e300afcaf8054c0) ;;
  dzsr-small-x2-sharp) ratio=2 sides=(2800 1400) set=x2-sharp run=run_sharp loss=l1+losw lr=5e-5 steps=600
                       seed=5 sw_target=quiet
                       init=(3819f51 822a211b1dd499637c7c0fc81fe473f2ed440ac3e21612de0e300afcaf8054c0) ;;
  *) echo "usage: $0 dzsr-small-x2|dzsr-small-x4|dzsr-small-x2-sharp WORK_DIR" >&2; exit 2 ;;
esac
mkdir -p "$work"
cd "$work"

mkdir -p debs photos

# package=version: the versions of Debian 12 (bookworm) the shipped model was trained from
packages=(lomiri-wallpapers-16.04=20.04.0-2 lomiri-wallpapers-20.04=20.04.0-2 ukui-wallpapers=20.04.3-1.1)
for p in "${packages[@]}"; do
  name=${p%%=*}
  if ! ls debs/"$name"_*.deb >/dev/null 2>&1; then (cd debs && apt-get download "$p"); fi
  [ -d "debs/$name" ] || dpkg-deb -x debs/"$name"_*.deb "debs/$name"
done

# the training photographs: sha256, package, file
while read -r sha pkg file; do
  src="debs/$pkg/usr/share/backgrounds/$file"
  echo "$sha  $src" | sha256sum --check --quiet
  ln -sf "$PWD/$src" "photos/$file"
done <<'EOF'
bd86b081f9975e2b83527f71e49b9271a8ab40885428395969d9f7d834d7f050 lomiri-wallpapers-16.04 Bridge_by_Sander_Klootwijk.jpg
af5af17841009732def24b09bb1e669a1b09d2b4bdeee7812c371101c30d2bb3 lomiri-wallpapers-16.04 Dragonfly_by_Bolly.jpg
c8c0ab18e48d9e0419fe42881112137f3afafc27dfddc29ec3a6d54c56d225ad lomiri-wallpapers-16.04 Picture_0B_by_freespace.jpg
66268e7b48f8854d36a28765fac6e23ec1aee251daa6da1f64715f201020ad36 lomiri-wallpapers-16.04 aitzgorri_by_Aitzol_Berasategi.jpg
15372488a192b2be2eafc67bd3ed31cbfca19abe3929e925607fcbc9cb4d4202 lomiri-wallpapers-16.04 analogpattern_by_Peter_Nerlich.jpg
85a5453c2fed514c75973016f3d862aca62eb7ca087618822469274ac1092373 lomiri-wallpapers-16.04 free_by_Peter_Nerlich.jpg
cc40e313c74e421edffe3403def413c16878ce14661cce7ec5915baeab35538d lomiri-wallpapers-16.04 friends_by_Aitzol_Berasategi.jpg
4c119350ead80201fe256850c3d316309ddfb4bdf10b235ce982dcde0c667c05 lomiri-wallpapers-16.04 life_by_Aitzol_Berasategi.jpg
414d0072b2f6f2c555deafeaef6e45c4fed6fa9ad26eba6560ca8803959cf97a lomiri-wallpapers-16.04 picosdeeuropa_by_Aitzol_Berasategi.jpg
474dab6a4b9f94dc76c29dfe30e9f5db4af0fd2e33fe5d695f8152b371efca18 lomiri-wallpapers-16.04 sunset_by_Aitzol_Berasategi.jpg
9319dfb3651833881339a8d9b769b99efaf474969e6cd58e427eb2524aca8e8a lomiri-wallpapers-20.04 Infinite-Sea_by_Aury88.jpg
EOF
# held out: Kleiber, Wine, greentock, Picture_1A, seeding (benchmarks/quality.py, examples/)
# left out, not photographs: umang (16.04); Fossa, Painting-Colors (20.04); all 12 of ukui-wallpapers


# simulate_captures: each photo through 5 simulated captures at $ratio per longer side in $sides, 4 through
# the phone camera (seeds 0-300) and 1 through the plain pipeline (seed 400; a second side's seeds are 1000
# more), linked into captures_$set/. With one side: sim_x<ratio>_s<seed>/, <photo>-s<seed>_{uw,tele}.jpg;
# with several: sim_x<ratio>_<side>_s<seed>/, <photo>-<side>-s<seed>_{uw,tele}.jpg (names decide the split).
simulate_captures() {
  local spec camera seed f b sim tag="" max_side offset=0
  mkdir -p "captures_$set"
  for max_side in "${sides[@]}"; do
    [ ${#sides[@]} -gt 1 ] && tag=-$max_side
    for spec in phone:0 phone:100 phone:200 phone:300 none:400; do
      camera=${spec%%:*} seed=$((${spec##*:} + offset))
      sim=sim_x${ratio}${tag/-/_}_s$seed
      [ -f "$sim/simulation.json" ] || dzsr simulate photos "$sim" --ratio "$ratio" --seed "$seed" \
        --max-side "$max_side" --camera "$camera"
      for f in "$sim"/captures/*_uw.jpg; do
        b=$(basename "$f" _uw.jpg)
        ln -sf "$PWD/$f" "captures_$set/${b}${tag}-s${seed}_uw.jpg"
        ln -sf "$PWD/$sim/captures/${b}_tele.jpg" "captures_$set/${b}${tag}-s${seed}_tele.jpg"
      done
    done
    offset=$((offset + 1000))
  done
}

# pinned_weights COMMIT FILE SHA256 OUT: the weights FILE as committed at COMMIT, copied to OUT once and checked
# against SHA256 (the starting point of a training, fixed whatever the bundled model is today).
pinned_weights() {
  local commit=$1 file=$2 sha=$3 out=$4
  if [ ! -f "$out" ]; then
    git -C "$repo" show "$commit:$file" > "$out.part"
    mv "$out.part" "$out"
  fi
  echo "$sha  $out" | sha256sum --check --quiet
}

simulate_captures
[ -f "data_$set/manifest.json" ] || dzsr prepare "captures_$set" "data_$set" --scale "$ratio" --test-fraction 0.15

if [ -z "${INIT:-}" ]; then
  INIT=$PWD/init-${init[0]}.safetensors
  pinned_weights "${init[0]}" models/weights/dzsr-small-x2.safetensors "${init[1]}" "$INIT"
fi
resume=""
[ -f "$run/resume.pt" ] && resume="--resume"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} dzsr train "data_$set" --out "$run" --init "$INIT" --loss "$loss" \
  --sw-target "${sw_target:-tele}" \
  --lr "$lr" --batch-size 16 --patch-size 48 --steps "${STEPS:-$steps}" --val-every 200 --save-every 200 \
  --device cpu --seed "$seed" $resume
echo "best checkpoint: $work/$run/checkpoints/best.safetensors"

# The weights dzsr-small-x2 starts from (7ab56d5b…, the bundled model it replaced) came from two earlier
# stages on `dzsr simulate --camera none` captures (seeds 0, 100, 200) of the first 9 photos above:
#   dzsr train data --out run_small --preset small --loss l1 --lr 2e-4 --batch-size 16 --patch-size 48 \
#     --steps 3000 --val-every 200 --save-every 200 --device cpu --seed 0          # stopped at 2000, best 1800
#   dzsr train data --out run_ft --init run_small/checkpoints/best.safetensors --loss l1 --lr 1e-4 \
#     --batch-size 16 --patch-size 48 --steps 400 --val-every 100 --save-every 100 --device cpu --seed 1
