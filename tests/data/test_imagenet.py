"""`clr-dist data imagenet`: ImageNet's three official archives to the folder layout, resumably.

No ImageNet here: every archive is built in the test in the official structure, only smaller.
The devkit holds ``ILSVRC2012_devkit_t12/data/meta.mat`` (the ``synsets`` struct array, written
with scipy as MATLAB wrote it, three leaf classes and one parent synset) and the validation ground
truth; the train archive holds one inner tar of real 16x16 JPEGs per class; the val archive holds
the JPEGs flat, named ``ILSVRC2012_val_<8 digits>.JPEG``.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from clr_dist.data import imagenet
from clr_dist.data.check import check_dataset
from clr_dist.data.imagenet import GROUND_TRUTH, META_MAT, prepare_imagenet, read_devkit
from clr_dist.errors import DataError
from tests.conftest import run_cli

# ILSVRC2012_ID -> (WNID, words); the IDs are not in wnid order, as in the real meta.mat.
LEAVES = {
    1: ("n02119789", "kit fox, Vulpes macrotis"),
    2: ("n01440764", "tench, Tinca tinca"),
    3: ("n04592741", "wing"),
}
PARENT = (4, "n00001740", "entity")  # a synset with children: not a class
WNIDS = sorted(wnid for wnid, _ in LEAVES.values())
GROUND_TRUTH_IDS = [2, 1, 3, 3, 1, 2, 1]  # of val images 1 to 7
TRAIN_PER_CLASS = 3


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def meta_mat() -> bytes:
    """``synsets`` as in the devkit: a column of structs with these fields, in this order."""
    fields = [
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    rows = [
        (index, wnid, words, f"gloss of {wnid}", 0, np.zeros((1, 0)), 0, TRAIN_PER_CLASS)
        for index, (wnid, words) in LEAVES.items()
    ]
    rows.append((PARENT[0], PARENT[1], PARENT[2], "everything", 3, np.array([1, 2, 3]), 1, 0))
    synsets = np.array(rows, dtype=[(name, "O") for name in fields]).reshape(-1, 1)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": synsets})
    return buffer.getvalue()


def devkit_members(ground_truth: list[int] = GROUND_TRUTH_IDS) -> dict[str, bytes]:
    return {
        META_MAT: meta_mat(),
        GROUND_TRUTH: "".join(f"{i}\n" for i in ground_truth).encode(),
        "ILSVRC2012_devkit_t12/readme.txt": b"the devkit\n",
    }


@dataclass(frozen=True)
class Archives:
    train: Path
    val: Path
    devkit: Path
    train_images: dict[str, dict[str, bytes]]  # wnid -> file name -> bytes
    val_images: dict[str, bytes]  # file name -> bytes
    val_class: dict[str, str]  # file name -> the wnid the ground truth gives it

    def options(self) -> dict[str, Path]:
        return {"train": self.train, "val": self.val, "devkit": self.devkit}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Archives:
    folder = tmp_path_factory.mktemp("imagenet-archives")
    train_images = {
        wnid: {f"{wnid}_{k}.JPEG": jpeg(10 * c + k) for k in range(TRAIN_PER_CLASS)} for c, wnid in enumerate(WNIDS)
    }
    # Inner tars in the archive in an order other than the sorted one.
    train = write_tar(
        folder / "ILSVRC2012_img_train.tar",
        {f"{wnid}.tar": tar_bytes(train_images[wnid]) for wnid in reversed(WNIDS)},
    )
    val_images = {f"ILSVRC2012_val_{n:08d}.JPEG": jpeg(100 + n) for n in range(1, len(GROUND_TRUTH_IDS) + 1)}
    val = write_tar(folder / "ILSVRC2012_img_val.tar", val_images)
    devkit = write_tar(folder / "ILSVRC2012_devkit_t12.tar.gz", devkit_members(), mode="w:gz")
    val_class = {f"ILSVRC2012_val_{n:08d}.JPEG": LEAVES[i][0] for n, i in enumerate(GROUND_TRUTH_IDS, start=1)}
    return Archives(train, val, devkit, train_images, val_images, val_class)


def layout(root: Path) -> dict[str, dict[str, dict[str, bytes]]]:
    """split -> class folder -> file name -> bytes, of everything under root/train and root/val
    (a file directly under a split shows as an empty entry)."""
    return {
        split: {
            entry.name: {path.name: path.read_bytes() for path in entry.iterdir()} if entry.is_dir() else {}
            for entry in sorted((root / split).iterdir())
        }
        for split in ("train", "val")
    }


def expected_layout(archives: Archives) -> dict[str, dict[str, dict[str, bytes]]]:
    val: dict[str, dict[str, bytes]] = {wnid: {} for wnid in WNIDS}
    for name, wnid in archives.val_class.items():
        val[wnid][name] = archives.val_images[name]
    return {"train": archives.train_images, "val": val}


def stats(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) of a folder and everything in it: equal only if nothing was rewritten."""
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in [folder, *folder.rglob("*")]}


