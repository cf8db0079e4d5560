"""Atomic files: a reader finds the old contents or the new ones, never a torn file or a stray."""

from __future__ import annotations

from pathlib import Path

import pytest

from clr_dist.files import atomic_open, atomic_write_text, staged_dir


def test_a_write_replaces_the_whole_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("old\n")
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_an_error_while_writing_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "rank0.pt"
    path.write_bytes(b"whole old checkpoint")
    with pytest.raises(RuntimeError, match="killed mid-write"), atomic_open(path, "wb") as handle:
        handle.write(b"half of a new one")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"whole old checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.pt"]  # the temporary file is gone


def test_only_whole_file_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode 'w' or 'wb', not 'a'"), atomic_open(tmp_path / "x", "a"):
        pass


def test_a_staged_folder_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    with pytest.raises(KeyboardInterrupt), staged_dir(out) as staging:
        (staging / "train").mkdir()
        raise KeyboardInterrupt  # an interrupted dataset maker
    assert list(tmp_path.iterdir()) == []  # neither the set nor its staging folder
    out.mkdir()  # an empty folder may be taken over
    with staged_dir(out) as staging:
        (staging / "marker.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["demo"] and (out / "marker.json").read_text() == "{}"
