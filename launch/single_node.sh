#!/usr/bin/env bash
# Training on one machine, torchrun --standalone: one process per visible GPU, or 2 CPU processes
# on a machine without one; NPROC=N starts N (at most one per GPU; `clr-dist nproc` decides).
#   bash launch/single_node.sh data=imagenet data.root=/data/imagenet model=googlenet
#   NPROC=4 bash launch/single_node.sh experiment=demo
# Arguments are Hydra overrides. The run directory is runs/RUN_ID: RUN_ID (or CLR_DIST_RUN_ID) names
# the run, default run-<date>-<time>; the same RUN_ID and arguments continue a stopped run from its
# last checkpoint (the script prints that command when the run stops). SIGUSR1 or SIGTERM to this
# script, to torchrun or to any worker stops the run with a checkpoint (exit status 75).
# Environment: NPROC, RUN_ID, MODULE (clr_dist.train, or clr_dist.range_test for the LR range test),
# STOP_WINDOW (seconds torchrun waits for the stop checkpoint, 120), CLR_DIST_RUNS_DIR (runs), VENV (.venv).
set -euo pipefail
source "$(dirname "$0")/common.sh"
export CLR_DIST_RUN_ID="${CLR_DIST_RUN_ID:-${RUN_ID:-run-$(date +%Y%m%d-%H%M%S)}}"
nproc=$("${VENV:-.venv}/bin/clr-dist" nproc ${NPROC:+--requested "$NPROC"} "$@")
run_dir=$("${VENV:-.venv}/bin/clr-dist" run-dir "$@")
run_torchrun --standalone --nproc_per_node="$nproc" -m "${MODULE:-clr_dist.train}" "$@"
report_stop "$run_dir" "RUN_ID=$CLR_DIST_RUN_ID $(command_line "$@")"
exit "$status"
