#!/usr/bin/env bash
# The training data of the bundled models (sourced by train_default.sh and train_x4.sh, in the work folder):
# the photographs, downloaded and checked (photos/), and `simulate_captures RATIO MAX_SIDE`, which makes the
# simulated captures of them (sim_s<seed>/, linked into captures/).
#
# Everything comes from Debian (`apt-get download`, no root needed): the photographs of
# lomiri-wallpapers-16.04 (the project's photos come from it), lomiri-wallpapers-20.04 and ukui-wallpapers,
# photographs only (the illustrations and renders are listed below and left out; ukui-wallpapers holds
# none), each file checked against its SHA-256. The five photos of benchmarks/quality.py and of the example
# capture are held out.
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


# simulate_captures RATIO MAX_SIDE: each photo through 5 simulated captures, 4 through the phone camera
# (seeds 0-300) and 1 through the plain pipeline (seed 400), linked into captures/ as <photo>-s<seed>_{uw,tele}.
simulate_captures() {
  local ratio=$1 max_side=$2 spec camera seed f b
  mkdir -p captures
  for spec in phone:0 phone:100 phone:200 phone:300 none:400; do
    camera=${spec%%:*} seed=${spec##*:}
    [ -f "sim_s$seed/simulation.json" ] || dzsr simulate photos "sim_s$seed" --ratio "$ratio" --seed "$seed" \
      --max-side "$max_side" --camera "$camera"
    for f in "sim_s$seed"/captures/*_uw.jpg; do
      b=$(basename "$f" _uw.jpg)
      ln -sf "$PWD/$f" "captures/${b}-s${seed}_uw.jpg"
      ln -sf "$PWD/sim_s$seed/captures/${b}_tele.jpg" "captures/${b}-s${seed}_tele.jpg"
    done
  done
}
