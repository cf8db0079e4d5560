"""Fashion-MNIST, from Debian's ``dataset-fashion-mnist``, converted to the ImageNet folder layout.

The package ships the four IDX files gzipped under ``/usr/share/datasets/fashion-mnist/``. The
conversion writes 28x28 RGB JPEGs (the grey value in all three channels, so the same pipelines,
models and normalisation serve it as ImageNet)::

    OUT/train/<class>/<class>_<index>.JPEG     the 60,000 training images
    OUT/val/<class>/<class>_<index>.JPEG       the 10,000 test images

``index`` is the image's position in its IDX file, so every JPEG can be traced to its source.
Labels are re-numbered by the sorted folder names (``ankle_boot`` = 0, as ``ImageFolder`` and
the DALI reader number them), not Fashion-MNIST's original 0-9 order.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from clr_dist.data.datasets import FolderSummary, check_image_folder, reusable
from clr_dist.errors import DataError
from clr_dist.files import staged_dir

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "install it with `apt-get install dataset-fashion-mnist` or pass --source DIR"
MARKER = "clr_dist_fashion_mnist.json"
JPEG_QUALITY = 95

# Fashion-MNIST's label order (its README), as folder-safe names.
CLASSES = ("tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")

# split -> (images file, labels file), names without the .gz the Debian package adds
SOURCE_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def _find_source_file(source: Path, name: str) -> Path:
    for candidate in (source / f"{name}.gz", source / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"Fashion-MNIST file {str(source / name)!r}(.gz) is missing; {INSTALL_HINT}")


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """The array in an IDX file (gzipped or not) whose magic number must be ``magic``.

    IDX: a big-endian int32 magic (0, 0, type 0x08 = unsigned byte, number of dimensions), one
    big-endian int32 per dimension, then the bytes. Anything else raises DataError.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}; {INSTALL_HINT} again") from exc
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic or len(data) < header:
        found_text = "none (file too short)" if found is None else f"0x{found:08x}"
        raise DataError(
            f"{str(path)!r} is not an IDX file of {ndim}-d unsigned bytes "
            f"(magic number {found_text}, expected 0x{magic:08x}); {INSTALL_HINT} again"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise DataError(
            f"{str(path)!r} holds {len(data) - header} bytes of data, its header "
            f"{shape} says {expected}; the file is damaged, {INSTALL_HINT} again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_split(source: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N uint8) of ``split`` ("train" or "val" = the test set)."""
    source = Path(source)
    images_name, labels_name = SOURCE_FILES[split]
    images_path = _find_source_file(source, images_name)
    labels_path = _find_source_file(source, labels_name)
    images = read_idx(images_path, _IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, _IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{str(images_path)!r} holds {len(images)} images but {str(labels_path)!r} "
            f"{len(labels)} labels; {INSTALL_HINT} again"
        )
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"{str(labels_path)!r} holds label {labels.max()}; Fashion-MNIST has {len(CLASSES)} classes")
    return images, labels


def _selected(labels: np.ndarray, limit_per_class: int | None) -> np.ndarray:
    """Indices to convert: all, or the first ``limit_per_class`` of each class in file order."""
    if limit_per_class is None:
        return np.arange(len(labels))
    keep = np.concatenate([np.flatnonzero(labels == c)[:limit_per_class] for c in range(len(CLASSES))])
    return np.sort(keep)


def convert_fashion_mnist(
    out: str | Path,
    source: str | Path = DEFAULT_SOURCE,
    limit_per_class: int | None = None,
) -> FolderSummary:
    """Write Fashion-MNIST under ``out`` in the ImageNet layout; reuse it when already there.

    ``limit_per_class`` keeps the first N images of each class of each split (for quick tests).
    As ``make_demo_dataset``: a finished set carries a marker with its settings and is reused
    when they match (the source is not even read); a folder holding anything else is refused;
    the set is written beside ``out`` and renamed into place, so an interrupted run leaves none.
    """
    out = Path(out)
    if limit_per_class is not None and limit_per_class < 1:
        raise DataError(f"limit_per_class must be at least 1, not {limit_per_class}")
    settings = {
        "dataset": "fashion-mnist",
        "limit_per_class": limit_per_class,
        "jpeg_quality": JPEG_QUALITY,
        "classes": list(CLASSES),
    }
    if reusable(out, MARKER, settings, "a clr_dist Fashion-MNIST set"):
        return check_image_folder(out)

    # Read and check every source file before writing anything.
    splits = {split: load_split(source, split) for split in SOURCE_FILES}
    with staged_dir(out) as staging:
        for split, (images, labels) in splits.items():
            for name in CLASSES:
                (staging / split / name).mkdir(parents=True, exist_ok=True)
            for index in _selected(labels, limit_per_class):
                name = CLASSES[labels[index]]
                # "L" -> "RGB" repeats the grey value; 4:4:4 keeps JPEG from averaging chroma,
                # which is all zero here anyway, so the error stays in the luma quantisation.
                Image.fromarray(images[index]).convert("RGB").save(
                    staging / split / name / f"{name}_{index:05d}.JPEG", quality=JPEG_QUALITY, subsampling=0
                )
        (staging / MARKER).write_text(json.dumps(settings, indent=2) + "\n")
    return check_image_folder(out)
