"""ImageNet (ILSVRC2012) from its official archives, turned into the folder layout the loaders read.

The three archives from image-net.org::

    ILSVRC2012_devkit_t12.tar.gz   ILSVRC2012_devkit_t12/data/meta.mat (the synsets: ILSVRC2012_ID,
                                   WNID, words, ...; the 1,000 classes are those without children)
                                   and .../data/ILSVRC2012_validation_ground_truth.txt (one
                                   ILSVRC2012_ID a line, for ILSVRC2012_val_00000001.JPEG onwards)
    ILSVRC2012_img_train.tar       one inner tar per class, <wnid>.tar, of <wnid>_<n>.JPEG (~138 GB)
    ILSVRC2012_img_val.tar         ILSVRC2012_val_<8 digits>.JPEG, flat (~6.3 GB)

become::

    ROOT/train/<wnid>/*.JPEG
    ROOT/val/<wnid>/*.JPEG       each image in the class the ground truth gives it
    ROOT/meta.bin                torchvision's cache of the devkit, so that
                                 ``torchvision.datasets.ImageNet(ROOT)`` reads the folders as they are

torchvision's ``parse_train_archive`` and ``parse_val_archive`` extract each archive whole to disk
first (the train archive's 1,000 inner tars beside the class folders), and its ``ImageNet`` class
takes an interrupted extraction for a finished one (it asks only whether ``train/`` exists). Here
every step is resumable and nothing is extracted twice:

- a train class is extracted from its inner tar into ``train/.partial-<wnid>`` and renamed to
  ``train/<wnid>`` when complete, so a class folder exists only complete, and a rerun skips it;
  the outer archive is opened seekable, so skipping a class costs one header read, not a read of
  its 140 MB;
- a val image is written to ``val/.partial-<name>`` and renamed into its class folder, so a
  rerun writes only the images still missing; images already extracted flat into ``val/`` (by
  hand, with ``tar xf``) are moved into their class folders instead of being read again;
- an archive is needed only while its split has work left: once ``train/`` is complete the train
  archive may be deleted.

Leftover ``.partial-*`` entries of an interrupted run are removed when the next run starts.
Images are not fsynced one by one (1.3M of them): after a power cut a renamed file may be short,
which the dataset check that ``clr-dist data imagenet`` runs at the end finds. The archives still
needed are checked before anything is extracted (the devkit whole; the train and val archives by
their member lists, which costs a header read per member): a missing archive, a devkit without
the ground truth, a train archive without every class, a val archive whose image count differs
from the ground truth are each one line (DataError).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from clr_dist.errors import DataError
from clr_dist.files import atomic_open, fsync_dir

TRAIN_ARCHIVE = "ILSVRC2012_img_train.tar"
VAL_ARCHIVE = "ILSVRC2012_img_val.tar"
DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_FOLDER = "ILSVRC2012_devkit_t12"
META_MAT = f"{DEVKIT_FOLDER}/data/meta.mat"
GROUND_TRUTH = f"{DEVKIT_FOLDER}/data/ILSVRC2012_validation_ground_truth.txt"
META_BIN = "meta.bin"  # torchvision.datasets.imagenet.META_FILE
DOWNLOAD_HINT = "download it again from https://image-net.org/challenges/LSVRC/2012/2012-downloads.php"

PARTIAL = ".partial-"  # prefix of what a run is still writing, inside train/ and val/
TRAIN_PROGRESS_EVERY = 50  # classes
VAL_PROGRESS_EVERY = 5_000  # images

# (the class names of each wnid, e.g. ("kit fox", "Vulpes macrotis"); the wnid of each val image
# in the order of the ground truth): what torchvision keeps in meta.bin.
Meta = tuple[dict[str, tuple[str, ...]], list[str]]


@dataclass(frozen=True)
class PrepareResult:
    """What ``prepare_imagenet`` did: counts of work done now and found already done."""

    root: str
    classes: int
    train_classes_extracted: int
    train_images_extracted: int
    train_classes_present: int
    val_images_placed: int
    val_images_present: int

    def describe(self) -> str:
        return (
            f"ImageNet at {self.root}: {self.classes:,} classes; train: {self.train_classes_extracted:,} classes "
            f"extracted ({self.train_images_extracted:,} images), {self.train_classes_present:,} already there; "
            f"val: {self.val_images_placed:,} images placed, {self.val_images_present:,} already there"
        )


def _member_path(name: str) -> str:
    """A member's name without a leading ``./`` (tar files written as ``tar -C dir .`` have one)."""
    while name.startswith("./"):
        name = name[2:]
    return name


def _require(archive: Path, option: str) -> None:
    if not archive.is_file():
        what = "is a folder, not the archive" if archive.is_dir() else "not found"
        raise DataError(
            f"{archive.name} {what}: looked for {str(archive)!r}; put it there or give its path with {option} FILE"
        )


