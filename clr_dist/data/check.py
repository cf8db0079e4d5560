"""The dataset checker: decode every image of an ImageNet-layout folder and list what is wrong.

DALI does not skip a corrupt JPEG: the pipeline dies mid-epoch, on every rank, often hours into a
run. So before training on a folder nobody has checked, decode every file once, here, in a
process pool, and collect *all* the problems (not the first): unreadable, empty, truncated or
corrupt images, non-image files, and layout problems. The result is ``report.json`` and clean
file lists in DALI's ``file_list`` format (``class/file.JPEG label`` per line, relative to the
split folder) that hold only the files that decoded.

Labels are the index of the class folder in the sorted class folder names of ``train`` (of
``val`` when there is no ``train``), as torchvision's ``ImageFolder`` numbers them.

Built for an ImageNet-sized folder (1.28M files): files are listed one class folder at a time,
sent to the workers in chunks with a bounded number of chunks in flight, and no decoded image
outlives its check. Results are consumed in submission order, so the outputs do not depend on
the number of workers.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from PIL import Image, ImageFile, UnidentifiedImageError

from clr_dist.data.datasets import IMAGE_EXTENSIONS
from clr_dist.errors import DataError
from clr_dist.files import atomic_open, atomic_write_text

SPLITS = ("train", "val")
REPORT_NAME = "report.json"
CHUNK_SIZE = 128

# What DALI's image decoders read (by content, whatever the extension). PIL reads more (GIF, ICO,
# ...): such a file passes a PIL check and then kills the DALI pipeline.
DALI_FORMATS = frozenset({"JPEG", "PNG", "BMP", "TIFF", "WEBP", "PPM", "JPEG2000"})

# Problem kinds, each with what to do about it (the summary prints the hint once per kind).
KIND_HINTS = {
    "missing_split": "the root must hold train/<class>/* and val/<class>/*",
    "no_classes": "a split needs one folder per class",
    "class_mismatch": "train and val need the same class folders, or labels disagree",
    "empty_class": "remove the folder or add its images; ImageFolder refuses an empty class",
    "stray_file": "files directly under a split belong to no class; move or delete them",
    "unexpected_dir": "a folder inside a class folder: ImageFolder reads it, DALI's reader does not",
    "bad_name": "a line break in a file name breaks the file_list format; rename the file",
    "not_image": f"the loaders read only {', '.join(IMAGE_EXTENSIONS)} files; move or delete it",
    "empty_file": "a 0-byte file (an interrupted copy?); copy it again or delete it",
    "unreadable": "the file cannot be opened (permissions?)",
    "truncated": "the file ends early (an interrupted copy?); copy it again or delete it",
    "corrupt": "the bytes are not a readable image; copy it again or delete it",
    "unsupported_format": "PIL reads it but DALI's decoders do not; convert it to JPEG",
}
LAYOUT_KINDS = frozenset(
    {"missing_split", "no_classes", "class_mismatch", "empty_class", "stray_file", "unexpected_dir"}
)


@dataclass(frozen=True)
class Problem:
    path: str  # relative to the dataset root, e.g. "train/n01440764/x.JPEG"
    kind: str  # a key of KIND_HINTS
    message: str


@dataclass
class CheckReport:
    """What ``check_dataset`` found; ``ok`` when there is nothing to fix."""

    root: str
    out_dir: str
    classes: list[str]
    # counts[split][class] = {"files": files checked, "good": files that decoded}
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def good(self, split: str) -> int:
        return sum(c["good"] for c in self.counts.get(split, {}).values())

    def files(self, split: str) -> int:
        return sum(c["files"] for c in self.counts.get(split, {}).values())

    def problem_kinds(self) -> Counter[str]:
        return Counter(p.kind for p in self.problems)

    def to_json(self) -> dict:
        return {
            "root": self.root,
            "ok": self.ok,
            "classes": self.classes,
            "file_lists": {
                split: {
                    "file_list": str(Path(self.out_dir) / f"{split}.txt"),
                    "file_root": str(Path(self.root) / split),
                }
                for split in SPLITS
            },
            "totals": {split: {"files": self.files(split), "good": self.good(split)} for split in SPLITS},
            "problem_counts": dict(sorted(self.problem_kinds().items())),
            "problems": [{"path": p.path, "kind": p.kind, "message": p.message} for p in self.problems],
            "counts": self.counts,
            "seconds": round(self.seconds, 1),
        }


def _check_image(path: str) -> tuple[str, str] | None:
    """(kind, message) when ``path`` is not a good image, else None; decodes every pixel."""
    try:
        if os.stat(path).st_size == 0:
            return "empty_file", "0 bytes"
        with Image.open(path) as image:
            image_format = image.format
            # verify() only parses headers and passes truncated JPEGs: decode the whole image.
            image.load()
    except UnidentifiedImageError:
        return "corrupt", "not an image PIL recognises"
    except (PermissionError, IsADirectoryError, FileNotFoundError) as exc:
        return "unreadable", exc.strerror or type(exc).__name__
    except Image.DecompressionBombError as exc:
        return "corrupt", str(exc)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        message = str(exc) or type(exc).__name__
        kind = "truncated" if "truncated" in message or isinstance(exc, EOFError) else "corrupt"
        return kind, message
    if image_format not in DALI_FORMATS:
        return "unsupported_format", f"a {image_format} image"
    return None


def _check_chunk(split_dir: str, names: list[str]) -> list[tuple[int, str, str]]:
    """Check files ``split_dir/name``; return (index in ``names``, kind, message) for the bad ones.

    Runs in a worker process; returns only the problems so that little crosses the pipe.
    """
    # Another module (or a user's sitecustomize) may have told PIL to pad truncated images.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    bad = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF and palette warnings are not problems
            for index, name in enumerate(names):
                found = _check_image(os.path.join(split_dir, name))
                if found is not None:
                    bad.append((index, *found))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return bad


class _InlineExecutor:
    """``workers=1``: the same code path, in this process (easier to debug and to profile)."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def __enter__(self) -> _InlineExecutor:
        return self

    def __exit__(self, *exc) -> None:
        return None


