"""CIFAR-10, from its binary archive ``cifar-10-binary.tar.gz``, converted to the ImageNet folder layout.

The archive (the "binary version" on https://www.cs.toronto.edu/~kriz/cifar.html) holds::

    cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin   training, 10,000 images each
    cifar-10-batches-bin/test_batch.bin                          the 10,000 test images
    cifar-10-batches-bin/batches.meta.txt                        the 10 class names, one a line

Each ``.bin`` is a run of 3,073-byte records: a label byte (0-9), then the 32x32 image as 1,024
red, 1,024 green and 1,024 blue bytes, each plane in row-major order. The members are read
straight out of the (gzipped) tar in one pass, never extracted to disk; nothing is unpickled,
and the pickled Python version (``cifar-10-python.tar.gz``) is refused. The conversion writes
lossless 32x32 RGB PNGs (JPEG would blur images this small)::

    OUT/train/<class>/<class>_<index>.png     the 50,000 training images
    OUT/val/<class>/<class>_<index>.png       the 10,000 test images

``index`` is the image's position in its split (training: data_batch_1 to _5 in order, 0-49,999;
val: test_batch, 0-9,999), so every PNG can be traced to its record. Folders are named by
batches.meta.txt; the loaders number classes by the sorted folder names, which for CIFAR-10's
names is the dataset's own 0-9 order.

The official files hold exactly 10,000 records each; this reader takes any whole number of
records from 1 to 10,000 per file (a smaller archive of the same format, as the tests build), and
refuses a size that is not a multiple of 3,073 bytes (a truncated or damaged file) or above
10,000 records. All six batch files and the class names must be there.
"""

from __future__ import annotations

import gzip
import json
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from clr_dist.data.datasets import FolderSummary, check_image_folder, reusable
from clr_dist.errors import DataError
from clr_dist.files import staged_dir

MARKER = "clr_dist_cifar10.json"
SOURCE_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
ARCHIVE_NAME = "cifar-10-binary.tar.gz"
DOWNLOAD_HINT = f"download {ARCHIVE_NAME} (the binary version) again from {SOURCE_URL}"

FOLDER = "cifar-10-batches-bin"
TRAIN_BATCHES = tuple(f"data_batch_{k}.bin" for k in range(1, 6))
TEST_BATCH = "test_batch.bin"
META = "batches.meta.txt"
MEMBERS = (*TRAIN_BATCHES, TEST_BATCH, META)  # under FOLDER/

IMAGE_SIZE = 32
RECORD_BYTES = 1 + 3 * IMAGE_SIZE * IMAGE_SIZE  # 3,073: the label, then the R, G and B planes
MAX_RECORDS = 10_000  # per .bin file in the official archive
CLASS_COUNT = 10
_META_MAX_BYTES = 1 << 16
# The class names the dataset's documentation gives, in label order (batches.meta.txt's).
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Other versions of the same dataset, by their folder in the archive.
_OTHER_VERSIONS = {
    "cifar-10-batches-py": "the pickled Python version of CIFAR-10 (cifar-10-python.tar.gz); "
    "clr_dist never unpickles a file",
    "cifar-10-batches-mat": "the MATLAB version of CIFAR-10 (cifar-10-matlab.tar.gz)",
}


def _member_path(name: str) -> str:
    """A member's name without a leading ``./`` (tar files written as ``tar -C dir .`` have one)."""
    while name.startswith("./"):
        name = name[2:]
    return name


def _check_version(archive: Path, name: str) -> None:
    folder = _member_path(name).split("/", 1)[0]
    if folder in _OTHER_VERSIONS:
        raise DataError(
            f"{str(archive)!r} is {_OTHER_VERSIONS[folder]}: give the binary version, {ARCHIVE_NAME}, from {SOURCE_URL}"
        )


