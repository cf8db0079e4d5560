"""Datasets on disk in the ImageNet folder layout: the generated demo set and the layout checker.

Layout (what torchvision's ``ImageFolder`` and DALI's file reader both read)::

    ROOT/train/<class>/*.JPEG
    ROOT/val/<class>/*.JPEG
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clr_dist.errors import DataError
from clr_dist.files import staged_dir

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
DEMO_MARKER = "clr_dist_demo.json"


@dataclass(frozen=True)
class FolderSummary:
    classes: list[str]
    train_count: int
    val_count: int


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def check_image_folder(root: str | Path) -> FolderSummary:
    """Check the train/val class-folder layout without decoding any image.

    Raises DataError naming the first problem found: a missing or empty root, a missing split,
    a split with no class folders, class folders that differ between train and val, or a class
    folder with no images.
    """
    root = Path(root)
    hint = (
        "make one with `clr-dist data make-demo DIR` (or `clr-dist data fashion-mnist DIR`) "
        "or point data.root at an ImageNet folder"
    )
    if not root.is_dir():
        raise DataError(f"data.root {str(root)!r} does not exist or is not a directory; {hint}")
    if not any(root.iterdir()):
        raise DataError(f"data.root {str(root)!r} is empty; {hint}")
    counts: dict[str, dict[str, int]] = {}
    for split in ("train", "val"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(
                f"{str(split_dir)!r} is missing: data.root must hold train/<class>/*.JPEG and val/<class>/*.JPEG"
            )
        class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir())
        if not class_dirs:
            raise DataError(f"{str(split_dir)!r} has no class folders: expected {split}/<class>/*.JPEG")
        counts[split] = {}
        for class_dir in class_dirs:
            n = len(_images_in(class_dir))
            if n == 0:
                raise DataError(
                    f"class folder {str(class_dir)!r} holds no images "
                    f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add its images"
                )
            counts[split][class_dir.name] = n
    train_classes, val_classes = set(counts["train"]), set(counts["val"])
    if train_classes != val_classes:
        only_train = sorted(train_classes - val_classes)[:5]
        only_val = sorted(val_classes - train_classes)[:5]
        raise DataError(
            f"train and val class folders differ under {str(root)!r} "
            f"(only in train: {only_train}, only in val: {only_val}); both splits need the same classes"
        )
    return FolderSummary(
        classes=sorted(train_classes),
        train_count=sum(counts["train"].values()),
        val_count=sum(counts["val"].values()),
    )


# --- The generated demo set ------------------------------------------------------------------
#
# Each class is one shape drawn in one hue, at a random position, size and rotation, on a random
# low-saturation background with pixel noise and a grey distractor blob. Hue alone separates the
# classes only roughly (neighbouring hues are 36 degrees apart and jittered by up to 12), so a
# model has to look at shape too to reach high accuracy. Every image comes from its own seed, so
# the set is identical whatever order or machine it is made on.

_SHAPES = ("disc", "square", "triangle", "cross", "ring")
DEMO_CLASSES = tuple(f"c{i:02d}_{_SHAPES[i % len(_SHAPES)]}" for i in range(10))


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [math.pi / 4 + k * math.pi / 2 for k in range(4)]
    elif shape == "triangle":
        corners = [math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
    else:
        raise ValueError(shape)
    return [(cx + r * math.cos(a + angle), cy + r * math.sin(a + angle)) for a in corners]


def render_demo_image(class_index: int, seed: int, size: int = 64) -> Image.Image:
    """One image of class ``class_index``; the same (class, seed, size) always gives the same pixels."""
    rng = np.random.default_rng([seed, class_index])
    bg = _hsv_to_rgb(rng.random(), 0.25 * rng.random(), 0.3 + 0.5 * rng.random())
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    # A grey distractor so that "the only blob in the picture" is not the whole story.
    dx, dy, dr = rng.uniform(0, size, 2).tolist() + [rng.uniform(0.08, 0.18) * size]
    grey = int(rng.uniform(60, 200))
    draw.ellipse([dx - dr, dy - dr, dx + dr, dy + dr], fill=(grey, grey, grey))

    hue = (class_index / len(DEMO_CLASSES) + rng.uniform(-1, 1) / 30) % 1.0
    color = _hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.65, 1.0))
    r = rng.uniform(0.18, 0.32) * size
    cx, cy = rng.uniform(r, size - r, 2)
    angle = rng.uniform(0, 2 * math.pi)
    shape = _SHAPES[class_index % len(_SHAPES)]
    if shape == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=color, width=max(2, int(r / 3)))
    elif shape == "cross":
        w = r / 3
        for a in (angle, angle + math.pi / 2):
            ux, uy = math.cos(a), math.sin(a)
            vx, vy = -uy, ux
            draw.polygon(
                [
                    (cx + sx * r * ux + sy * w * vx, cy + sx * r * uy + sy * w * vy)
                    for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
                ],
                fill=color,
            )
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=color)

    pixels = np.asarray(img, dtype=np.int16) + rng.normal(0, 12, (size, size, 3)).astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def reusable(out: Path, marker_name: str, settings: dict, what: str) -> bool:
    """True when ``out`` already holds ``what`` made with ``settings`` (its marker file says so);
    False when ``out`` is missing or empty, so it may be written. Anything else is refused with a
    DataError, so a generator never overwrites a user's files."""
    marker = out / marker_name
    if marker.is_file():
        made_with = json.loads(marker.read_text())
        if made_with == settings:
            return True
        changed = ", ".join(
            f"{k}={made_with.get(k)!r} (asked {v!r})" for k, v in settings.items() if made_with.get(k) != v
        )
        raise DataError(
            f"{str(out)!r} holds {what} made with other settings: {changed}; "
            f"choose another directory or delete this one"
        )
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{str(out)!r} already holds files that are not {what}; choose an empty or new directory")
    return False


def make_demo_dataset(
    out: str | Path,
    train_per_class: int = 200,
    val_per_class: int = 50,
    image_size: int = 64,
    seed: int = 0,
) -> FolderSummary:
    """Write the demo set under ``out`` (ImageNet layout); reuse it when it is already there.

    A finished set carries a marker file with its settings; a folder with the marker and the same
    settings is returned as is, so ``make demo`` makes the data once. A folder holding anything
    else (other files, or a demo set made with other settings) is refused, never overwritten.
    """
    out = Path(out)
    settings = {
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "image_size": image_size,
        "seed": seed,
        "classes": list(DEMO_CLASSES),
    }
    if reusable(out, DEMO_MARKER, settings, "a clr_dist demo set"):
        return check_image_folder(out)
    # Written beside the target and renamed into place, so an interrupted run leaves no half set.
    with staged_dir(out) as staging:
        # Train and val images come from disjoint seed ranges, so no val image is a train image.
        for split, per_class, offset in (("train", train_per_class, 0), ("val", val_per_class, 1 << 20)):
            for class_index, name in enumerate(DEMO_CLASSES):
                class_dir = staging / split / name
                class_dir.mkdir(parents=True, exist_ok=True)
                for k in range(per_class):
                    image = render_demo_image(class_index, seed * (1 << 24) + offset + k, image_size)
                    image.save(class_dir / f"{name}_{k:05d}.JPEG", quality=90)
        (staging / DEMO_MARKER).write_text(json.dumps(settings, indent=2) + "\n")
    return check_image_folder(out)
