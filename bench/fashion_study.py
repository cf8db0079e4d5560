"""Issue 10 on Fashion-MNIST with the paper's CIFAR-10 network (`model=cifar10_full`, 28 px).

The paper's CIFAR-10 recipes scaled to N iterations (Table 1, 70,000 for the fixed LR):

    fixed       0.001 to 60/70 N, then 1e-4 to 65/70 N, then 1e-5 to N  (cifar10_fixed's drops)
    clr         Table 2's triangular2 in three stages, every length times N / 70,000 (stepsizes
                2,000 / 1,000 / 500, for 4 / 3 / 3 cycles: 25,000 / 70,000 = 0.357 N), stage 1
                between the given bounds, stages 2 and 3 at 1/10 and 1/100 of them (Table 2)

Subcommands, each resumable (a run whose metrics already end with an evaluation at its last
step is skipped; a half-done one is started again):

    python bench/fashion_study.py range-test --epochs 2 4 8
    python bench/fashion_study.py fixed --seeds 0 1 2
    python bench/fashion_study.py clr --bounds 0.002 0.006 --seeds 0 1 2
    python bench/fashion_study.py grid --bases 0.001 0.002 --maxes 0.003 0.006 --seeds 0

Environment: N (default 5000), RUNS (default runs), PY (default .venv/bin/python), DATA (default
data/fashion_mnist, made with `clr-dist data fashion-mnist` from the Debian package if missing),
EXTRA (more overrides for every run, e.g. "trainer.snapshot_weights_only=true"; they do not
change the run's name).
One process per run (the 2-core machine of docs/BENCHMARKS.md); runs are named fm-*. Exits 1
when a run failed (RUNS/<run>.log says why).

Smoke run (tests/test_bench.py runs each subcommand so): a converted set of 10 images a class, a
tiny N (14: stages of 1-step cycles), a scratch RUNS and batches of 20, each run seconds long:

    .venv/bin/clr-dist data fashion-mnist /tmp/fm-small --limit-per-class 10
    N=14 RUNS=/tmp/fm-runs DATA=/tmp/fm-small EXTRA=data.batch_size=20 python bench/fashion_study.py fixed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N = int(os.environ.get("N", "5000"))
RUNS = Path(os.environ.get("RUNS", ROOT / "runs"))
PY = os.environ.get("PY", str(ROOT / ".venv/bin/python"))
DATA = os.environ.get("DATA", "data/fashion_mnist")
PAPER_N = 70_000
# The presets bring the CIFAR-10 net, batch 100, SGD 0.9, decay 0.004 and Caffe's input scale.
FIXED, CLR = "experiment=paper/cifar10_fixed", "experiment=paper/cifar10_triangular2"
COMMON = [
    "data=fashion_mnist_28",
    f"data.root={DATA}",
    "logger.mode=disabled",
    "logger.progress_bar=false",
    "trainer.save_checkpoints=false",
]


def scaled(iterations: int) -> int:
    return max(1, round(iterations * N / PAPER_N))


def fixed_overrides() -> list[str]:
    return [
        FIXED,
        f"trainer.max_steps={N}",
        f"schedule.milestones=[{scaled(60_000)},{scaled(65_000)}]",
        f"trainer.eval_every={max(1, N // 20)}",
    ]


def clr_overrides(base: float, top: float) -> tuple[list[str], int]:
    stages, start = [], 0
    for divisor, stepsize, cycles in ((1, 2000, 4), (10, 1000, 3), (100, 500, 3)):
        step = scaled(stepsize)
        end = start + 2 * cycles * step
        stages.append(
            f"{{policy:triangular2,base_lr:{base / divisor:.6g},max_lr:{top / divisor:.6g},"
            f"stepsize:{step},start:{start},max_iter:{end}}}"
        )
        start = end
    return [
        CLR,
        f"schedule.stages=[{','.join(stages)}]",
        f"trainer.max_steps={start}",
        f"trainer.eval_every={max(1, N // 50)}",
    ], start


def finished(run_id: str, last_step: int) -> bool:
    metrics = RUNS / run_id / "metrics.jsonl"
    if not metrics.exists():
        return False
    evals = [json.loads(line) for line in metrics.read_text().splitlines() if '"event": "eval"' in line]
    return bool(evals) and evals[-1]["step"] == last_step


def run(run_id: str, module: str, overrides: list[str], last_step: int | None, done_file: str | None = None) -> bool:
    """Run ``module`` with ``overrides`` as RUNS/run_id unless it is done; False when it failed."""
    done = (RUNS / run_id / done_file).exists() if done_file else finished(run_id, last_step)
    if done:
        print(f"skip {run_id} (done)", flush=True)
        return True
    RUNS.mkdir(parents=True, exist_ok=True)
    log = RUNS / f"{run_id}.log"
    started = time.time()
    with log.open("w") as out:
        code = subprocess.call(
            [PY, "-m", module, *COMMON, *overrides, *os.environ.get("EXTRA", "").split()],
            cwd=ROOT,
            env={**os.environ, "CLR_DIST_RUN_ID": run_id, "CLR_DIST_RUNS_DIR": str(RUNS)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    status = "done" if code == 0 else f"failed ({code}, see {log})"
    print(f"{run_id}: {status} in {time.time() - started:.0f} s", flush=True)
    return code == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rt = sub.add_parser("range-test")
    rt.add_argument("--epochs", type=float, nargs="+", default=[8.0])
    rt.add_argument("--start-lr", type=float, default=1e-4)
    rt.add_argument("--end-lr", type=float, default=0.02)
    for name in ("fixed", "clr", "grid"):
        p = sub.add_parser(name)
        p.add_argument("--seeds", type=int, nargs="+", default=[0])
        if name == "clr":
            p.add_argument("--bounds", type=float, nargs=2, required=True, metavar=("BASE_LR", "MAX_LR"))
        if name == "grid":
            p.add_argument("--bases", type=float, nargs="+", required=True)
            p.add_argument("--maxes", type=float, nargs="+", required=True)
    args = parser.parse_args()

    if not (ROOT / DATA / "clr_dist_fashion_mnist.json").exists():
        subprocess.check_call([str(Path(PY).parent / "clr-dist"), "data", "fashion-mnist", DATA], cwd=ROOT)
    succeeded = []
    if args.command == "range-test":
        for epochs in args.epochs:
            run_id = f"fm-rt-e{epochs:g}-{args.start_lr:g}-{args.end_lr:g}"
            overrides = [
                FIXED,
                f"range_test.epochs={epochs}",
                f"range_test.start_lr={args.start_lr}",
                f"range_test.end_lr={args.end_lr}",
            ]
            succeeded.append(run(run_id, "clr_dist.range_test", overrides, None, done_file="range_test.json"))
        return 0 if all(succeeded) else 1
    cells = []
    if args.command == "fixed":
        cells = [("fm-fixed", None, None)]
    elif args.command == "clr":
        cells = [("fm-clr", *args.bounds)]
    else:
        cells = [("fm-clr", b, m) for b in args.bases for m in args.maxes if b < m]
    for seed in args.seeds:
        for name, base, top in cells:
            if base is None:
                overrides, last = fixed_overrides(), N
                run_id = f"{name}-n{N}-s{seed}"
            else:
                overrides, last = clr_overrides(base, top)
                run_id = f"{name}-n{N}-b{base:g}-m{top:g}-s{seed}"
            succeeded.append(run(run_id, "clr_dist.train", [*overrides, f"trainer.seed={seed}"], last))
    return 0 if all(succeeded) else 1


if __name__ == "__main__":
    sys.exit(main())
