"""Loader throughput: DALI (CPU operators) vs the torchvision loader, same folder, same crop.

    .venv/bin/python bench/loader_throughput.py [--batches 40] [--repeats 3] [--threads 2] [--image-size 256]
    .venv/bin/python bench/loader_throughput.py --smoke    # seconds: checks that it runs, numbers mean nothing

Both read the training split of one folder with the same random-resized crop (area 0.08-1,
output 224), flip and normalisation, the same per-rank batch and the same number of worker
threads/processes (``data.workers``), in one process; only the loader differs. Each run times
``--batches`` batches after 5 untimed ones (start-up and the first decodes), and the two loaders
alternate (A B B A ...). The folder is the demo set made at ``--image-size`` pixels
(``--demo-per-class`` images a class), so the decode work resembles ImageNet's (about 400x350 on
average there) more than the 64 px default.

``--smoke`` runs the same measurement with small numbers (2 timed batches of 8, 1 repeat, one
thread, 64 px JPEGs, 4 images a class), which tests/test_bench.py runs so that a change in either
loader breaks a test rather than the next measurement; any flag given with it still wins. Its
report starts with a line saying it is a smoke run.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clr_dist.config import DataConfig  # noqa: E402
from clr_dist.data.dali import DaliLoaders  # noqa: E402
from clr_dist.data.datasets import make_demo_dataset  # noqa: E402
from clr_dist.data.torch_loader import TorchvisionLoaders  # noqa: E402
from clr_dist.dist import DistInfo  # noqa: E402

WARMUP = 5
# --smoke: the defaults it replaces (see the module docstring).
SMOKE = {"batches": 2, "batch_size": 8, "repeats": 1, "threads": 1, "image_size": 64, "demo_per_class": 4}


def images_per_sec(loader_name: str, root: Path, classes: list[str], args: argparse.Namespace) -> float:
    cfg = DataConfig(
        root=str(root),
        loader=loader_name,
        batch_size=args.batch_size,
        image_size=224,
        val_resize=256,
        crop_scale=(0.08, 1.0),
        workers=args.threads,
    )
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    cls = DaliLoaders if loader_name == "dali" else TorchvisionLoaders
    data = cls(cfg, info, seed=0, classes=classes)
    batches = itertools.chain.from_iterable(data.train_epoch(epoch) for epoch in itertools.count())
    for _ in range(WARMUP):
        next(batches)
    start = time.perf_counter()
    for _ in range(args.batches):
        images, _ = next(batches)
    elapsed = time.perf_counter() - start
    assert images.shape == (args.batch_size, 3, 224, 224)
    return args.batches * args.batch_size / elapsed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="DALI threads = DataLoader workers")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--demo-per-class", type=int, default=100, help="training images a class of the generated set")
    parser.add_argument("--smoke", action="store_true", help="tiny numbers, to check that the script runs")
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demo"
        classes = make_demo_dataset(
            root, train_per_class=args.demo_per_class, val_per_class=1, image_size=args.image_size
        ).classes
        results: dict[str, list[float]] = {"torchvision": [], "dali": []}
        for r in range(args.repeats):
            for name in ("torchvision", "dali") if r % 2 == 0 else ("dali", "torchvision"):
                results[name].append(images_per_sec(name, root, classes, args))
                print(f"  repeat {r + 1} {name:>11}: {results[name][-1]:7.1f} images/s", flush=True)
    if args.smoke:
        print("# smoke run (--smoke): tiny data and a few steps; the numbers mean nothing")
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{args.threads} threads, batch {args.batch_size}, {args.image_size}px JPEGs -> 224 crops"
    )
    for name, values in results.items():
        print(
            f"{name:>11}: median {statistics.median(values):7.1f} images/s (min {min(values):.1f}, max {max(values):.1f})"
        )
    print(
        f"ratio dali/torchvision: {statistics.median(results['dali']) / statistics.median(results['torchvision']):.2f}"
    )


if __name__ == "__main__":
    main()
