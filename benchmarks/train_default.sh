#!/usr/bin/env bash
# Reproduce the bundled default model dzsr-small-x2 (see models/weights/dzsr-small-x2.md).
#
#   benchmarks/train_default.sh WORK_DIR
#
# Everything it trains on is downloaded by the script itself from Debian (`apt-get download`, no root
# needed): the photographs of lomiri-wallpapers-16.04 (the project's photos come from it),
# lomiri-wallpapers-20.04 and ukui-wallpapers, photographs only (the illustrations and renders are listed
# below and left out; ukui-wallpapers holds none), each file checked against its SHA-256. The five photos
# of benchmarks/quality.py and of the example capture are held out.
#
# Data: 11 photos x 5 seeds, each a simulated x2 capture (longer side at most 2800 px): 4 through the phone
# pipeline (`dzsr simulate --camera phone`), 1 through the plain one (`--camera none`), prepared with
# `dzsr prepare --scale 2`. Training: from the shipped weights of the
# previous recipe (`--init`, stages 1-2 below, trained on `dzsr simulate --camera none` captures of 9 of
# these photos), l1 loss, batch 16, LR patch 48, lr 1e-4, reference dropout 0.25, 1600 steps, two threads
# (CPU). Re-running continues an interrupted run (--resume) and skips what is already there.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$1
mkdir -p "$work"
cd "$work"

# the training photographs (downloaded from Debian and checked by their SHA-256), simulated at x2
source "$repo/benchmarks/training_data.sh"
simulate_captures 2 2800
[ -f data/manifest.json ] || dzsr prepare captures data --scale 2 --test-fraction 0.15

# The starting weights: the bundled model this one replaced (sha256 7ab56d5b…), from the repository's history,
# unless INIT names other weights.
if [ -z "${INIT:-}" ]; then
  INIT=$PWD/previous-dzsr-small-x2.safetensors
  if [ ! -f "$INIT" ]; then
    git -C "$repo" show 8e39447:models/weights/dzsr-small-x2.safetensors > "$INIT.part"
    mv "$INIT.part" "$INIT"
  fi
  echo "7ab56d5b450de09ff63322a7e012ef1623529c527db0a06527cbdfe1b8db10e3  $INIT" | sha256sum --check --quiet
fi
resume=""
[ -f run_phone/resume.pt ] && resume="--resume"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} dzsr train data --out run_phone --init "$INIT" --loss l1 \
  --lr 1e-4 --batch-size 16 --patch-size 48 --steps 1600 --val-every 200 --save-every 200 --device cpu --seed 2 $resume
echo "best checkpoint: $work/run_phone/checkpoints/best.safetensors"

# The weights it starts from (INIT, default: the bundled model it replaced) came from two earlier stages on
# `dzsr simulate --camera none` captures (seeds 0, 100, 200) of the first 9 photos above:
#   dzsr train data --out run_small --preset small --loss l1 --lr 2e-4 --batch-size 16 --patch-size 48 \
#     --steps 3000 --val-every 200 --save-every 200 --device cpu --seed 0          # stopped at 2000, best 1800
#   dzsr train data --out run_ft --init run_small/checkpoints/best.safetensors --loss l1 --lr 1e-4 \
#     --batch-size 16 --patch-size 48 --steps 400 --val-every 100 --save-every 100 --device cpu --seed 1