def test_the_archives_become_class_folders_with_each_val_image_in_its_ground_truth_class(
    archives: Archives, tmp_path: Path
) -> None:
    root = tmp_path / "imagenet"
    root.mkdir()
    for path in (archives.train, archives.val, archives.devkit):  # found in ROOT by their official names
        shutil.copy(path, root)
    progress = io.StringIO()
    result = prepare_imagenet(root, progress=progress)

    assert layout(root) == expected_layout(archives)
    assert layout(root)["val"]["n02119789"].keys() == {
        "ILSVRC2012_val_00000002.JPEG",
        "ILSVRC2012_val_00000005.JPEG",
        "ILSVRC2012_val_00000007.JPEG",
    }
    assert (result.classes, result.train_classes_extracted, result.train_images_extracted) == (3, 3, 9)
    assert (result.train_classes_present, result.val_images_placed, result.val_images_present) == (0, 7, 0)
    lines = progress.getvalue().splitlines()
    assert lines[0].startswith("val: 0 of 7 images already in place; extracting 7 from ")
    assert lines[1].startswith("val images: 7/7 done")
    assert lines[2].startswith("train: 0 of 3 classes already in place; extracting 3 (0.0 GB) from ")
    assert lines[3].startswith("train classes: 3/3 done") and lines[3].endswith(", 9 images")
    # torchvision reads the cache it would have written itself, and the folders as they are.
    from torchvision.datasets import ImageNet
    from torchvision.datasets.imagenet import load_meta_file

    wnid_to_classes, val_wnids = load_meta_file(str(root))
    assert wnid_to_classes == {wnid: tuple(words.split(", ")) for wnid, words in LEAVES.values()}
    assert val_wnids == [LEAVES[i][0] for i in GROUND_TRUTH_IDS]
    dataset = ImageNet(str(root), split="val")
    assert dataset.wnids == WNIDS and len(dataset) == 7
    assert dataset.classes[WNIDS.index("n01440764")] == ("tench", "Tinca tinca")
    assert check_dataset(root, tmp_path / "check", workers=1, progress=None).ok


def test_the_devkit_is_read_as_torchvision_reads_it(archives: Archives, tmp_path: Path, monkeypatch) -> None:
    """torchvision's parse_devkit_archive on the same archive writes the same metadata: the
    generated meta.mat has the structure torchvision expects, and both parsers agree."""
    from torchvision.datasets import imagenet as torchvision_imagenet

    # It accepts only the official archive's MD5; everything else about it runs as shipped.
    monkeypatch.setattr(torchvision_imagenet, "_verify_archive", lambda *args: None)
    torchvision_imagenet.parse_devkit_archive(str(tmp_path), str(archives.devkit))
    assert torch.load(tmp_path / "meta.bin", weights_only=True) == read_devkit(archives.devkit)