def _check_bin_size(archive: Path, member: str, size: int) -> None:
    where = f"{member!r} in {str(archive)!r}"
    if size > MAX_RECORDS * RECORD_BYTES:
        raise DataError(
            f"{where} holds {size:,} bytes, more than CIFAR-10's {MAX_RECORDS:,} records of {RECORD_BYTES:,}: "
            f"this is not CIFAR-10's binary archive; give {ARCHIVE_NAME} from {SOURCE_URL}"
        )
    if size == 0 or size % RECORD_BYTES:
        what = "is empty" if size == 0 else f"holds {size:,} bytes, not a whole number of {RECORD_BYTES:,}-byte records"
        raise DataError(f"{where} {what}: the archive is truncated or damaged; {DOWNLOAD_HINT}")


def _open_archive(archive: Path):
    """The archive as a binary stream: gunzipped (which checks its CRC at the end) or as is."""
    if not archive.exists():
        raise DataError(f"{str(archive)!r} does not exist; {DOWNLOAD_HINT.replace(' again', '')}")
    if archive.is_dir():
        raise DataError(f"{str(archive)!r} is a folder; give the archive file itself, {ARCHIVE_NAME}")
    try:
        with archive.open("rb") as f:
            magic = f.read(2)
        return gzip.open(archive, "rb") if magic == b"\x1f\x8b" else archive.open("rb")
    except OSError as exc:
        raise DataError(f"cannot read {str(archive)!r}: {exc}") from exc


def read_archive(archive: str | Path) -> tuple[list[str], dict[str, bytes]]:
    """(the class names, {batch file name: its bytes}) of a CIFAR-10 binary archive.

    One pass over the tar stream; every problem is a one-line DataError that names the archive
    (and the member) and says what to do: not a tar, another version of CIFAR-10, a member
    missing, truncated or not a whole number of records, damaged compressed data, bad names.
    """
    archive = Path(archive)
    stream = _open_archive(archive)
    wanted = {f"{FOLDER}/{name}": name for name in MEMBERS}
    found: dict[str, bytes] = {}
    others: list[str] = []  # what else the archive holds, for the message when members are missing
    try:
        with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                _check_version(archive, member.name)
                path = _member_path(member.name)
                name = wanted.get(path)
                if name is None or not member.isfile():
                    if path and path != FOLDER:
                        others.append(path)
                    continue
                if name in found:
                    raise DataError(f"{str(archive)!r} holds {path!r} twice; {DOWNLOAD_HINT}")
                if name == META:
                    if member.size > _META_MAX_BYTES:
                        raise DataError(f"{path!r} in {str(archive)!r} holds {member.size:,} bytes; {DOWNLOAD_HINT}")
                else:
                    _check_bin_size(archive, path, member.size)
                found[name] = tar.extractfile(member).read()
            # Read to the end: gzip checks the CRC of the whole stream there, which is what finds
            # damaged data (tar itself stops quietly at a header it cannot read).
            while stream.read(1 << 20):
                pass
    except tarfile.ReadError as exc:
        if not found and not others:
            raise DataError(
                f"{str(archive)!r} is not a tar archive (gzipped or not): {exc}; give {ARCHIVE_NAME} from {SOURCE_URL}"
            ) from exc
        raise DataError(f"{str(archive)!r} is truncated or damaged ({exc}); {DOWNLOAD_HINT}") from exc
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{str(archive)!r} is truncated or damaged ({exc}); {DOWNLOAD_HINT}") from exc

    missing = [f"{FOLDER}/{name}" for name in MEMBERS if name not in found]
    if not found:
        holds = f"; it holds {', '.join(others[:5])}{', ...' if len(others) > 5 else ''}" if others else ""
        raise DataError(
            f"{str(archive)!r} holds none of CIFAR-10's binary files ({FOLDER}/data_batch_1.bin, ...{holds}); "
            f"give {ARCHIVE_NAME} from {SOURCE_URL}"
        )
    if missing:
        raise DataError(f"{str(archive)!r} lacks {', '.join(missing)}: the archive is incomplete; {DOWNLOAD_HINT}")
    return _class_names(archive, found.pop(META)), found