def read_devkit(devkit: str | Path) -> Meta:
    """(class names by wnid, the wnid of each val image) from the devkit archive, read in memory.

    The same parsing as torchvision's ``parse_devkit_archive`` (the synsets without children are
    the classes; ground-truth line i is the ILSVRC2012_ID of val image i), which cannot serve
    here: it accepts only the exact official file (its MD5), extracts to a temporary folder and
    fails with a RuntimeError or a KeyError that says neither which file nor what to do.
    """
    import scipy.io

    devkit = Path(devkit)
    _require(devkit, "--devkit")
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(devkit, "r") as tar:
            for member in tar:
                path = _member_path(member.name)
                if path in (META_MAT, GROUND_TRUTH) and member.isfile():
                    found[path] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{str(devkit)!r} is not a readable tar archive ({exc}); {DOWNLOAD_HINT}") from exc
    for path in (META_MAT, GROUND_TRUTH):
        if path not in found:
            raise DataError(
                f"{str(devkit)!r} holds no {path}: it is not the ILSVRC2012 devkit for tasks 1 and 2 "
                f"({DEVKIT_ARCHIVE}) or it is incomplete; {DOWNLOAD_HINT}"
            )
    try:
        synsets = scipy.io.loadmat(io.BytesIO(found[META_MAT]), squeeze_me=True)["synsets"]
        leaves = [s for s in synsets if int(s["num_children"]) == 0]
        wnid_of = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
        names = {str(s["WNID"]): tuple(str(s["words"]).split(", ")) for s in leaves}
    except Exception as exc:  # scipy raises many kinds on a damaged or foreign .mat file
        raise DataError(
            f"{META_MAT} in {str(devkit)!r} is not ImageNet's synset table ({exc}); {DOWNLOAD_HINT}"
        ) from exc
    if not names:
        raise DataError(f"{META_MAT} in {str(devkit)!r} lists no classes (synsets without children); {DOWNLOAD_HINT}")
    val_wnids = []
    for number, line in enumerate(found[GROUND_TRUTH].decode("ascii", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            val_wnids.append(wnid_of[int(line)])
        except (ValueError, KeyError):
            raise DataError(
                f"line {number} of {GROUND_TRUTH} in {str(devkit)!r} is {line.strip()!r}, not the ILSVRC2012_ID "
                f"of a class in {META_MAT} (1 to {len(wnid_of)}); {DOWNLOAD_HINT}"
            ) from None
    if not val_wnids:
        raise DataError(f"{GROUND_TRUTH} in {str(devkit)!r} is empty; {DOWNLOAD_HINT}")
    return names, val_wnids


def write_meta_bin(root: Path, meta: Meta) -> None:
    """torchvision's meta.bin, as ``parse_devkit_archive`` writes it (``load_meta_file`` reads it)."""
    import torch

    with atomic_open(root / META_BIN, "wb") as handle:
        torch.save(meta, handle)


def load_meta(root: Path, devkit: Path) -> Meta:
    """The devkit's metadata; from ROOT/meta.bin (torchvision's ``load_meta_file``) only when the
    devkit is gone, as after a finished run whose archives were deleted."""
    if not devkit.exists() and (root / META_BIN).is_file():
        from torchvision.datasets.imagenet import load_meta_file

        try:
            return load_meta_file(str(root))
        except Exception as exc:  # torch.load's errors on a damaged file are of many kinds
            raise DataError(
                f"{str(root / META_BIN)!r} cannot be read ({type(exc).__name__}); delete it and give the devkit, "
                f"{DEVKIT_ARCHIVE}, with --devkit FILE"
            ) from exc
    meta = read_devkit(devkit)
    root.mkdir(parents=True, exist_ok=True)
    write_meta_bin(root, meta)
    return meta


def _remove_partials(split_dir: Path) -> None:
    """What an interrupted run was writing: never complete, so never kept."""
    if not split_dir.is_dir():
        return
    for entry in split_dir.iterdir():
        if entry.name.startswith(PARTIAL):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _val_name(number: int) -> str:
    return f"ILSVRC2012_val_{number:08d}.JPEG"


def _open_listed(
    archive: Path, option: str, stack: contextlib.ExitStack
) -> tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]:
    """An uncompressed tar (as ImageNet's are), open in ``stack``, and its file members by name.
    Opened seekable, so the list costs a header read per member, not a read of the archive."""
    _require(archive, option)
    try:
        tar = stack.enter_context(tarfile.open(archive, "r:"))
        members = [m for m in tar.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError, EOFError) as exc:
        # tarfile finds a member cut off when it looks for the next header, and says so this way.
        what = "is truncated" if "unexpected end of data" in str(exc) else "is not a readable uncompressed tar archive"
        raise DataError(f"{str(archive)!r} {what} ({exc}); {DOWNLOAD_HINT}") from exc
    by_name = {_member_path(m.name): m for m in members}
    if len(by_name) != len(members):
        raise DataError(f"{str(archive)!r} holds a member twice: it is not as ImageNet ships it; {DOWNLOAD_HINT}")
    return tar, by_name


def _train_members(archive: Path, listed: dict[str, tarfile.TarInfo], wnids: list[str]) -> dict[str, tarfile.TarInfo]:
    """The inner tar of each class, by wnid; the archive must hold one for every class and nothing else."""
    known = set(wnids)
    for name in listed:
        if not (name.endswith(".tar") and name[: -len(".tar")] in known):
            raise DataError(
                f"{str(archive)!r} holds {name!r}, which is not <wnid>.tar for a class of the devkit; "
                f"give ILSVRC2012's {TRAIN_ARCHIVE} with --train"
            )
    by_wnid = {name[: -len(".tar")]: member for name, member in listed.items()}
    absent = [w for w in wnids if w not in by_wnid]
    if absent:
        shown = ", ".join(f"{w}.tar" for w in absent[:3]) + (", ..." if len(absent) > 3 else "")
        raise DataError(
            f"{str(archive)!r} lacks {len(absent):,} of the devkit's {len(wnids):,} classes ({shown}): "
            f"the archive is incomplete; {DOWNLOAD_HINT}"
        )
    return by_wnid


def _check_val_members(archive: Path, listed: dict[str, tarfile.TarInfo], count: int) -> None:
    """The val archive must hold exactly the ``count`` images the ground truth lists."""
    expected = {_val_name(n) for n in range(1, count + 1)}
    if len(listed) != count:
        raise DataError(
            f"{str(archive)!r} holds {len(listed):,} images but the devkit's ground truth lists {count:,}: "
            f"the archive is incomplete or does not go with this devkit; {DOWNLOAD_HINT}"
        )
    strangers = sorted(set(listed) - expected)
    if strangers:
        raise DataError(
            f"{str(archive)!r} holds {strangers[0]!r}, not one of {_val_name(1)} to {_val_name(count)} that the "
            f"devkit's ground truth lists; give ILSVRC2012's {VAL_ARCHIVE} with --val"
        )


class _Progress:
    """A plain line on ``stream`` every ``every`` items and after the last: reads well in SLURM logs."""

    def __init__(self, stream: TextIO | None, what: str, total: int, every: int) -> None:
        self.stream, self.what, self.total, self.every = stream, what, total, every
        self.done, self.start = 0, time.monotonic()

    def say(self, line: str) -> None:
        if self.stream is not None:
            print(line, file=self.stream, flush=True)

    def add(self, extra: str = "") -> None:
        self.done += 1
        if self.done % self.every == 0 or self.done == self.total:
            minutes = max(time.monotonic() - self.start, 1e-9) / 60
            self.say(f"{self.what}: {self.done:,}/{self.total:,} done ({self.done / minutes:,.0f}/min){extra}")


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
    """A member's bytes to ``path``; never ``tar.extract``, which would trust the member's name."""
    with tar.extractfile(member) as source, open(path, "wb") as target:
        shutil.copyfileobj(source, target, 1 << 20)


def _extract_class(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: Path, train_dir: Path, wnid: str) -> int:
    """One class's inner tar, streamed, into ``train/.partial-<wnid>``, renamed to ``train/<wnid>``
    once complete; returns the number of images."""
    partial = train_dir / f"{PARTIAL}{wnid}"
    partial.mkdir()
    count = 0
    try:
        with tar.extractfile(member) as stream, tarfile.open(fileobj=stream, mode="r|") as inner:
            for image in inner:
                name = os.path.basename(_member_path(image.name))
                if image.isfile() and name not in ("", ".", ".."):
                    _write_member(inner, image, partial / name)
                    count += 1
        os.replace(partial, train_dir / wnid)
    except (tarfile.TarError, EOFError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise DataError(f"{wnid}.tar in {str(archive)!r} is damaged or truncated ({exc}); {DOWNLOAD_HINT}") from exc
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    fsync_dir(train_dir)
    return count


def _extract_val(
    tar: tarfile.TarFile,
    members: list[tarfile.TarInfo],
    archive: Path,
    targets: dict[str, Path],
    progress: TextIO | None,
) -> None:
    """Each member to ``val/.partial-<name>``, then renamed into its class folder."""
    val_dir = next(iter(targets.values())).parent.parent
    for folder in {target.parent for target in targets.values()}:
        folder.mkdir(parents=True, exist_ok=True)
    meter = _Progress(progress, "val images", len(members), VAL_PROGRESS_EVERY)
    meter.say(
        f"val: {len(targets) - len(members):,} of {len(targets):,} images already in place; extracting "
        f"{len(members):,} from {archive}"
    )
    for member in sorted(members, key=lambda m: m.offset):  # the archive front to back
        name = _member_path(member.name)
        partial = val_dir / f"{PARTIAL}{name}"
        try:
            _write_member(tar, member, partial)
            os.replace(partial, targets[name])
        except BaseException as exc:
            partial.unlink(missing_ok=True)
            if isinstance(exc, (tarfile.TarError, EOFError)):
                raise DataError(f"{name} in {str(archive)!r} is damaged or truncated ({exc}); {DOWNLOAD_HINT}") from exc
            raise
        meter.add()
    for folder in {target.parent for target in targets.values()}:
        fsync_dir(folder)


def _extract_train(
    tar: tarfile.TarFile,
    members: dict[str, tarfile.TarInfo],
    archive: Path,
    train_dir: Path,
    classes: int,
    progress: TextIO | None,
) -> int:
    """Each class of ``members`` (wnid: its inner tar) into ``train_dir``; returns the images written."""
    train_dir.mkdir(parents=True, exist_ok=True)
    meter = _Progress(progress, "train classes", len(members), TRAIN_PROGRESS_EVERY)
    size = sum(m.size for m in members.values())
    meter.say(
        f"train: {classes - len(members):,} of {classes:,} classes already in place; extracting "
        f"{len(members):,} ({size / 1e9:,.1f} GB) from {archive}"
    )
    images = 0
    for wnid, member in sorted(members.items(), key=lambda item: item[1].offset):  # the archive front to back
        images += _extract_class(tar, member, archive, train_dir, wnid)
        meter.add(f", {images:,} images")
    return images


def archive_paths(
    root: str | Path, train: str | Path | None = None, val: str | Path | None = None, devkit: str | Path | None = None
) -> dict[str, Path]:
    """The three archives: as given, else by their official names in ``root``."""
    given = {"train": train, "val": val, "devkit": devkit}
    names = {"train": TRAIN_ARCHIVE, "val": VAL_ARCHIVE, "devkit": DEVKIT_ARCHIVE}
    return {key: Path(given[key]) if given[key] else Path(root) / names[key] for key in names}


def prepare_imagenet(
    root: str | Path,
    train: str | Path | None = None,
    val: str | Path | None = None,
    devkit: str | Path | None = None,
    progress: TextIO | None = sys.stderr,
) -> PrepareResult:
    """Make ``root/train/<wnid>/`` and ``root/val/<wnid>/`` from ImageNet's archives (by default
    ``root``'s ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz),
    finishing whatever an earlier run left undone. Progress lines go to ``progress``.

    Every archive still needed is checked (its member list against the devkit) before anything
    is extracted: a bad val archive is not found out after hours of train extraction.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"{str(root)!r} is a file; give the folder where train/ and val/ should go")
    archives = archive_paths(root, train, val, devkit)
    names, val_wnids = load_meta(root, archives["devkit"])
    wnids = sorted(names)
    train_dir, val_dir = root / "train", root / "val"
    for split_dir in (train_dir, val_dir):
        _remove_partials(split_dir)

    missing_classes = [w for w in wnids if not (train_dir / w).is_dir()]
    val_targets = {_val_name(n): val_dir / wnid / _val_name(n) for n, wnid in enumerate(val_wnids, start=1)}
    missing_val = [name for name, target in val_targets.items() if not target.exists()]
    moved = 0
    for name in missing_val:
        if (val_dir / name).is_file():  # extracted flat by hand (tar xf): only a rename away
            val_targets[name].parent.mkdir(exist_ok=True)
            os.replace(val_dir / name, val_targets[name])
            moved += 1
    if moved:
        missing_val = [name for name in missing_val if not val_targets[name].exists()]

    with contextlib.ExitStack() as stack:
        if missing_val:
            val_tar, val_members = _open_listed(archives["val"], "--val", stack)
            _check_val_members(archives["val"], val_members, len(val_wnids))
        if missing_classes:
            train_tar, listed = _open_listed(archives["train"], "--train", stack)
            train_members = _train_members(archives["train"], listed, wnids)
        if missing_val:
            _extract_val(val_tar, [val_members[name] for name in missing_val], archives["val"], val_targets, progress)
        train_images = 0
        if missing_classes:
            missing_members = {wnid: train_members[wnid] for wnid in missing_classes}
            train_images = _extract_train(
                train_tar, missing_members, archives["train"], train_dir, len(wnids), progress
            )
    return PrepareResult(
        root=str(root),
        classes=len(wnids),
        train_classes_extracted=len(missing_classes),
        train_images_extracted=train_images,
        train_classes_present=len(wnids) - len(missing_classes),
        val_images_placed=moved + len(missing_val),
        val_images_present=len(val_wnids) - moved - len(missing_val),
    )
