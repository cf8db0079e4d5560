#!/usr/bin/env bash
# Issue 12's GPU check: one command, under 8 minutes on one H100/H200, that writes a Markdown
# report and prints it. Its four parts:
#   1. the `gpu`-marked tests (python -m pytest -m gpu): passed/failed counts, failing tests named;
#   2. training images/s of AlexNet (batch 256), GoogLeNet (128) and ResNet-50 (256) at 224 px,
#      bf16 autocast and channels-last, on synthetic data, DALI with GPU decoding, DALI on the CPU
#      and the torchvision loader (bench/data_efficiency.py), each as a ratio against synthetic;
#      the JPEGs are bench/imagenet_like.py's, 500x375 at quality 90, ImageNet's ~110 KB;
#   3. eager against compiled (trainer.compile=default) for the same models (bench/compile_speed.py);
#   4. the DALI decoder's ceiling: decode + random-resized crop alone, no model, nvJPEG and CPU
#      (bench/decode_ceiling.py), as a ratio against each model's synthetic images/s.
# What cannot run (no CUDA, no DALI, no pytest, no compiler, the time budget spent) is a
# "not run: <reason>" cell, and what breaks a "failed: <reason>" one: the report always has every
# section, with each part's elapsed seconds (to tune the sizes in bench/gpu_check.py) and a folded
# log of every command it ran. Exit status 1 when something failed (a test, a crash, a time-out).
#
#   bash bench/gpu_check.sh [--smoke] [REPORT]
#
# REPORT defaults to $OUT/gpu_report.md when OUT is set (the device tool brings back what is
# under $OUT), else ./gpu_report.md. --smoke (or SMOKE=1) shrinks everything to seconds; without a
# CUDA device the check always runs at those sizes and reports the GPU parts as not run, which is
# what tests/test_bench.py runs. Python: $PY, else $VENV/bin/python (VENV default .venv) when it
# exists, else python3; the source tree goes first on PYTHONPATH, so no install is needed.
#
# On the first GPU machine (Python 3.12 with its own torch, torchvision and timm; no DALI, Hydra,
# wandb or pytest; no registry), from this machine's project root:
#   1. Wheels: `bash ../shared/tools/device-wheels.sh fetch` (the shared folder beside the checkout), then add pytest, which its list lacks:
#        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
#          --implementation cp -d .devwheels pytest pluggy iniconfig packaging pygments pytest-timeout
#      then `bash ../shared/tools/device-wheels.sh split`, and make the device calls that
#      `bash ../shared/tools/device-wheels.sh plan` prints, back to back (the last joins and installs them
#      all into /root/site and imports DALI, Hydra and wandb).
#   2. At once, on the same warm machine, one call with timeout_s 600 (the parts keep to a 450 s
#      budget, so the call ends in about 8 minutes at most):
#        export PYTHONPATH=/root/site; bash bench/gpu_check.sh
#      It writes $OUT/gpu_report.md, which comes back with the reply, and prints it. Had a fresh
#      machine been started meanwhile, /root/site is gone: the check still runs, and says
#      "not run: DALI does not import" (and Hydra, pytest) where the wheels are missing.
# Expected on an H100/H200 (to be replaced by the first report's "Elapsed per part"): tests ~45 s,
# data sides ~2 min (three models x four sides, 48 steps each), decoder ~15 s, compiles ~3.5 min
# (cold inductor caches; GoogLeNet's the longest). The sizes and limits are in bench/gpu_check.py
# (full_sizes); a part that would overrun the budget is cut and reported as not run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
smoke=
[ "${SMOKE:-0}" = 0 ] || smoke=1
report=
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) report=$arg ;;
  esac
done
report=${report:-${OUT:+$OUT/gpu_report.md}}
report=${report:-gpu_report.md}
if [ -z "${PY:-}" ]; then
  if [ -x "${VENV:-$repo/.venv}/bin/python" ]; then PY="${VENV:-$repo/.venv}/bin/python"; else PY=python3; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
status=0
"$PY" "$repo/bench/gpu_check.py" --report "$report" ${smoke:+--smoke} || status=$?
[ -f "$report" ] && cat "$report"
exit "$status"