def _class_names(archive: Path, meta: bytes) -> list[str]:
    """batches.meta.txt's names, one a line; blank lines (the official file ends with some) dropped."""
    where = f"{FOLDER}/{META} in {str(archive)!r}"
    try:
        names = [line.strip() for line in meta.decode("ascii").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{where} is not plain text ({exc}); {DOWNLOAD_HINT}") from exc
    if len(names) != CLASS_COUNT:
        raise DataError(f"{where} names {len(names)} classes, not {CLASS_COUNT}; {DOWNLOAD_HINT}")
    bad = [n for n in names if n in (".", "..") or any(c in n for c in "/\\\0")]
    if bad or len(set(names)) != len(names):
        raise DataError(f"{where} has class names that cannot be folder names: {names}; {DOWNLOAD_HINT}")
    return names


def records(archive: Path, name: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(labels N, images N x 32 x 32 x 3 RGB) of one batch file's bytes; labels must be 0-9."""
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = rows[:, 0]
    if labels.max() >= CLASS_COUNT:
        index = int(np.argmax(labels >= CLASS_COUNT))
        raise DataError(
            f"record {index} of {FOLDER}/{name} in {str(archive)!r} has label {labels[index]} "
            f"(CIFAR-10's are 0-{CLASS_COUNT - 1}): the file is damaged or not CIFAR-10; {DOWNLOAD_HINT}"
        )
    # Planes R, G, B of 32 rows of 32 pixels -> rows x columns x channels.
    images = rows[:, 1:].reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)
    return labels, images


def load_splits(archive: str | Path) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(class names, {"train"|"val": (labels, images)}) of the whole archive, checked."""
    archive = Path(archive)
    classes, batches = read_archive(archive)
    parts = {name: records(archive, name, batches[name]) for name in (*TRAIN_BATCHES, TEST_BATCH)}
    train = [parts[name] for name in TRAIN_BATCHES]
    splits = {
        "train": (np.concatenate([p[0] for p in train]), np.concatenate([p[1] for p in train])),
        "val": parts[TEST_BATCH],
    }
    return classes, splits


def _selected(labels: np.ndarray, limit_per_class: int | None) -> np.ndarray:
    """Indices to convert: all, or the first ``limit_per_class`` of each class in file order."""
    if limit_per_class is None:
        return np.arange(len(labels))
    keep = np.concatenate([np.flatnonzero(labels == c)[:limit_per_class] for c in range(CLASS_COUNT)])
    return np.sort(keep)


def convert_cifar10(out: str | Path, source: str | Path, limit_per_class: int | None = None) -> FolderSummary:
    """Write CIFAR-10 from the binary archive ``source`` under ``out``; reuse it when already there.

    ``limit_per_class`` keeps the first N images of each class of each split (for quick tests).
    As ``convert_fashion_mnist``: a finished set carries a marker with its settings and is
    reused when they match (the archive is not even read); a folder holding anything else is
    refused; the whole archive is read and checked before anything is written, and the set is
    built beside ``out`` and renamed into place, so an interrupted run leaves none.
    """
    out = Path(out)
    if limit_per_class is not None and limit_per_class < 1:
        raise DataError(f"limit_per_class must be at least 1, not {limit_per_class}")
    settings = {"dataset": "cifar-10", "image_format": "png", "limit_per_class": limit_per_class}
    if reusable(out, MARKER, settings, "a clr_dist CIFAR-10 set"):
        return check_image_folder(out)

    source = Path(source)
    classes, splits = load_splits(source)
    for split, (labels, _) in splits.items():
        absent = [classes[c] for c in range(CLASS_COUNT) if not np.any(labels == c)]
        if absent:
            raise DataError(
                f"{str(source)!r} has no {split} images of class {', '.join(absent)}; "
                f"every class needs images in both splits; {DOWNLOAD_HINT}"
            )
    with staged_dir(out) as staging:
        for split, (labels, images) in splits.items():
            for name in classes:
                (staging / split / name).mkdir(parents=True)
            for index in _selected(labels, limit_per_class):
                name = classes[labels[index]]
                Image.fromarray(np.ascontiguousarray(images[index])).save(
                    staging / split / name / f"{name}_{index:05d}.png"
                )
        (staging / MARKER).write_text(json.dumps(settings, indent=2) + "\n")
    return check_image_folder(out)
