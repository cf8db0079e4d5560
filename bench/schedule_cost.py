"""Per-step cost of computing and applying the LR: clr_dist's schedule vs torch's CyclicLR.step().

    .venv/bin/python bench/schedule_cost.py [--steps 100000] [--repeats 5]
    .venv/bin/python bench/schedule_cost.py --smoke    # checks that it runs, numbers mean nothing

Both sides do what a training loop does once per optimizer update, on the same SGD optimizer
(one parameter group): clr_dist computes ``schedule.lr(step)`` (and ``momentum(step)``) from the
step alone and writes it into the group (``set_lr``); CyclicLR advances its internal counter and
writes the group's LR. Same policy, same bounds and stepsize, momentum not cycled on either side.
The two sides alternate (A B B A ...) so drift on a shared machine hits both equally; the median
over repeats is reported, in nanoseconds per step.

``--smoke`` runs the same measurement with small numbers (1,000 steps, 1 repeat), which
tests/test_bench.py runs so that a change in the schedules breaks a test rather than the next
measurement; any flag given with it still wins. Its report starts with a line saying it is a
smoke run.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clr_dist.optim import set_lr  # noqa: E402
from clr_dist.schedules import ScheduleConfig, build_schedule  # noqa: E402

CASES = {  # clr_dist policy -> CyclicLR mode
    "triangular": "triangular",
    "triangular2": "triangular2",
    "exp_range_amplitude": "exp_range",
}
# --smoke: the defaults it replaces (see the module docstring).
SMOKE = {"steps": 1000, "repeats": 1}


def _optimizer() -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.001, momentum=0.9)


def time_clr_dist(policy: str, steps: int) -> float:
    schedule = build_schedule(
        ScheduleConfig(
            policy=policy, base_lr=0.001, max_lr=0.006, stepsize=2000, gamma=0.99994 if "exp" in policy else 1.0
        ),
        None,
    ).schedule
    optimizer = _optimizer()
    start = time.perf_counter_ns()
    for step in range(steps):
        set_lr(optimizer, schedule.lr(step))
        schedule.momentum(step)  # None: not cycled, as on the CyclicLR side
    return (time.perf_counter_ns() - start) / steps


def time_cyclic_lr(mode: str, steps: int) -> float:
    optimizer = _optimizer()
    scheduler = torch.optim.lr_scheduler.CyclicLR(
        optimizer,
        base_lr=0.001,
        max_lr=0.006,
        step_size_up=2000,
        mode=mode,
        gamma=0.99994 if mode == "exp_range" else 1.0,
        cycle_momentum=False,
    )
    start = time.perf_counter_ns()
    for _ in range(steps):
        scheduler.step()
    return (time.perf_counter_ns() - start) / steps


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny numbers, to check that the script runs")
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    # CyclicLR warns when stepped before any optimizer.step(); irrelevant to its cost.
    warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
    if args.smoke:
        print("# smoke run (--smoke): a few steps; the numbers mean nothing")
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}, torch {torch.__version__}, {args.steps} steps x {args.repeats} repeats"
    )
    print(f"{'policy':<22}{'clr_dist ns/step':>18}{'CyclicLR ns/step':>18}{'ratio':>8}")
    for policy, mode in CASES.items():
        ours, theirs = [], []
        pair = [(ours, time_clr_dist, policy), (theirs, time_cyclic_lr, mode)]
        for r in range(args.repeats):
            for times, timer, name in pair if r % 2 == 0 else pair[::-1]:  # alternate which runs first
                times.append(timer(name, args.steps))
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"{policy:<22}{a:>18.0f}{b:>18.0f}{a / b:>8.2f}")


if __name__ == "__main__":
    main()