def test_a_rerun_finishes_an_interrupted_run_and_leaves_complete_classes_alone(
    archives: Archives, tmp_path: Path
) -> None:
    root = tmp_path / "imagenet"
    prepare_imagenet(root, **archives.options(), progress=None)
    # As a killed run leaves it: a class half-written in its temporary folder, never renamed;
    # two val images not yet extracted, one of them half-written.
    shutil.rmtree(root / "train" / "n02119789")
    (root / "train" / ".partial-n02119789").mkdir()
    (root / "train" / ".partial-n02119789" / "n02119789_0.JPEG").write_bytes(b"half a JPEG")
    (root / "val" / "n04592741" / "ILSVRC2012_val_00000003.JPEG").unlink()
    (root / "val" / "n01440764" / "ILSVRC2012_val_00000006.JPEG").unlink()
    (root / "val" / ".partial-ILSVRC2012_val_00000003.JPEG").write_bytes(b"half")
    complete = [root / "train" / "n01440764", root / "train" / "n04592741", root / "val" / "n02119789"]
    untouched = [stats(folder) for folder in complete]

    progress = io.StringIO()
    result = prepare_imagenet(root, **archives.options(), progress=progress)
    assert layout(root) == expected_layout(archives)  # no .partial-* left, nothing missing
    assert [stats(folder) for folder in complete] == untouched
    assert (result.train_classes_extracted, result.train_images_extracted, result.train_classes_present) == (1, 3, 2)
    assert (result.val_images_placed, result.val_images_present) == (2, 5)
    assert "train: 2 of 3 classes already in place; extracting 1 " in progress.getvalue()

    # Nothing left to do: no archive is opened, so all may be gone (the devkit's metadata is
    # read back from the meta.bin of the first run).
    before = stats(root / "train") | stats(root / "val")
    gone = tmp_path / "deleted"
    result = prepare_imagenet(root, train=gone, val=gone, devkit=gone, progress=None)
    assert (result.train_classes_extracted, result.val_images_placed) == (0, 0)
    assert stats(root / "train") | stats(root / "val") == before


def test_a_run_stopped_mid_class_leaves_no_half_class_and_the_rerun_does_only_the_rest(
    archives: Archives, tmp_path: Path, monkeypatch
) -> None:
    root = tmp_path / "imagenet"
    write_member = imagenet._write_member
    writes = []

    def stop_in_the_second_class(tar, member, path):
        writes.append(path)
        # 7 val images, then 3 images of the first class, then 1 of the second: stop there.
        if len(writes) == 7 + TRAIN_PER_CLASS + 2:
            raise KeyboardInterrupt
        write_member(tar, member, path)

    monkeypatch.setattr(imagenet, "_write_member", stop_in_the_second_class)
    with pytest.raises(KeyboardInterrupt):
        prepare_imagenet(root, **archives.options(), progress=None)
    first = WNIDS[-1]  # the archive's first inner tar
    assert sorted(p.name for p in (root / "train").iterdir()) == [first]
    done = stats(root / "train" / first)

    monkeypatch.setattr(imagenet, "_write_member", write_member)
    result = prepare_imagenet(root, **archives.options(), progress=None)
    assert layout(root) == expected_layout(archives)
    assert stats(root / "train" / first) == done
    assert (result.train_classes_extracted, result.train_classes_present, result.val_images_present) == (2, 1, 7)