class _Progress:
    """A line on ``stream`` every ``every`` files: plain lines read well in SLURM logs."""

    def __init__(self, stream: TextIO | None, every: int) -> None:
        self.stream, self.every = stream, every
        self.done, self.problems, self.start = 0, 0, time.monotonic()
        self._next = every

    def add(self, files: int, problems: int) -> None:
        self.done += files
        self.problems += problems
        if self.stream is not None and self.done >= self._next:
            self._next = (self.done // self.every + 1) * self.every
            rate = self.done / max(time.monotonic() - self.start, 1e-9)
            print(
                f"checked {self.done:,} files ({rate:,.0f}/s), {self.problems:,} problems so far",
                file=self.stream,
                flush=True,
            )


def _sorted_entries(folder: Path) -> tuple[list[str], list[str]]:
    """(sub-folder names, other names) of ``folder``, each sorted; symlinks are followed."""
    dirs, files = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            (dirs if entry.is_dir() else files).append(entry.name)
    return sorted(dirs), sorted(files)


def check_dataset(
    root: str | Path,
    out_dir: str | Path,
    workers: int | None = None,
    progress: TextIO | None = sys.stderr,
    progress_every: int = 10_000,
) -> CheckReport:
    """Decode every file under ``root/{train,val}/<class>/`` and write what was found to ``out_dir``.

    Writes ``out_dir/report.json`` (every problem with its path, kind and message; counts per
    split and class) and ``out_dir/train.txt`` / ``out_dir/val.txt``: the files that decoded, in
    DALI ``file_list`` format relative to ``root/<split>``. All problems are collected; only a
    missing root raises (DataError). ``workers`` processes decode (default: the usable cores;
    1 runs in this process).
    """
    started = time.monotonic()
    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise DataError(
            f"{str(root)!r} does not exist or is not a directory; give the dataset root that holds train/ and val/"
        )
    workers = workers or len(os.sched_getaffinity(0))
    if workers < 1:
        raise DataError(f"workers must be at least 1, not {workers}")
    out_dir.mkdir(parents=True, exist_ok=True)

    problems: list[Problem] = []
    layout: dict[str, list[str]] = {}  # split -> its class folder names
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            problems.append(Problem(split, "missing_split", f"{split}/ is missing"))
            continue
        class_dirs, stray = _sorted_entries(split_dir)
        problems += [Problem(f"{split}/{name}", "stray_file", "file outside any class folder") for name in stray]
        if not class_dirs:
            problems.append(Problem(split, "no_classes", f"{split}/ has no class folders"))
        layout[split] = class_dirs
    if "train" in layout and "val" in layout:
        for split, other in (("train", "val"), ("val", "train")):
            for name in sorted(set(layout[split]) - set(layout[other])):
                problems.append(
                    Problem(f"{split}/{name}", "class_mismatch", f"class {name!r} is in {split}/ but not in {other}/")
                )
    classes = layout.get("train", layout.get("val", []))
    label_of = {name: label for label, name in enumerate(classes)}
    report = CheckReport(str(root), str(out_dir), classes, problems=problems)

    meter = _Progress(progress, progress_every)
    # A bounded queue of chunks in flight keeps memory flat and results in submission order.
    max_in_flight = 4 * workers
    executor = _InlineExecutor() if workers == 1 else ProcessPoolExecutor(max_workers=workers)
    in_flight: deque[tuple[str, list[str], Future]] = deque()

    def drain(limit: int, split: str, file_list: TextIO) -> None:
        """Collect the oldest chunks' results until at most ``limit`` are in flight."""
        while len(in_flight) > limit:
            class_name, names, future = in_flight.popleft()
            bad = {index: (kind, message) for index, kind, message in future.result()}
            for index, name in enumerate(names):
                if index in bad:
                    problems.append(Problem(f"{split}/{name}", *bad[index]))
                elif class_name in label_of:
                    file_list.write(f"{name} {label_of[class_name]}\n")
            report.counts[split][class_name]["good"] += len(names) - len(bad)
            meter.add(len(names), len(bad))

    with executor:
        for split, class_dirs in layout.items():
            split_dir = root / split
            report.counts[split] = {}
            with atomic_open(out_dir / f"{split}.txt", "w", encoding="utf-8") as file_list:
                for class_name, names in _class_files(split_dir, class_dirs, problems, split):
                    report.counts[split][class_name] = {"files": len(names), "good": 0}
                    for start in range(0, len(names), CHUNK_SIZE):
                        chunk = names[start : start + CHUNK_SIZE]
                        in_flight.append((class_name, chunk, executor.submit(_check_chunk, str(split_dir), chunk)))
                        drain(max_in_flight, split, file_list)
                drain(0, split, file_list)
    for split in SPLITS:
        if split not in layout:  # an empty list, so a stale one from an earlier check cannot linger
            atomic_write_text(out_dir / f"{split}.txt", "")

    # Layout problems first, then file problems by path: the same report whatever the workers.
    problems.sort(key=lambda p: (p.kind not in LAYOUT_KINDS, p.path, p.kind))
    report.seconds = time.monotonic() - started
    atomic_write_text(out_dir / REPORT_NAME, json.dumps(report.to_json(), indent=1) + "\n")
    return report


def _class_files(
    split_dir: Path, class_dirs: list[str], problems: list[Problem], split: str
) -> Iterator[tuple[str, list[str]]]:
    """(class, image paths relative to ``split_dir``) per class folder; other entries become problems."""
    for class_name in class_dirs:
        sub_dirs, files = _sorted_entries(split_dir / class_name)
        for name in sub_dirs:
            problems.append(Problem(f"{split}/{class_name}/{name}", "unexpected_dir", "folder inside a class folder"))
        images = []
        for name in files:
            rel = f"{class_name}/{name}"
            if "\n" in name or "\r" in name:
                problems.append(Problem(f"{split}/{rel}", "bad_name", "line break in the file name"))
            elif os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                problems.append(
                    Problem(
                        f"{split}/{rel}",
                        "not_image",
                        f"extension {os.path.splitext(name)[1] or '(none)'!r} is not an image's",
                    )
                )
            else:
                images.append(rel)
        if not images:
            problems.append(Problem(f"{split}/{class_name}", "empty_class", "class folder with no images"))
        yield class_name, images


def format_summary(report: CheckReport, max_listed: int = 10) -> str:
    """A few lines for a terminal: totals, problems by kind with what to do, the first few problems."""
    lines = [
        f"checked {report.root}: {len(report.classes)} classes, "
        + ", ".join(f"{report.files(s):,} {s} files ({report.good(s):,} good)" for s in SPLITS)
        + f" in {report.seconds:.0f}s"
    ]
    if report.ok:
        lines.append("no problems found")
    else:
        kinds = report.problem_kinds()
        lines.append(f"{len(report.problems):,} problems:")
        for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {count:>7,} {kind}: {KIND_HINTS[kind]}")
        for problem in report.problems[:max_listed]:
            lines.append(f"  {problem.kind:<18} {problem.path}: {problem.message}")
        if len(report.problems) > max_listed:
            lines.append(f"  ... and {len(report.problems) - max_listed:,} more in the report")
    out = Path(report.out_dir)
    lines.append(
        f"report: {out / REPORT_NAME}; clean file lists (DALI file_list, relative to "
        f"{report.root}/<split>): {out / 'train.txt'}, {out / 'val.txt'}"
    )
    return "\n".join(lines)
