#!/usr/bin/env bash
# Issue 11's measurement: what the cycle ends leave behind on real runs.
#  1. The demo (`experiment=demo`: AlexNet, 3 triangular cycles, 2 gloo processes) for each seed in
#     SEEDS, keeping every cycle end's weights and the running average of them
#     (runs/ce-demo-s<seed>); then `clr-dist ensemble --last 3` on each, and `clr-dist interpolate`
#     between the last two cycle ends of the first seed.
#  2. `clr-dist interpolate` between the last two cycle ends (and the end of stage 1 against the
#     cycle before it) of the Fashion-MNIST run of bench/fashion_study.py named in FM_RUN, when it
#     exists (made with EXTRA="trainer.snapshot_cycle_ends=true trainer.snapshot_weights_only=true").
# Resumable: a finished run, ensemble or interpolation is skipped. Exits 1 when a step failed (its
# log says why).
#   nohup bash bench/cycle_ends_study.sh > cycle_ends.log 2>&1 &
# More environment: CLR_DIST_RUNS_DIR (default runs), DATA (the demo runs' image folder, default
# data/demo, made with `clr-dist data make-demo` when missing), EXTRA (more overrides for the demo
# runs, split on spaces; ensemble and interpolate read each run's own), ALPHAS and TRAIN_IMAGES
# (interpolate's --alphas and --train-images, default -0.5:1.5:21 and 2000), VENV (default .venv).
# Smoke run (tests/test_bench.py runs it): a small demo set, a scratch folder, 2-step cycles and
# two alphas,
#   DATA=/tmp/demo-small CLR_DIST_RUNS_DIR=/tmp/ce-runs SEEDS=0 ALPHAS=0,1 TRAIN_IMAGES=16 \
#   EXTRA="data.batch_size=8 schedule.stepsize_epochs=null schedule.stepsize=2" bash bench/cycle_ends_study.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"
SEEDS="${SEEDS:-0 1 2}"
RUNS="${CLR_DIST_RUNS_DIR:-runs}"
FM_RUN="${FM_RUN:-$RUNS/fm-clr-n5000-b0.00189-m0.005669-s0}"
DATA="${DATA:-data/demo}"
ALPHAS="${ALPHAS:--0.5:1.5:21}"
TRAIN_IMAGES="${TRAIN_IMAGES:-2000}"
read -ra EXTRA_ARGS <<< "${EXTRA:-}"
status=0

snapshot() { ls "$1"/snapshots/*-cycle-"$(printf %03d "$2")".pt; }

interpolate() {  # run_dir cycle_a cycle_b
  local out="$1/interpolate-cycle-$2-cycle-$3"
  if [ -f "$out/interpolation.json" ]; then echo "skip $out (done)"; return; fi
  "$BIN/clr-dist" interpolate "$(snapshot "$1" "$2")" "$(snapshot "$1" "$3")" \
    --alphas="$ALPHAS" --train-images "$TRAIN_IMAGES" --out "$out" > "$out.log" 2>&1 \
    || { echo "failed $out (see $out.log)"; status=1; return; }
  echo "interpolated $out $(date -u +%H:%M)"
}

if [ -d "$FM_RUN/snapshots" ]; then
  interpolate "$FM_RUN" 10 9
  interpolate "$FM_RUN" 4 3
fi

[ -e "$DATA" ] || "$BIN/clr-dist" data make-demo "$DATA" >/dev/null
mkdir -p "$RUNS"
for seed in $SEEDS; do
  id="ce-demo-s$seed"
  if ! ls "$RUNS/$id"/snapshots/*-cycle-003.pt >/dev/null 2>&1; then
    rm -rf "${RUNS:?}/$id"
    CLR_DIST_RUN_ID="$id" "$BIN/torchrun" --standalone --nproc_per_node=2 -m clr_dist.train \
      experiment=demo data.root="$DATA" logger.mode=disabled logger.progress_bar=false \
      trainer.save_checkpoints=false trainer.seed="$seed" trainer.snapshot_cycle_ends=true \
      trainer.snapshot_weights_only=true trainer.average_cycle_ends=true "${EXTRA_ARGS[@]}" \
      > "$RUNS/$id.log" 2>&1 || { echo "failed $id (see $RUNS/$id.log)"; status=1; continue; }
    echo "trained $id $(date -u +%H:%M)"
  fi
  [ -f "$RUNS/$id/ensemble.json" ] || "$BIN/clr-dist" ensemble "$RUNS/$id" --last 3 > "$RUNS/$id-ensemble.log" 2>&1 \
    || { echo "failed ensemble $id (see $RUNS/$id-ensemble.log)"; status=1; }
done
interpolate "$RUNS/ce-demo-s${SEEDS%% *}" 3 2
echo "cycle_ends_study finished $(date -u +%H:%M)"
exit "$status"