def test_val_images_extracted_flat_by_hand_are_moved_into_their_classes(archives: Archives, tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    (root / "val").mkdir(parents=True)
    with tarfile.open(archives.val) as tar:  # what `tar xf ILSVRC2012_img_val.tar -C val` leaves
        tar.extractall(root / "val", filter="data")
    inodes = {p.name: p.stat().st_ino for p in (root / "val").iterdir()}
    result = prepare_imagenet(root, **{**archives.options(), "val": tmp_path / "deleted.tar"}, progress=None)
    assert layout(root) == expected_layout(archives)
    assert {p.name: p.stat().st_ino for p in (root / "val").glob("*/*")} == inodes  # renamed, not rewritten
    assert (result.val_images_placed, result.val_images_present) == (7, 0)


def _refused(tmp_path: Path, **archives: Path) -> str:
    """The one-line message of preparing into a fresh folder; no image may have been written."""
    root = tmp_path / "imagenet"
    with pytest.raises(DataError) as caught:
        prepare_imagenet(root, **archives, progress=None)
    message = str(caught.value)
    assert "\n" not in message
    assert not [p for p in root.rglob("*") if p.is_file() and p.name != "meta.bin"]
    shutil.rmtree(root, ignore_errors=True)
    return message


def test_missing_archives_are_named_with_where_they_were_looked_for(archives: Archives, tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    message = _refused(tmp_path)
    assert message == (
        f"ILSVRC2012_devkit_t12.tar.gz not found: looked for {str(root / 'ILSVRC2012_devkit_t12.tar.gz')!r}; "
        "put it there or give its path with --devkit FILE"
    )
    message = _refused(tmp_path, devkit=archives.devkit, val=archives.val)
    assert message == (
        f"ILSVRC2012_img_train.tar not found: looked for {str(root / 'ILSVRC2012_img_train.tar')!r}; "
        "put it there or give its path with --train FILE"
    )
    message = _refused(tmp_path, devkit=archives.devkit, train=archives.train, val=tmp_path / "dl" / "val.tar")
    assert message.startswith(f"val.tar not found: looked for {str(tmp_path / 'dl' / 'val.tar')!r}")
    assert message.endswith("--val FILE")


def test_a_devkit_without_the_ground_truth_is_refused(archives: Archives, tmp_path: Path) -> None:
    members = devkit_members()
    del members[GROUND_TRUTH]
    devkit = write_tar(tmp_path / "devkit.tar.gz", members, mode="w:gz")
    message = _refused(tmp_path, **{**archives.options(), "devkit": devkit})
    assert message.startswith(
        f"{str(devkit)!r} holds no ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt: "
        "it is not the ILSVRC2012 devkit for tasks 1 and 2"
    )
    devkit = write_tar(tmp_path / "devkit2.tar.gz", devkit_members([1, 2, 9]), mode="w:gz")
    message = _refused(tmp_path, **{**archives.options(), "devkit": devkit})
    assert "line 3 of ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt" in message
    assert "is '9', not the ILSVRC2012_ID of a class" in message


def test_archives_that_do_not_match_the_devkit_are_refused_before_anything_is_extracted(
    archives: Archives, tmp_path: Path
) -> None:
    short_val = write_tar(tmp_path / "val.tar", dict(list(archives.val_images.items())[:-1]))
    message = _refused(tmp_path, **{**archives.options(), "val": short_val})
    assert message.startswith(f"{str(short_val)!r} holds 6 images but the devkit's ground truth lists 7:")

    renamed = {name.replace("val_", "test_"): data for name, data in archives.val_images.items()}
    message = _refused(tmp_path, **{**archives.options(), "val": write_tar(tmp_path / "test.tar", renamed)})
    assert "holds 'ILSVRC2012_test_00000001.JPEG', not one of ILSVRC2012_val_00000001.JPEG to" in message

    with tarfile.open(archives.train) as tar:
        inner = {m.name: tar.extractfile(m).read() for m in tar if m.name != "n02119789.tar"}
    message = _refused(tmp_path, **{**archives.options(), "train": write_tar(tmp_path / "t.tar", inner)})
    assert "lacks 1 of the devkit's 3 classes (n02119789.tar): the archive is incomplete" in message

    with tarfile.open(archives.train) as tar:
        last = max(tar.getmembers(), key=lambda m: m.offset)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archives.train.read_bytes()[: last.offset_data + last.size // 2])  # an interrupted download
    message = _refused(tmp_path, **{**archives.options(), "train": cut})
    assert message.startswith(f"{str(cut)!r} is truncated (unexpected end of data); download it again from https://")


@pytest.mark.slow
def test_cli_prepares_checks_and_reports_errors_in_one_line(archives: Archives, tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    options = ["--train", str(archives.train), "--val", str(archives.val), "--devkit", str(archives.devkit)]
    result = run_cli(["clr-dist", "data", "imagenet", str(root), *options, "--workers", "1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"ImageNet at {root}: 3 classes; train: 3 classes extracted (9 images), 0 already there; "
        "val: 7 images placed, 0 already there"
    )
    assert lines[1].startswith(f"checked {root}: 3 classes, 9 train files (9 good), 7 val files (7 good)")
    assert lines[2] == "no problems found"
    assert (tmp_path / "imagenet-check" / "report.json").is_file()
    assert "train classes: 3/3 done" in result.stderr

    empty = tmp_path / "empty"
    result = run_cli(["clr-dist", "data", "imagenet", str(empty), "--no-check"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"clr-dist data: error: ILSVRC2012_devkit_t12.tar.gz not found: looked for "
        f"{str(empty / 'ILSVRC2012_devkit_t12.tar.gz')!r}; put it there or give its path with --devkit FILE"
    )
