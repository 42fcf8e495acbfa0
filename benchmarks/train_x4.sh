#!/usr/bin/env bash
# Reproduce the bundled x4 model dzsr-small-x4 (see models/weights/dzsr-small-x4.md).
#
#   benchmarks/train_x4.sh WORK_DIR
#
# The x2 model's recipe and data (benchmarks/train_default.sh, benchmarks/training_data.sh) at x4: the same
# 11 photographs, each through the same 5 simulated cameras (4 phone, 1 plain) at ratio 4 (longer side at
# most 4000 px, so that the tele's footprint keeps enough pixels), prepared with `dzsr prepare --scale 4`.
# Training starts from the bundled dzsr-small-x2 (taken from git history by its SHA-256; `--init` across scales: the scale-free weights carried
# over, an extra upsampling stage), l1 loss, batch 16, LR patch 48, lr 1e-4, 1600 steps, two threads (CPU).
# Re-running continues an interrupted run (--resume) and skips what is already there.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$1
mkdir -p "$work"
cd "$work"

source "$repo/benchmarks/training_data.sh"
simulate_captures 4 4000
[ -f data/manifest.json ] || dzsr prepare captures data --scale 4 --test-fraction 0.15

# The starting weights: the bundled dzsr-small-x2 (sha256 822a211b…) from the repository's history, unless
# INIT names other weights.
if [ -z "${INIT:-}" ]; then
  INIT=$PWD/dzsr-small-x2.safetensors
  if [ ! -f "$INIT" ]; then
    git -C "$repo" show 3819f51:models/weights/dzsr-small-x2.safetensors > "$INIT.part"
    mv "$INIT.part" "$INIT"
  fi
  echo "822a211b1dd499637c7c0fc81fe473f2ed440ac3e21612de0e300afcaf8054c0  $INIT" | sha256sum --check --quiet
fi
resume=""
[ -f run_x4/resume.pt ] && resume="--resume"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} dzsr train data --out run_x4 --init "$INIT" --loss l1 \
  --lr 1e-4 --batch-size 16 --patch-size 48 --steps "${STEPS:-1600}" --val-every 200 --save-every 200 \
  --device cpu --seed 4 $resume
echo "best checkpoint: $work/run_x4/checkpoints/best.safetensors"
