"""Compiled against eager: training images/s of the real Trainer with ``trainer.compile`` on and off.

    .venv/bin/python bench/compile_speed.py                                   # CPU: 64 px, batch 32
    .venv/bin/python bench/compile_speed.py --image-size 224 --batch-size 256 --precision bf16  # a GPU
    .venv/bin/python bench/compile_speed.py --smoke

Both sides are the Trainer on synthetic data (one random batch made once on the device: the
model's own speed, no decoding) in one process; only ``trainer.compile`` differs. Each run takes
``--warmup-steps`` untimed steps (the first one compiles; its time is reported apart, as
"compile s"), then times ``--steps`` steps and waits for the device once at the end. The two
sides alternate (A B B A ...) over ``--repeats`` repeats; the table shows medians and the ratio
compiled / eager (above 1: compiling pays).

On the CPU, inductor builds C++ kernels: the first compilation of a model takes minutes, later
ones read its cache (in /tmp), so "compile s" of the first repeat is the cold figure.

``--smoke`` runs the same measurement with small numbers (cifar10_full at 32 px, 10 classes,
batch 16, 1 warm-up and 2 timed steps, 1 repeat), for tests/test_bench.py; any flag given with it still wins.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.data_efficiency import timed_training  # noqa: E402

# The shapes of tests/test_compile.py, so that the test suite compiles cifar10_full once.
SMOKE = {
    "models": "cifar10_full",
    "batch_size": 16,
    "image_size": 32,
    "classes": 10,
    "steps": 2,
    "warmup_steps": 1,
    "repeats": 1,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="alexnet,googlenet,resnet50")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps; the first compiles (at least 1)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--classes", type=int, default=1000, help="classes of the synthetic data (ImageNet's)")
    parser.add_argument("--mode", default="default", help="trainer.compile of the compiled side")
    parser.add_argument("--precision", default="auto", help="trainer.precision")
    parser.add_argument("--smoke", action="store_true", help="tiny numbers, to check that the script runs")
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
    if args.warmup_steps < 1:
        parser.error("--warmup-steps must be at least 1: the first step is the one that compiles")
    return args


def main() -> None:
    args = parse_args()
    sides = {"eager": "trainer.compile=off", "compiled": f"trainer.compile={args.mode}"}
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            results[model] = {side: [] for side in sides}
            for repeat in range(args.repeats):
                for side in sides if repeat % 2 == 0 else reversed(sides):
                    overrides = [
                        f"model={model}" if (REPO / "conf/model" / f"{model}.yaml").exists() else f"model.name={model}",
                        "data=synthetic",
                        f"data.synthetic_classes={args.classes}",
                        f"data.batch_size={args.batch_size}",
                        f"data.image_size={args.image_size}",
                        f"data.val_resize={args.image_size}",
                        f"trainer.precision={args.precision}",
                        "schedule=fixed",
                        "schedule.base_lr=0.001",
                        "logger.mode=disabled",
                        "logger.progress_bar=false",
                        "trainer.save_checkpoints=false",
                        sides[side],
                    ]
                    first, rate = timed_training(
                        overrides, args.warmup_steps, args.steps, Path(tmp) / f"{model}-{side}-{repeat}"
                    )
                    results[model][side].append((first, rate))
                    print(
                        f"  {model} repeat {repeat + 1} {side:>8}: first step {first:7.1f} s, {rate:8.1f} images/s",
                        flush=True,
                    )

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.machine()
    if args.smoke:
        print("# smoke run (--smoke): tiny data and a few steps; the numbers mean nothing")
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, batch {args.batch_size}, {args.image_size}px, "
        f"precision {args.precision}, trainer.compile={args.mode}"
    )
    print(f"{'model':>12} {'eager img/s':>12} {'compiled img/s':>15} {'ratio':>6} {'compile s':>10}")
    for model, runs in results.items():
        eager = statistics.median(rate for _, rate in runs["eager"])
        compiled = statistics.median(rate for _, rate in runs["compiled"])
        compile_s = runs["compiled"][0][0]  # the first compiled run's first step: the cold compile
        print(f"{model:>12} {eager:12.1f} {compiled:15.1f} {compiled / eager:6.2f} {compile_s:10.1f}")


if __name__ == "__main__":
    main()
