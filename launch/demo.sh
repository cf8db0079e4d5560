#!/usr/bin/env bash
# The demo: make the embedded dataset (once), then train AlexNet with a triangular cyclical LR on
# 2 torchrun processes (gloo on CPU, nccl on GPUs), validate at each of 3 cycle ends, log W&B
# offline, and print the table of cycle-end peaks. Extra arguments are Hydra overrides:
#   bash launch/demo.sh schedule.max_lr=0.02 logger.mode=disabled
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"
NPROC="${NPROC:-2}"
"$BIN/clr-dist" data make-demo data/demo
exec "$BIN/torchrun" --standalone --nproc_per_node="$NPROC" -m clr_dist.train experiment=demo data.root=data/demo "$@"
