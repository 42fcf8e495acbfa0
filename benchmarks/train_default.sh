#!/usr/bin/env bash
# Reproduce the bundled default model dzsr-small-x2 (see models/weights/dzsr-small-x2.md).
#
#   benchmarks/train_default.sh PHOTOS_DIR WORK_DIR
#
# PHOTOS_DIR: the project's photographs (shared/data/photos). The five photos held out for evaluation
# (benchmarks/quality.py) and the Bridge photo's seeds that do not register are excluded below or by
# prepare. Data: 9 photos x 3 simulation seeds, x2, at most 2800 px; training: dzsr-small, l1 loss,
# batch 16, LR patch 48, lr 2e-4, 3000 steps, one thread per process (CPU); then the fine-tuning for the
# local matcher (400 steps at lr 1e-4 from the first run's best weights, reference dropout 0.25 by default;
# the shipped weights are its best validation checkpoint). Re-running continues an interrupted run (--resume).
# The first run of the shipped model was made with dzsr's earlier all-pairs matcher, so a re-run of the
# first stage gives close, not identical, weights.
set -euo pipefail
photos=$(realpath "$1"); work=$2
mkdir -p "$work/photos" "$work/captures"
cd "$work"
for name in Bridge_by_Sander_Klootwijk Dragonfly_by_Bolly Picture_0B_by_freespace aitzgorri_by_Aitzol_Berasategi \
            free_by_Peter_Nerlich friends_by_Aitzol_Berasategi life_by_Aitzol_Berasategi \
            picosdeeuropa_by_Aitzol_Berasategi sunset_by_Aitzol_Berasategi; do
  ln -sf "$photos/$name.jpg" "photos/$name.jpg"
done
for seed in 0 100 200; do
  [ -d "sim_s$seed" ] || dzsr simulate photos "sim_s$seed" --ratio 2 --seed "$seed" --max-side 2800
  for f in "sim_s$seed"/captures/*_uw.jpg; do
    b=$(basename "$f" _uw.jpg)
    ln -sf "$PWD/$f" "captures/${b}-s${seed}_uw.jpg"
    ln -sf "$PWD/sim_s$seed/captures/${b}_tele.jpg" "captures/${b}-s${seed}_tele.jpg"
  done
done
dzsr prepare captures data --scale 2 --test-fraction 0.15
resume=""
[ -f run_small/resume.pt ] && resume="--resume"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} dzsr train data --out run_small --preset small --loss l1 --lr 2e-4 \
  --batch-size 16 --patch-size 48 --steps 3000 --val-every 200 --save-every 200 --device cpu --seed 0 $resume
resume=""
[ -f run_ft/resume.pt ] && resume="--resume"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} dzsr train data --out run_ft --init run_small/checkpoints/best.safetensors \
  --loss l1 --lr 1e-4 --batch-size 16 --patch-size 48 --steps 400 --val-every 100 --save-every 100 --device cpu \
  --seed 1 $resume
echo "best checkpoint: $work/run_ft/checkpoints/best.safetensors"
