"""Data-pipeline efficiency: training images/s through real data loaders against synthetic data, per model.

    .venv/bin/python bench/data_efficiency.py                      # on a GPU machine: DALI against synthetic
    .venv/bin/python bench/data_efficiency.py --root /data/imagenet --models alexnet,googlenet,resnet50
    .venv/bin/python bench/data_efficiency.py --data imagenet-like --sides synthetic,dali,dali_cpu,torchvision
    .venv/bin/python bench/data_efficiency.py --image-size 64 --batch-size 32 --models alexnet --steps 10
    .venv/bin/python bench/data_efficiency.py --smoke    # seconds: checks that it runs, numbers mean nothing

Every side is the real Trainer (model, mixed precision, channels-last on CUDA, SGD step) over
one process; only the data differs (``--sides``, default ``dali,synthetic``):

- ``synthetic``: ``data=synthetic``, one random batch made once on the device, the model-only
  ceiling; always measured, since every other side is reported as a ratio against it;
- ``dali``: ``data.loader=dali`` (decoding on the GPU, ``mixed``, when training on CUDA; CPU
  operators without CUDA);
- ``dali_cpu``: ``data.loader=dali data.dali_device=cpu``, DALI's CPU operators even on a GPU;
- ``torchvision``: ``data.loader=torchvision``, PIL decoding in DataLoader worker processes.

The ratio side / synthetic is the share of the model's speed the data pipeline keeps: 1.0 means
decoding and augmentation are fully hidden behind the model's work. ``--workers`` is both the
DALI threads and the DataLoader workers.

Each run trains ``--warmup-steps`` untimed steps (at least one; start-up, cuDNN autotuning, the first decodes),
then times ``--steps`` steps, synchronising with the device only at the end. The sides
alternate (A B C C B A ...) over ``--repeats`` repeats. DataLoader workers each build a whole
batch, so they deliver in bursts of ``--workers`` batches: with warm-up and timed steps both
multiples of ``--workers``, the timing starts and ends at the same point of a burst and a
loader-bound rate is not inflated by the batches that piled up during the warm-up.

The folder is ``--root``, or a generated one (``--data``): ``demo`` (the default) is the demo
set (10 classes of coloured shapes, ``--demo-per-class`` images each) at 1.15 times
``--image-size``, small JPEGs that decode much faster than ImageNet's; ``imagenet-like`` is
bench/imagenet_like.py's (``--unique`` 500x375 noise JPEGs of ImageNet's file size at quality 90,
linked under enough names over ``--classes`` classes that no epoch ends inside a run).

``--keep-going``: a side that fails (DALI missing, out of memory) is reported as failed, with
its error, and the others still run. ``--json PATH`` writes every measurement and the medians.

``--smoke`` runs the same measurement with small numbers (AlexNet, batch 8 at 64 px, 1 warm-up and
2 timed steps, 1 repeat, 2 DALI threads, a demo set of 8 images a class, an imagenet-like set of
16 JPEGs over 10 classes), which tests/test_bench.py runs so that a change in the Trainer breaks a
test rather than the next measurement; any flag given with it still wins. Its report starts with
a line saying it is a smoke run.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.imagenet_like import describe, make_imagenet_like  # noqa: E402
from clr_dist import config  # noqa: E402
from clr_dist.data.datasets import check_image_folder, make_demo_dataset  # noqa: E402
from clr_dist.trainer import Trainer  # noqa: E402

# --smoke: the defaults it replaces (see the module docstring).
SMOKE = {
    "models": "alexnet",
    "batch_size": 8,
    "image_size": 64,
    "steps": 2,
    "warmup_steps": 1,
    "repeats": 1,
    "workers": 2,
    "demo_per_class": 8,
    "unique": 16,
    "classes": 10,
}


def side_overrides(side: str, root: Path, classes: int, workers: int) -> list[str]:
    """The data overrides of one side (see the module docstring)."""
    folder = ["data=imagenet", f"data.root={root}", f"data.workers={workers}"]
    return {
        "synthetic": ["data=synthetic", f"data.synthetic_classes={classes}"],
        "dali": [*folder, "data.loader=dali"],
        "dali_cpu": [*folder, "data.loader=dali", "data.dali_device=cpu"],
        "torchvision": [*folder, "data.loader=torchvision"],
    }[side]


def timed_training(overrides: list[str], warmup_steps: int, steps: int, run_dir: Path) -> tuple[float, float]:
    """One Trainer for ``clr-dist train`` with ``overrides``: (seconds of its first step, which
    includes any compilation; images/s over ``steps`` timed steps after ``warmup_steps`` untimed
    ones, the first included). Waits for the device only around the timed steps."""
    trainer = Trainer(config.compose(overrides), run_dir)
    try:
        batches = trainer.train_batches()
        start = time.perf_counter()
        trainer.train_step(batches).item()
        first = time.perf_counter() - start
        for _ in range(warmup_steps - 1):
            trainer.train_step(batches)
        if trainer.info.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            loss = trainer.train_step(batches)
        loss.item()  # waits for the queued device work
        elapsed = time.perf_counter() - start
        images = steps * trainer.cfg.data.batch_size * trainer.cfg.trainer.grad_accum_steps
    finally:
        trainer.close()
    # DataLoader workers and DALI pipelines (with their pinned and device buffers) live as long as
    # the loader: free them before the next side starts its own.
    del batches, trainer
    gc.collect()
    return first, images / elapsed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="an image folder (train/<class>/*.JPEG); default: a generated one (--data)")
    parser.add_argument("--data", choices=["demo", "imagenet-like"], default="demo", help="the generated folder")
    parser.add_argument(
        "--sides", default="dali,synthetic", help="comma-separated: synthetic, dali, dali_cpu, torchvision"
    )
    parser.add_argument("--models", default="alexnet,googlenet,resnet50")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8, help="DALI threads and DataLoader workers")
    parser.add_argument("--precision", default="auto", help="trainer.precision")
    parser.add_argument("--demo-per-class", type=int, default=200, help="training images a class of the demo set")
    parser.add_argument("--unique", type=int, default=256, help="JPEGs encoded for --data imagenet-like")
    parser.add_argument("--classes", type=int, default=1000, help="classes of --data imagenet-like")
    parser.add_argument("--keep-going", action="store_true", help="report a side that fails; go on")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny numbers, to check that the script runs")
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
    sides = args.sides.split(",")
    unknown = set(sides) - {"synthetic", "dali", "dali_cpu", "torchvision"}
    if unknown:
        parser.error(
            f"--sides: unknown {', '.join(sorted(unknown))}; choose from synthetic, dali, dali_cpu, torchvision"
        )
    args.sides = sides if "synthetic" in sides else [*sides, "synthetic"]  # the reference of every ratio
    return args


def make_folder(args: argparse.Namespace, tmp: Path) -> tuple[Path, str]:
    """The image folder the sides read, and a phrase saying what it holds."""
    if args.root:
        return Path(args.root), args.root
    root = tmp / args.data
    if args.data == "demo":
        size = int(args.image_size * 1.15)
        make_demo_dataset(root, train_per_class=args.demo_per_class, val_per_class=1, image_size=size)
        return root, f"demo set {size}px"
    # Enough names for every step of a run and a batch more: no epoch ends inside the timing.
    images = (args.warmup_steps + args.steps + 1) * args.batch_size
    return root, describe(make_imagenet_like(root, args.unique, images, args.classes))


def measure(args: argparse.Namespace, root: Path, tmp: Path) -> tuple[dict, dict]:
    """images/s of every run, by model and side, and the error of each side that failed (with
    ``--keep-going``; without it the error ends the script)."""
    classes = len(check_image_folder(root).classes)
    common = [
        f"data.batch_size={args.batch_size}",
        f"data.image_size={args.image_size}",
        f"data.val_resize={args.image_size}",
        f"trainer.precision={args.precision}",
        "schedule=fixed",
        "schedule.base_lr=0.001",
        "logger.mode=disabled",
        "logger.progress_bar=false",
        "trainer.save_checkpoints=false",
    ]
    width = max(len(side) for side in args.sides)
    results: dict[str, dict[str, list[float]]] = {}
    errors: dict[str, dict[str, str]] = {}
    for model in args.models.split(","):
        results[model], errors[model] = {side: [] for side in args.sides}, {}
        for repeat in range(args.repeats):
            for side in args.sides if repeat % 2 == 0 else reversed(args.sides):
                if side in errors[model]:
                    continue
                overrides = [
                    f"model={model}" if (REPO / "conf/model" / f"{model}.yaml").exists() else f"model.name={model}",
                    *common,
                    *side_overrides(side, root, classes, args.workers),
                ]
                try:
                    _, value = timed_training(
                        overrides, args.warmup_steps, args.steps, tmp / "runs" / f"{model}-{side}-{repeat}"
                    )
                except Exception as exc:
                    if not args.keep_going:
                        raise
                    errors[model][side] = f"{type(exc).__name__}: {one_line(exc)}"
                    print(f"  {model} repeat {repeat + 1} {side:>{width}}: failed: {errors[model][side]}", flush=True)
                    continue
                results[model][side].append(value)
                print(f"  {model} repeat {repeat + 1} {side:>{width}}: {value:9.1f} images/s", flush=True)
    return results, errors


def one_line(exc: BaseException) -> str:
    """An exception's message in one line: its first line and, from a longer one (DALI's run to
    dozens of lines), the last line that speaks of a failure or an error."""
    lines = list(dict.fromkeys(line.strip() for line in str(exc).splitlines() if line.strip()))
    telling = [line for line in lines[1:] if re.search(r"fail|error", line, re.IGNORECASE)]
    return " ... ".join(lines[:1] + telling[-1:])[:300]


def print_table(medians: dict, ratios: dict, real_sides: list[str]) -> None:
    """A row a model: each real side's median images/s, synthetic's, then each side's ratio."""
    ratio_names = ["ratio"] if len(real_sides) == 1 else [f"{side}/syn" for side in real_sides]
    columns = [f"{side} img/s" for side in real_sides] + ["synthetic img/s"] + ratio_names
    print(f"{'model':>10} " + " ".join(f"{column:>{max(len(column), 8)}}" for column in columns))
    for model, rates in medians.items():
        cells = [rates[side] for side in [*real_sides, "synthetic"]] + list(ratios[model].values())
        formats = ["{:.1f}"] * (len(real_sides) + 1) + ["{:.2f}"] * len(real_sides)
        text = [fmt.format(cell) if cell is not None else "-" for fmt, cell in zip(formats, cells)]
        print(f"{model:>10} " + " ".join(f"{cell:>{max(len(column), 8)}}" for cell, column in zip(text, columns)))


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, data = make_folder(args, Path(tmp))
        results, errors = measure(args, root, Path(tmp))

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.machine()
    real_sides = [side for side in args.sides if side != "synthetic"]
    medians = {
        model: {side: statistics.median(values) if values else None for side, values in sides.items()}
        for model, sides in results.items()
    }
    ratios = {
        model: {
            side: rates[side] / rates["synthetic"] if rates[side] and rates["synthetic"] else None
            for side in real_sides
        }
        for model, rates in medians.items()
    }
    if args.smoke:
        print("# smoke run (--smoke): tiny data and a few steps; the numbers mean nothing")
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {device}, torch {torch.__version__}, "
        f"batch {args.batch_size}, {args.image_size}px, precision {args.precision}, {args.workers} DALI threads "
        f"(DataLoader workers), {args.warmup_steps} + {args.steps} steps; data: {data}"
    )
    print_table(medians, ratios, real_sides)
    for model, failed in errors.items():
        for side, error in failed.items():
            print(f"{model} {side}: failed: {error}")
    if args.json:
        record = {
            "settings": {key: value for key, value in vars(args).items() if key != "json"} | {"data_folder": data},
            "device": device,
            "images_per_sec": results,
            "median": medians,
            "ratio_to_synthetic": ratios,
            "failed": errors,
        }
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
