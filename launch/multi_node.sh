#!/usr/bin/env bash
# Training on several machines: run this on every node with the same settings; torchrun's c10d
# rendezvous on MASTER_ADDR gathers them (no node ranks to hand out).
#   NNODES=4 MASTER_ADDR=node001 RUN_ID=imagenet-clr bash launch/multi_node.sh data=imagenet \
#       data.root=/data/imagenet
# RUN_ID names the job (and its run directory, runs/torchrun-RUN_ID): use a new one per run, the
# same one to continue it.
#
# Restarts: a worker that crashes, or a node lost and started again (run this script on it
# again), makes torchrun restart every worker of every node from the last checkpoint, up to
# MAX_RESTARTS times (default 3). A node lost for good: the others' next collective fails, their
# agents restart them and wait RDZV_JOIN_TIMEOUT seconds (600) for the lost node to join again,
# then end the job with an error (with MAX_RESTARTS=0 they end it at once). A node that hangs
# without dying holds the others until the collective timeout (30 min). A stop on purpose is not
# restarted: SIGUSR1 or SIGTERM to this script, to torchrun or to any worker makes every rank save
# a checkpoint and stop; the script exits 75 and prints the command that continues.
#
# Environment: NPROC (processes per node, default one per visible GPU, 2 without GPUs),
# MASTER_PORT (29500), MAX_RESTARTS (3), RDZV_JOIN_TIMEOUT (600: how long the rendezvous waits
# for every node, at the start and after a restart), MODULE (clr_dist.train or clr_dist.range_test),
# STOP_WINDOW (seconds torchrun waits for the stop checkpoint, 120), NCCL_DEBUG (unset; INFO
# to debug NCCL), CLR_DIST_RUNS_DIR (runs), VENV (.venv).
set -euo pipefail
: "${NNODES:?set NNODES to the number of nodes}" "${MASTER_ADDR:?set MASTER_ADDR to the first node}" \
  "${RUN_ID:?set RUN_ID to a name for this run}"
source "$(dirname "$0")/common.sh"
nproc=$("${VENV:-.venv}/bin/clr-dist" nproc ${NPROC:+--requested "$NPROC"} "$@")
# The workers name their run directory after torchrun's rendezvous id, RUN_ID.
run_dir=$(TORCHELASTIC_RUN_ID="$RUN_ID" "${VENV:-.venv}/bin/clr-dist" run-dir "$@")
run_torchrun --nnodes="$NNODES" --nproc_per_node="$nproc" \
    --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:${MASTER_PORT:-29500}" --rdzv_id="$RUN_ID" \
    --rdzv-conf=join_timeout="${RDZV_JOIN_TIMEOUT:-600}" --max-restarts="${MAX_RESTARTS:-3}" \
    -m "${MODULE:-clr_dist.train}" "$@"
report_stop "$run_dir" "NNODES=$NNODES MASTER_ADDR=$MASTER_ADDR RUN_ID=$RUN_ID $(command_line "$@") (on every node)"
exit "$status"
