from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from clr_dist.data.check import check_dataset, format_summary
from clr_dist.data.datasets import DEMO_CLASSES, make_demo_dataset
from clr_dist.errors import DataError


def _file_list(path: Path) -> dict[str, int]:
    lines = path.read_text().splitlines()
    entries = dict(line.rsplit(" ", 1) for line in lines)
    assert len(entries) == len(lines)
    return {name: int(label) for name, label in entries.items()}


def _expected(root: Path, split: str, classes: list[str], bad: set[str]) -> dict[str, int]:
    return {
        f"{path.parent.name}/{path.name}": classes.index(path.parent.name)
        for path in (root / split).glob("*/*")
        if path.suffix == ".JPEG"
        and f"{split}/{path.parent.name}/{path.name}" not in bad
        and path.parent.name in classes
    }


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    make_demo_dataset(root, train_per_class=3, val_per_class=2)
    return root


def test_a_clean_folder_is_ok_and_lists_every_file(tiny: Path, tmp_path: Path) -> None:
    report = check_dataset(tiny, tmp_path / "out", workers=1, progress=None)
    assert report.ok and report.problems == []
    classes = sorted(DEMO_CLASSES)
    assert report.classes == classes
    assert _file_list(tmp_path / "out" / "train.txt") == _expected(tiny, "train", classes, set())
    assert len(_file_list(tmp_path / "out" / "val.txt")) == 20
    assert report.counts["train"][classes[0]] == {"files": 3, "good": 3}
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["ok"] is True and saved["totals"]["train"] == {"files": 30, "good": 30}
    assert saved["file_lists"]["val"]["file_root"] == str(tiny / "val")
    assert "no problems found" in format_summary(report)


def test_every_problem_is_reported_and_left_out_of_the_lists(tiny: Path, tmp_path: Path) -> None:
    good_jpeg = (tiny / "train" / "c00_disc" / "c00_disc_00000.JPEG").read_bytes()
    planted = {
        "train/c00_disc/truncated.JPEG": ("truncated", good_jpeg[: len(good_jpeg) // 2]),
        "train/c01_square/empty.JPEG": ("empty_file", b""),
        "val/c02_triangle/garbage.JPEG": ("corrupt", b"this is not a JPEG\n" * 40),
        "train/c03_cross/notes.txt": ("not_image", b"some notes\n"),
    }
    for rel, (_, data) in planted.items():
        (tiny / rel).write_bytes(data)
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    planted["train/c04_ring/really_a_gif.JPEG"] = ("unsupported_format", gif.getvalue())
    (tiny / "train/c04_ring/really_a_gif.JPEG").write_bytes(gif.getvalue())
    # A class only in train: reported, and its (good) images keep their train label.
    (tiny / "train" / "c10_extra").mkdir()
    (tiny / "train" / "c10_extra" / "one.JPEG").write_bytes(good_jpeg)
    planted["train/c10_extra"] = ("class_mismatch", b"")
    # The truncated file is why the checker decodes: PIL's verify() accepts it.
    with Image.open(tiny / "train/c00_disc/truncated.JPEG") as image:
        image.verify()

    reports = [check_dataset(tiny, tmp_path / f"out{w}", workers=w, progress=None) for w in (1, 2)]
    assert reports[0].problems == reports[1].problems  # same report whatever the pool size
    report = reports[0]
    assert not report.ok
    assert {p.path: p.kind for p in report.problems} == {rel: kind for rel, (kind, _) in planted.items()}
    assert report.problems[0].kind == "class_mismatch"  # layout problems come first
    truncated = next(p for p in report.problems if p.kind == "truncated")
    assert "truncated" in truncated.message

    classes = sorted([*DEMO_CLASSES, "c10_extra"])
    assert report.classes == classes
    for out in (tmp_path / "out1", tmp_path / "out2"):
        for split in ("train", "val"):
            listed = _file_list(out / f"{split}.txt")
            assert listed == _expected(tiny, split, classes, set(planted))
    assert _file_list(tmp_path / "out1" / "train.txt")["c10_extra/one.JPEG"] == 10
    assert report.counts["train"]["c00_disc"] == {"files": 4, "good": 3}
    assert (report.good("train"), report.good("val")) == (31, 20)

    saved = json.loads((tmp_path / "out1" / "report.json").read_text())
    assert saved["ok"] is False
    assert {(p["path"], p["kind"]) for p in saved["problems"]} == {(p, k) for p, (k, _) in planted.items()}
    assert all(p["message"] for p in saved["problems"])
    summary = format_summary(report)
    assert "6 problems" in summary and "train/c00_disc/truncated.JPEG" in summary


def test_layout_problems_are_all_collected(tiny: Path, tmp_path: Path) -> None:
    (tiny / "train" / "README.txt").write_text("stray")
    (tiny / "train" / "c05_disc" / "nested").mkdir()
    for path in (tiny / "val" / "c06_square").iterdir():
        path.unlink()
    report = check_dataset(tiny, tmp_path / "out", workers=1, progress=None)
    assert {(p.path, p.kind) for p in report.problems} == {
        ("train/README.txt", "stray_file"),
        ("train/c05_disc/nested", "unexpected_dir"),
        ("val/c06_square", "empty_class"),
    }

    os.rename(tiny / "val", tiny / "elsewhere")
    report = check_dataset(tiny, tmp_path / "out", workers=1, progress=None)
    assert ("val", "missing_split") in {(p.path, p.kind) for p in report.problems}
    assert (tmp_path / "out" / "val.txt").read_text() == ""
    assert len(_file_list(tmp_path / "out" / "train.txt")) == 30


def test_progress_lines_and_a_missing_root(tiny: Path, tmp_path: Path) -> None:
    stream = io.StringIO()
    check_dataset(tiny, tmp_path / "out", workers=1, progress=stream, progress_every=10)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 4 and lines[0].startswith("checked ")
    with pytest.raises(DataError, match="does not exist"):
        check_dataset(tmp_path / "nowhere", tmp_path / "out", workers=1, progress=None)
