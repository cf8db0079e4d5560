#!/usr/bin/env bash
# Training on one machine: one process per GPU (or NPROC CPU processes), torchrun --standalone.
#   bash launch/single_node.sh data=imagenet data.root=/data/imagenet model=googlenet
#   NPROC=4 bash launch/single_node.sh experiment=demo
# Arguments are Hydra overrides. MODULE=clr_dist.range_test runs the LR range test instead.
set -euo pipefail
gpus=$(nvidia-smi -L 2>/dev/null | wc -l || true)
nproc="${NPROC:-${gpus:-0}}"
[ "$nproc" -gt 0 ] || nproc=1
exec "${VENV:-.venv}/bin/torchrun" --standalone --nproc_per_node="$nproc" -m "${MODULE:-clr_dist.train}" "$@"
