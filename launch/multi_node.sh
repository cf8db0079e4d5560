#!/usr/bin/env bash
# Training on several machines: run this on every node with the same settings; torchrun's c10d
# rendezvous on MASTER_ADDR gathers them (no node ranks to hand out).
#   NNODES=4 MASTER_ADDR=node001 RUN_ID=imagenet-clr bash launch/multi_node.sh data=imagenet \
#       data.root=/data/imagenet
# RUN_ID names the job (and its run directory, runs/torchrun-RUN_ID): use a new one per run, the
# same one to continue it. Environment: NPROC (processes per node, default one per visible GPU, 2 without GPUs), MASTER_PORT (29500),
# MAX_RESTARTS (torchrun --max-restarts, default 3: a restarted group resumes from its last
# checkpoint), MODULE (clr_dist.train or clr_dist.range_test).
set -euo pipefail
: "${NNODES:?set NNODES to the number of nodes}" "${MASTER_ADDR:?set MASTER_ADDR to the first node}" \
  "${RUN_ID:?set RUN_ID to a name for this run}"
nproc=$("${VENV:-.venv}/bin/clr-dist" nproc ${NPROC:+--requested "$NPROC"} "$@")
exec "${VENV:-.venv}/bin/torchrun" --nnodes="$NNODES" --nproc_per_node="$nproc" \
    --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:${MASTER_PORT:-29500}" --rdzv_id="$RUN_ID" \
    --max-restarts="${MAX_RESTARTS:-3}" -m "${MODULE:-clr_dist.train}" "$@"
