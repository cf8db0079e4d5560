#!/usr/bin/env bash
# The demo: make the embedded dataset (once), then train AlexNet with a triangular cyclical LR on
# one torchrun process per visible GPU (nccl), or 2 on a machine without one (gloo), validate at
# each of 3 cycle ends, log W&B offline, and print the table of cycle-end peaks. Extra arguments
# are Hydra overrides:
#   bash launch/demo.sh schedule.max_lr=0.02 logger.mode=disabled
# NPROC=N starts N processes (at most one per GPU). The run directory is runs/RUN_ID (default
# demo-<date>-<time>); a run stopped by SIGUSR1 or SIGTERM continues with the same RUN_ID:
#   RUN_ID=demo-20261202-101500 make demo
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
BIN="${VENV:-.venv}/bin"
export CLR_DIST_RUN_ID="${CLR_DIST_RUN_ID:-${RUN_ID:-demo-$(date +%Y%m%d-%H%M%S)}}"
nproc=$("$BIN/clr-dist" nproc ${NPROC:+--requested "$NPROC"} "$@")
overrides=(experiment=demo data.root=data/demo "$@")
run_dir=$("$BIN/clr-dist" run-dir "${overrides[@]}")
"$BIN/clr-dist" data make-demo data/demo
run_torchrun --standalone --nproc_per_node="$nproc" -m clr_dist.train "${overrides[@]}"
if [ -n "${MAKELEVEL:-}" ] && [ $# -eq 0 ]; then how="make demo"; else how=$(command_line "$@"); fi
report_stop "$run_dir" "RUN_ID=$CLR_DIST_RUN_ID $how"
exit "$status"
