#!/usr/bin/env bash
# Issue 10's study of range-test bounds: train `experiment=demo` (AlexNet, 3 triangular cycles, 2
# gloo processes) at every cell of a grid of (base_lr, max_lr) and keep each run's cycle-end
# peaks. Resumable: a cell whose run directory already holds all 3 peaks is skipped, so the script
# can be stopped and started again (nohup bash bench/bounds_grid.sh > grid.log 2>&1 &).
#   BASES="0.0099 0.0198 0.0396" MAXES="0.0142 0.0284 0.0568" SEEDS="0" bash bench/bounds_grid.sh
# Cells with base_lr >= max_lr are skipped. Results: runs/grid-b<base>-m<max>-s<seed>/cycle_peaks.csv,
# and one line per finished run in runs/grid-results.tsv. Exits 1 when a run failed (its log says why).
# More environment: CLR_DIST_RUNS_DIR (default runs), DATA (the image folder, default data/demo,
# made with `clr-dist data make-demo` when missing), EXTRA (more overrides for every run, split on
# spaces; they do not change the run's name), VENV (default .venv).
# Smoke run (tests/test_bench.py runs it): a small demo set, a scratch folder and 2-step cycles,
#   DATA=/tmp/demo-small CLR_DIST_RUNS_DIR=/tmp/grid-runs BASES=0.005 MAXES=0.02 SEEDS=0 \
#   EXTRA="data.batch_size=8 schedule.stepsize_epochs=null schedule.stepsize=2" bash bench/bounds_grid.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"
BASES="${BASES:-0.0099 0.0198 0.0396}"   # around the range test's 0.0198-0.0284 (docs/BENCHMARKS.md)
MAXES="${MAXES:-0.0142 0.0284 0.0568}"
SEEDS="${SEEDS:-0}"
RUNS="${CLR_DIST_RUNS_DIR:-runs}"
DATA="${DATA:-data/demo}"
read -ra EXTRA_ARGS <<< "${EXTRA:-}"
[ -e "$DATA" ] || "$BIN/clr-dist" data make-demo "$DATA" >/dev/null
mkdir -p "$RUNS"
status=0
for seed in $SEEDS; do
  for base in $BASES; do
    for max in $MAXES; do
      if ! awk -v b="$base" -v m="$max" 'BEGIN { exit !(b < m) }'; then continue; fi
      id="grid-b$base-m$max-s$seed"
      peaks="$RUNS/$id/cycle_peaks.csv"
      if [ -f "$peaks" ] && [ "$(wc -l < "$peaks")" -ge 4 ]; then echo "skip $id (done)"; continue; fi
      rm -rf "${RUNS:?}/$id"
      start=$(date +%s)
      CLR_DIST_RUN_ID="$id" "$BIN/torchrun" --standalone --nproc_per_node=2 -m clr_dist.train \
        experiment=demo data.root="$DATA" logger.mode=disabled logger.progress_bar=false \
        trainer.save_checkpoints=false trainer.seed="$seed" schedule.base_lr="$base" schedule.max_lr="$max" \
        "${EXTRA_ARGS[@]}" > "$RUNS/$id.log" 2>&1 || { echo "failed $id (see $RUNS/$id.log)"; status=1; continue; }
      top1=$(awk -F, 'NR > 1 { printf "%s%s", sep, $4; sep = " " }' "$peaks")
      printf '%s\t%s\t%s\t%s\t%ss\n' "$base" "$max" "$seed" "$top1" "$(( $(date +%s) - start ))" | tee -a "$RUNS/grid-results.tsv"
    done
  done
done
exit "$status"
