"""Generated JPEGs that cost what ImageNet's cost to decode, in the ImageNet folder layout.

    .venv/bin/python bench/imagenet_like.py /tmp/inet-like                        # 256 images, 1000 classes
    .venv/bin/python bench/imagenet_like.py /tmp/inet-like --unique 64 --train-images 2000 --classes 10

Decoding time follows a JPEG's pixel count and its entropy-coded size, not what it shows, so the
images are noise at several scales (a coarse colour layout down to pixel grain) sized like
ImageNet's photographs: 500x375, one in four 375x500, quality 90 with 4:2:0 chroma, about 110 KB
each (ImageNet's training JPEGs average about 110 KB at about 400x350). Colour shapes such as the
demo set's compress to a few KB and decode several times faster.

Only ``--unique`` images are encoded (some seconds for a few hundred); the ``--train-images``
names under train/<class>/ (and one val image a class) are hard links to them, so that a
benchmark can read more images than an epoch holds without paying for more encoding. The page
cache then holds every file, as it holds a hot ImageNet shard on a machine with enough memory:
the measurement is of decoding, not of the disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

QUALITY = 90
LANDSCAPE = (500, 375)
# Standard deviation of each noise octave, from the colour layout (4 cells across) to the pixel
# grain; tuned so that the mean file is about 110 KB at quality 90.
OCTAVES = ((4, 40.0), (16, 25.0), (64, 20.0), (None, 25.0))


def render(rng: np.random.Generator, width: int, height: int, grain: float) -> Image.Image:
    """One image: noise octaves around a random mean colour; ``grain`` scales the fine ones."""
    pixels = np.zeros((height, width, 3), np.float32)
    for octave, (cells, sigma) in enumerate(OCTAVES):
        if cells is None:
            layer = rng.standard_normal((height, width, 3), dtype=np.float32)
        else:
            coarse = rng.integers(0, 256, (max(2, cells * height // width), cells, 3), dtype=np.uint8)
            smooth = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
            layer = (np.asarray(smooth, np.float32) - 127.5) / 74.0  # uniform bytes: std about 74
        pixels += sigma * (grain if octave else 1.0) * layer
    pixels += rng.uniform(60, 190, 3).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _link(source: Path, name: Path) -> None:
    try:
        os.link(source, name)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, name)


def make_imagenet_like(
    root: str | Path, unique: int = 256, train_images: int | None = None, classes: int = 1000, seed: int = 0
) -> dict:
    """Write ``unique`` JPEGs under ``root/unique/`` and ``train_images`` (default ``unique``)
    training names over ``classes`` class folders plus one validation name a class, all links to
    them; ``root`` must not exist yet. Returns a summary (counts, mean file size)."""
    root = Path(root)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    originals = []
    (root / "unique").mkdir()
    for index in range(unique):
        width, height = LANDSCAPE if index % 4 else LANDSCAPE[::-1]
        path = root / "unique" / f"{index:05d}.JPEG"
        render(rng, width, height, grain=rng.uniform(0.7, 1.3)).save(path, quality=QUALITY)
        originals.append(path)
    train_images = unique if train_images is None else train_images
    per_class = -(-train_images // classes)
    for label in range(classes):
        wnid = f"n{label:08d}"
        for split, count in (("train", per_class), ("val", 1)):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for k in range(count):
                _link(originals[(label * per_class + k + (split == "val") * 7) % unique], folder / f"{wnid}_{k}.JPEG")
    sizes = [path.stat().st_size for path in originals]
    return {
        "unique": unique,
        "train_images": per_class * classes,
        "classes": classes,
        "mean_kb": sum(sizes) / len(sizes) / 1024,
        "quality": QUALITY,
    }


def describe(summary: dict) -> str:
    """One line for a report."""
    return (
        f"{summary['unique']} generated JPEGs (500x375 and 375x500, quality {summary['quality']}, "
        f"mean {summary['mean_kb']:.0f} KB) linked as {summary['train_images']} training images "
        f"over {summary['classes']} class{'es' if summary['classes'] > 1 else ''}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the folder to make (must not exist)")
    parser.add_argument("--unique", type=int, default=256, help="JPEGs to encode")
    parser.add_argument(
        "--train-images", type=int, help="training names, links to the unique JPEGs (default: --unique)"
    )
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(describe(make_imagenet_like(args.root, args.unique, args.train_images, args.classes, args.seed)))


if __name__ == "__main__":
    main()
