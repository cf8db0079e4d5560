"""``data.file_lists``: lists DALI would trust are checked line by line where they are read.

Every refused line is one DataError naming the list, the line number and what to do, raised
before a DALI pipeline is built (the tests make building one fail, to be sure).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from clr_dist.config import DataConfig
from clr_dist.data import dali
from clr_dist.data.check import check_dataset
from clr_dist.data.dali import DaliLoaders, read_file_list
from clr_dist.data.datasets import check_image_folder
from clr_dist.dist import DistInfo
from clr_dist.errors import DataError
from tests.conftest import copy_tree, quick_overrides, run_cli

CLASSES = 10  # of the small demo set


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory, small_demo: Path) -> tuple[Path, Path]:
    """(a copy of the small demo set, the checker's clean lists for it)."""
    folder = tmp_path_factory.mktemp("file-lists")
    root = copy_tree(small_demo, folder / "demo")
    assert check_dataset(root, folder / "lists", workers=1, progress=None).ok
    return root, folder / "lists"


def lists_with(tmp_path: Path, lists: Path, split: str, line: str) -> Path:
    """A copy of ``lists`` whose ``split``.txt has ``line`` in place of its third line."""
    out = tmp_path / "lists"
    shutil.copytree(lists, out)
    lines = (out / f"{split}.txt").read_text().splitlines()
    lines[2] = line
    (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return out


def load(root: Path, lists: Path) -> DaliLoaders:
    cfg = DataConfig(
        root=str(root), loader="dali", batch_size=8, image_size=64, val_resize=64, workers=1, file_lists=str(lists)
    )
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    return DaliLoaders(cfg, info, seed=0, classes=check_image_folder(root).classes)


def outside_image(root: Path, tmp_path: Path) -> Path:
    """A real JPEG outside the dataset, so that a list pointing at it would read fine."""
    return Path(shutil.copy(next((root / "train").rglob("*.JPEG")), tmp_path / "outside.JPEG"))


# name: (split, the line for (dataset root, an image outside it), what the message says about it)
BAD_LINES = {
    "up and out": ("train", lambda root, out: "../../outside.JPEG 0", lambda root, out: "names '../../outside.JPEG'"),
    "up inside a class": ("val", lambda root, out: "c00_disc/../../../outside.JPEG 0", lambda root, out: "'..'"),
    "absolute": ("train", lambda root, out: f"{out} 3", lambda root, out: f"names {str(out)!r}, outside"),
    "label = classes": (
        "train",
        lambda root, out: "c00_disc/x.JPEG 10",
        lambda root, out: f"label 10, outside [0, 10) for the 10 classes of {str(root / 'train')!r}",
    ),
    "label negative": ("val", lambda root, out: "c00_disc/x.JPEG -1", lambda root, out: "label -1, outside [0, 10)"),
    "no label": (
        "train",
        lambda root, out: "c00_disc/x.JPEG",
        lambda root, out: "is 'c00_disc/x.JPEG', not `class/file label`",
    ),
    "label not a number": (
        "val",
        lambda root, out: "c00_disc/x.JPEG one",
        lambda root, out: "not `class/file label`",
    ),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_bad_line_is_refused_by_file_and_line_before_any_pipeline(
    case: str, listed: tuple[Path, Path], tmp_path: Path, monkeypatch
) -> None:
    root, clean = listed
    split, make_line, says = BAD_LINES[case]
    outside = outside_image(root, tmp_path)
    lists = lists_with(tmp_path, clean, split, make_line(root, outside))

    def no_pipeline(*args, **kwargs):
        raise AssertionError("a DALI pipeline was built before the lists were checked")

    monkeypatch.setattr(dali, "build_pipeline", no_pipeline)
    with pytest.raises(DataError) as caught:
        load(root, lists)
    message = str(caught.value)
    assert message.startswith(f"line 3 of {str(lists / f'{split}.txt')!r} (data.file_lists) ")
    assert says(root, outside) in message
    assert message.endswith(f"; fix the line or remake the lists with `clr-dist data check {root} --out DIR`")
    assert "\n" not in message


def test_good_lines_read_as_written(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("c01/a name with spaces.JPEG 3\n\nc00/b.JPEG 0\nc09/c..d.JPEG 9\n")
    files, labels = read_file_list(tmp_path / "train.txt", tmp_path / "root" / "train", 10)
    split_dir = tmp_path / "root" / "train"
    assert files == [
        str(split_dir / "c01/a name with spaces.JPEG"),
        str(split_dir / "c00/b.JPEG"),
        str(split_dir / "c09/c..d.JPEG"),
    ]
    assert labels == [3, 0, 9]


@pytest.mark.slow
def test_train_stops_with_one_line_on_a_bad_list(listed: tuple[Path, Path], tmp_path: Path) -> None:
    root, clean = listed
    lists = lists_with(tmp_path, clean, "val", "c00_disc/x.JPEG 12")
    overrides = quick_overrides(root, "data.loader=dali", f"data.file_lists={lists}", "trainer.max_steps=1")
    result = run_cli(["clr-dist", "train", *overrides], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"clr-dist train: error: line 3 of {str(lists / 'val.txt')!r} (data.file_lists) gives 'c00_disc/x.JPEG' "
        f"label 12, outside [0, 10) for the 10 classes of {str(root / 'val')!r}; fix the line or remake the lists "
        f"with `clr-dist data check {root} --out DIR`"
    )
