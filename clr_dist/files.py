"""Files that must never be seen half-written: write beside the target, fsync, rename over it.

A reader (another rank, a resumed run, a user's ``tail``) sees the old file or the new one,
never a torn one, and after ``atomic_open`` returns the new file survives a crash: its bytes
and the rename are both on disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on leaving the block without an
    error, flush it, fsync it and rename it over ``path``. On an error the temporary file is
    removed and ``path`` is left as it was. ``mode`` is ``"w"`` or ``"wb"``; ``kwargs`` go to
    ``open`` (``encoding``, ``newline``)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    # Unique per process, so ranks writing beside each other never share a temporary file.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path``'s contents with ``text`` atomically (UTF-8)."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def fsync_dir(directory: str | Path) -> None:
    """Make the entries of ``directory`` (a rename into it) survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out`` to build a whole tree in. On leaving the block without an
    error it takes the place of ``out`` (absent, or an empty folder) in one rename, so a
    half-written tree is never found at ``out``; on an error it is deleted."""
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # left by a process that was killed
    staging.mkdir(parents=True)
    try:
        yield staging
        if out.exists():
            out.rmdir()  # refuses anything but an empty folder
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(out.parent)
