#!/usr/bin/env bash
# Training on one machine, torchrun --standalone: one process per visible GPU, or 2 CPU processes
# on a machine without one; NPROC=N starts N (at most one per GPU; `clr-dist nproc` decides).
#   bash launch/single_node.sh data=imagenet data.root=/data/imagenet model=googlenet
#   NPROC=4 bash launch/single_node.sh experiment=demo
# Arguments are Hydra overrides. MODULE=clr_dist.range_test runs the LR range test instead.
set -euo pipefail
nproc=$("${VENV:-.venv}/bin/clr-dist" nproc ${NPROC:+--requested "$NPROC"} "$@")
exec "${VENV:-.venv}/bin/torchrun" --standalone --nproc_per_node="$nproc" -m "${MODULE:-clr_dist.train}" "$@"
