"""The DALI decoder's ceiling: images/s of JPEG decoding and the random-resized crop alone, no model.

    .venv/bin/python bench/decode_ceiling.py                       # generated ImageNet-like JPEGs
    .venv/bin/python bench/decode_ceiling.py --root /data/imagenet --devices mixed,cpu --threads 16
    .venv/bin/python bench/decode_ceiling.py --smoke    # seconds: checks that it runs, numbers mean nothing

One DALI pipeline per run: the file reader (shuffled), ``fn.decoders.image_random_crop`` (the
training loader's crop: area ``--crop-scale``, aspect 3/4-4/3, decoding only the crop's region
where the decoder can) and the resize to ``--image-size``, with nothing after it: no flip, no
normalisation, no copy to PyTorch, no model. That is the most images a second the loader's
decoding can give, to set against a model's synthetic-data speed (bench/data_efficiency.py): a
ceiling below the model's speed means the decoder, not the rest of the pipeline, is what holds
training back.

``--devices``: ``mixed`` is nvJPEG on the GPU, with the hardware decoder's share as the loader's
(``data.hw_decoder_load``, 0.65; A100/H100 have one); ``cpu`` is libjpeg-turbo on ``--threads``
threads. The default is ``mixed`` with CUDA, else ``cpu``. Each run times ``--batches`` batches
after ``--warmup-batches`` untimed ones (nvJPEG's allocations, the first reads), and waits for the
last batch's device work at the end; the devices alternate (A B B A ...) over ``--repeats``.

The folder is ``--root`` (its train/ split) or bench/imagenet_like.py's generated JPEGs
(``--unique`` of them, 500x375 at quality 90, ImageNet's file size). ``--json PATH`` also writes
every measurement and the medians.

``--smoke`` runs the same measurement with small numbers (the CPU decoder, batch 8, 1 warm-up and
2 timed batches, 1 repeat, 1 thread, 16 JPEGs), which tests/test_bench.py runs; any flag given
with it still wins. Its report starts with a line saying it is a smoke run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.imagenet_like import describe, make_imagenet_like  # noqa: E402

# nvJPEG buffer sizes of DALI's ImageNet examples, as clr_dist/data/dali.py sets them.
DEVICE_MEMORY_PADDING = 211_025_920
HOST_MEMORY_PADDING = 140_544_512
HW_DECODER_LOAD = 0.65  # data.hw_decoder_load's default
# --smoke: the defaults it replaces (see the module docstring).
SMOKE = {
    "devices": "cpu",
    "batch_size": 8,
    "batches": 2,
    "warmup_batches": 1,
    "repeats": 1,
    "threads": 1,
    "unique": 16,
}


def training_files(root: Path) -> list[str]:
    """Every image of ``root/train/<class>/``, sorted."""
    return sorted(str(path) for path in (root / "train").glob("*/*") if path.is_file())


def build_pipeline(files: list[str], device: str, args: argparse.Namespace):
    """Reader -> decode with the random-resized crop -> resize; one output, the images."""
    from nvidia.dali import fn, pipeline_def, types

    decode = (
        {
            "device": "mixed",
            "device_memory_padding": DEVICE_MEMORY_PADDING,
            "host_memory_padding": HOST_MEMORY_PADDING,
            "hw_decoder_load": HW_DECODER_LOAD,
        }
        if device == "mixed"
        else {"device": "cpu"}
    )

    @pipeline_def
    def pipeline():
        jpegs, _ = fn.readers.file(files=files, random_shuffle=True, seed=0, name="Reader")
        images = fn.decoders.image_random_crop(
            jpegs,
            output_type=types.RGB,
            random_area=list(args.crop_scale),
            random_aspect_ratio=[3 / 4, 4 / 3],
            num_attempts=100,
            **decode,
        )
        return fn.resize(images, resize_x=args.image_size, resize_y=args.image_size)

    pipe = pipeline(
        batch_size=args.batch_size,
        num_threads=args.threads,
        device_id=0 if device == "mixed" else None,
        seed=0,
    )
    pipe.build()
    return pipe


def images_per_sec(files: list[str], device: str, args: argparse.Namespace) -> float:
    pipe = build_pipeline(files, device, args)
    for _ in range(args.warmup_batches):
        pipe.run()
    start = time.perf_counter()
    for _ in range(args.batches):
        (images,) = pipe.run()
    images.as_cpu()  # waits for the last batch's device work (a no-op copy on the CPU)
    elapsed = time.perf_counter() - start
    assert len(images) == args.batch_size and images[0].shape() == [args.image_size, args.image_size, 3]
    del pipe
    return args.batches * args.batch_size / elapsed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="an image folder (train/<class>/*.JPEG); default: generated JPEGs")
    parser.add_argument("--devices", help="comma-separated: mixed (nvJPEG, needs CUDA), cpu; default mixed with CUDA")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warmup-batches", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=min(16, os.cpu_count() or 1), help="DALI threads")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--crop-scale", type=float, nargs=2, default=(0.08, 1.0), help="share of the area")
    parser.add_argument("--unique", type=int, default=256, help="JPEGs to generate without --root")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny numbers, to check that the script runs")
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
    args.devices = (args.devices or ("mixed" if torch.cuda.is_available() else "cpu")).split(",")
    if set(args.devices) - {"mixed", "cpu"}:
        parser.error(f"--devices: choose from mixed, cpu (got {','.join(args.devices)})")
    if "mixed" in args.devices and not torch.cuda.is_available():
        parser.error("--devices mixed needs a CUDA device; use --devices cpu")
    return args


def main() -> None:
    args = parse_args()
    results: dict[str, list[float]] = {device: [] for device in args.devices}
    with tempfile.TemporaryDirectory() as tmp:
        if args.root:
            root, data = Path(args.root), args.root
        else:
            root = Path(tmp) / "imagenet-like"
            data = describe(make_imagenet_like(root, args.unique, classes=1))
        files = training_files(root)
        for repeat in range(args.repeats):
            for device in args.devices if repeat % 2 == 0 else reversed(args.devices):
                results[device].append(images_per_sec(files, device, args))
                print(f"  repeat {repeat + 1} {device:>5}: {results[device][-1]:9.1f} images/s", flush=True)

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
    if args.smoke:
        print("# smoke run (--smoke): tiny data and a few steps; the numbers mean nothing")
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {gpu}, "
        f"{args.threads} threads, batch {args.batch_size}, crop area {args.crop_scale[0]:g}-{args.crop_scale[1]:g} "
        f"-> {args.image_size}px, {args.warmup_batches} + {args.batches} batches; data: {data}"
    )
    medians = {device: statistics.median(values) for device, values in results.items()}
    for device, values in results.items():
        print(f"{device:>5}: median {medians[device]:9.1f} images/s (min {min(values):.1f}, max {max(values):.1f})")
    if args.json:
        record = {
            "settings": {key: value for key, value in vars(args).items() if key != "json"} | {"data_folder": data},
            "gpu": gpu,
            "images_per_sec": results,
            "median": medians,
        }
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
