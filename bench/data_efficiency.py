"""Data-pipeline efficiency: training images/s through DALI against synthetic data, per model.

    .venv/bin/python bench/data_efficiency.py                      # on a GPU machine
    .venv/bin/python bench/data_efficiency.py --root /data/imagenet --models alexnet,googlenet,resnet50
    .venv/bin/python bench/data_efficiency.py --image-size 64 --batch-size 32 --models alexnet --steps 10
    .venv/bin/python bench/data_efficiency.py --smoke    # seconds: checks that it runs, numbers mean nothing

Both sides are the real Trainer (model, mixed precision, channels-last on CUDA, SGD step) over
one process; only the data differs: ``data.loader=dali`` reading JPEGs from ``--root``, or
``data=synthetic`` (one random batch made once on the device, the model-only ceiling). The ratio
DALI / synthetic is the share of the model's speed the data pipeline keeps: 1.0 means decoding
and augmentation are fully hidden behind the model's work.

Each run trains ``--warmup-steps`` untimed steps (start-up, cuDNN autotuning, the first decodes),
then times ``--steps`` steps, synchronising with the device only at the end. The two sides
alternate (A B B A ...) over ``--repeats`` repeats. Without ``--root`` the folder is the demo set
(10 classes, ``--demo-per-class`` images each) with images 1.15 times ``--image-size``; ImageNet's
JPEGs are larger (about 400x350 on average), so decoding costs more there.

``--smoke`` runs the same measurement with small numbers (AlexNet, batch 8 at 64 px, 1 warm-up and
2 timed steps, 1 repeat, 2 DALI threads, a demo set of 8 images a class), which tests/test_bench.py
runs so that a change in the Trainer breaks a test rather than the next measurement; any flag
given with it still wins. Its report starts with a line saying it is a smoke run.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

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
}


def train_images_per_sec(overrides: list[str], args: argparse.Namespace, run_dir: Path) -> float:
    config.register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = config.to_object(compose("train", overrides=overrides))
    trainer = Trainer(cfg, run_dir)
    try:
        batches = trainer.train_batches()
        for _ in range(args.warmup_steps):
            trainer.train_step(batches)
        if trainer.info.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = trainer.train_step(batches)
        loss.item()  # waits for the queued device work
        elapsed = time.perf_counter() - start
    finally:
        trainer.close()
    return args.steps * args.batch_size / elapsed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="an image folder (train/<class>/*.JPEG); default: a generated one")
    parser.add_argument("--models", default="alexnet,googlenet,resnet50")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8, help="DALI threads")
    parser.add_argument("--precision", default="auto", help="trainer.precision")
    parser.add_argument("--demo-per-class", type=int, default=200, help="training images a class of the generated set")
    parser.add_argument("--smoke", action="store_true", help="tiny numbers, to check that the script runs")
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
    return args


def main() -> None:
    args = parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp) / "demo"
        if not args.root:
            make_demo_dataset(
                root, train_per_class=args.demo_per_class, val_per_class=1, image_size=int(args.image_size * 1.15)
            )
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
        sides = {
            "dali": ["data=imagenet", f"data.root={root}", "data.loader=dali", f"data.workers={args.workers}"],
            "synthetic": ["data=synthetic", f"data.synthetic_classes={classes}"],
        }
        results: dict[str, dict[str, list[float]]] = {}
        for model in args.models.split(","):
            results[model] = {side: [] for side in sides}
            for repeat in range(args.repeats):
                for side in sides if repeat % 2 == 0 else reversed(sides):
                    overrides = [
                        f"model={model}" if (REPO / "conf/model" / f"{model}.yaml").exists() else f"model.name={model}",
                        *common,
                        *sides[side],
                    ]
                    value = train_images_per_sec(overrides, args, Path(tmp) / "runs" / f"{model}-{side}-{repeat}")
                    results[model][side].append(value)
                    print(f"  {model} repeat {repeat + 1} {side:>9}: {value:9.1f} images/s", flush=True)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.machine()
    if args.smoke:
        print("# smoke run (--smoke): tiny data and a few steps; the numbers mean nothing")
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {device}, torch {torch.__version__}, "
        f"batch {args.batch_size}, {args.image_size}px, precision {args.precision}, {args.workers} DALI threads"
    )
    print(f"{'model':>10} {'dali img/s':>11} {'synthetic img/s':>16} {'ratio':>6}")
    for model, sides_ in results.items():
        dali, synthetic = statistics.median(sides_["dali"]), statistics.median(sides_["synthetic"])
        print(f"{model:>10} {dali:11.1f} {synthetic:16.1f} {dali / synthetic:6.2f}")


if __name__ == "__main__":
    main()
