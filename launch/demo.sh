#!/usr/bin/env bash
# The demo: make the embedded dataset (once), then train AlexNet with a triangular cyclical LR on
# one torchrun process per visible GPU (nccl), or 2 on a machine without one (gloo), validate at each of 3 cycle ends, log W&B
# offline, and print the table of cycle-end peaks. Extra arguments are Hydra overrides:
#   bash launch/demo.sh schedule.max_lr=0.02 logger.mode=disabled
# NPROC=N starts N processes (at most one per GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"
nproc=$("$BIN/clr-dist" nproc ${NPROC:+--requested "$NPROC"} "$@")
"$BIN/clr-dist" data make-demo data/demo
exec "$BIN/torchrun" --standalone --nproc_per_node="$nproc" -m clr_dist.train experiment=demo data.root=data/demo "$@"
