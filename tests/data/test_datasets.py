from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clr_dist.data.datasets import DEMO_CLASSES, check_image_folder, make_demo_dataset, render_demo_image
from clr_dist.errors import DataError
from tests.conftest import copy_tree


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.JPEG")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_demo_set_has_the_imagenet_layout_and_counts(small_demo: Path) -> None:
    summary = check_image_folder(small_demo)
    assert summary.classes == sorted(DEMO_CLASSES) and len(summary.classes) == 10
    assert (summary.train_count, summary.val_count) == (240, 70)
    for split, per_class in (("train", 24), ("val", 7)):
        for name in DEMO_CLASSES:
            files = sorted((small_demo / split / name).glob("*.JPEG"))
            assert len(files) == per_class
    with Image.open(next((small_demo / "train" / DEMO_CLASSES[0]).glob("*.JPEG"))) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (64, 64)


def test_demo_set_is_deterministic(tmp_path: Path, small_demo: Path) -> None:
    again = tmp_path / "again"
    make_demo_dataset(again, train_per_class=24, val_per_class=7)
    assert _digest(again) == _digest(small_demo)
    other_seed = tmp_path / "other"
    make_demo_dataset(other_seed, train_per_class=24, val_per_class=7, seed=1)
    assert _digest(other_seed) != _digest(small_demo)


def test_train_and_val_images_differ() -> None:
    train = np.asarray(render_demo_image(3, seed=0))
    val = np.asarray(render_demo_image(3, seed=1 << 20))
    assert not np.array_equal(train, val)


def test_classes_differ_in_colour_statistics() -> None:
    """Learnable: the class's hue shows in the mean colour of its images."""
    means = [
        np.mean([np.asarray(render_demo_image(c, seed=s), dtype=float).mean(axis=(0, 1)) for s in range(40)], axis=0)
        for c in range(10)
    ]
    distances = [np.linalg.norm(means[a] - means[b]) for a in range(10) for b in range(a + 1, 10)]
    assert min(distances) > 3.0


def test_existing_demo_set_is_reused_not_rewritten(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    make_demo_dataset(root, train_per_class=2, val_per_class=1)
    probe = next((root / "train").rglob("*.JPEG"))
    mtime = probe.stat().st_mtime_ns
    make_demo_dataset(root, train_per_class=2, val_per_class=1)
    assert probe.stat().st_mtime_ns == mtime


def test_make_demo_refuses_a_folder_with_other_files(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a clr_dist demo set; choose an empty or new directory"):
        make_demo_dataset(tmp_path, train_per_class=1, val_per_class=1)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_missing_root_is_reported(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"does not exist or is not a directory; make one with `clr-dist data make-demo"
    ):
        check_image_folder(tmp_path / "nope")


def test_empty_root_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is empty"):
        check_image_folder(tmp_path)


def test_missing_split_is_reported(tmp_path: Path, small_demo: Path) -> None:
    root = tmp_path / "d"
    copy_tree(small_demo / "train", root / "train")
    with pytest.raises(DataError, match=r"val' is missing: data.root must hold train/<class>/\*.JPEG"):
        check_image_folder(root)


def test_images_directly_in_split_are_reported(tmp_path: Path) -> None:
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        render_demo_image(0, 0).save(tmp_path / split / "a.JPEG")
    with pytest.raises(DataError, match=r"has no class folders: expected train/<class>/\*.JPEG"):
        check_image_folder(tmp_path)


def test_class_mismatch_is_reported(tmp_path: Path, small_demo: Path) -> None:
    root = copy_tree(small_demo, tmp_path / "d")
    shutil.rmtree(root / "val" / DEMO_CLASSES[4])
    with pytest.raises(
        DataError, match=rf"train and val class folders differ .*only in train: \['{DEMO_CLASSES[4]}'\]"
    ):
        check_image_folder(root)


def test_empty_class_folder_is_reported(tmp_path: Path, small_demo: Path) -> None:
    root = copy_tree(small_demo, tmp_path / "d")
    for f in (root / "train" / DEMO_CLASSES[2]).iterdir():
        f.unlink()
    with pytest.raises(DataError, match=rf"class folder .*{DEMO_CLASSES[2]}' holds no images"):
        check_image_folder(root)


def test_make_demo_refuses_a_demo_set_with_other_settings(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    make_demo_dataset(root, train_per_class=2, val_per_class=1)
    with pytest.raises(
        DataError, match=r"holds a clr_dist demo set made with other settings: train_per_class=2 \(asked 3\)"
    ):
        make_demo_dataset(root, train_per_class=3, val_per_class=1)
    assert check_image_folder(root).train_count == 20
