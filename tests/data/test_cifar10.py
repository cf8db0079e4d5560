"""`clr-dist data cifar10`: the binary archive, read straight out of the tar, to 32x32 PNG folders.

No download: every archive here is built in the test with tarfile, in CIFAR-10's binary format
(3,073-byte records: label, then the red, green and blue planes), only with fewer records per
file than the official 10,000 (the reader takes any whole number of records up to 10,000).
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clr_dist.data.cifar10 import CLASSES, convert_cifar10
from clr_dist.errors import DataError
from tests.conftest import compose_train, run_cli

PER_CLASS = 3  # records of each class in each batch file
BATCHES = [f"data_batch_{k}.bin" for k in range(1, 6)]
TEST = "test_batch.bin"
META = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n"  # blank line: as the real one


def batch_bytes(seed: int, per_class: int = PER_CLASS) -> bytes:
    """``per_class`` records of each label 0-9, in a shuffled order, with random pixels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
    rows = rng.integers(0, 256, (len(labels), 3073), dtype=np.uint8)
    rows[:, 0] = labels
    return rows.tobytes()


def binary_members() -> dict[str, bytes]:
    """The members of a small binary archive, by their path in it."""
    members = {f"cifar-10-batches-bin/{name}": batch_bytes(seed) for seed, name in enumerate([*BATCHES, TEST])}
    members["cifar-10-batches-bin/batches.meta.txt"] = META
    return members


def write_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        folders = sorted({name.split("/")[0] for name in members if "/" in name})
        for folder in folders:  # the folder entry first, as `tar czf` writes it
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def split_records(members: dict[str, bytes], split: str) -> np.ndarray:
    """The split's records, N x 3,073, in the order the converter numbers them."""
    names = BATCHES if split == "train" else [TEST]
    data = b"".join(members[f"cifar-10-batches-bin/{name}"] for name in names)
    return np.frombuffer(data, np.uint8).reshape(-1, 3073)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    members = binary_members()
    return write_tar(tmp_path_factory.mktemp("cifar") / "cifar-10-binary.tar.gz", members), members


@pytest.fixture(scope="module")
def converted(archive, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cifar-out") / "cifar10"
    convert_cifar10(out, archive[0])
    return out


def index_of(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


def test_every_record_becomes_its_png_with_the_exact_pixels(archive, converted: Path) -> None:
    _, members = archive
    for split, count in (("train", 5 * 10 * PER_CLASS), ("val", 10 * PER_CLASS)):
        records = split_records(members, split)
        assert len(records) == count
        assert sorted(p.name for p in (converted / split).iterdir()) == list(CLASSES)
        seen = []
        for class_index, name in enumerate(CLASSES):
            files = sorted((converted / split / name).iterdir())
            assert len(files) == count // 10
            for path in files:
                assert path.name == f"{name}_{index_of(path):05d}.png"
                record = records[index_of(path)]
                assert record[0] == class_index  # in the folder of its label
                with Image.open(path) as image:
                    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (32, 32))
                    pixels = np.asarray(image)
                # Lossless: channel c is the record's c-th plane of 1,024 bytes, row by row.
                for channel in range(3):
                    plane = record[1 + 1024 * channel : 1 + 1024 * (channel + 1)].reshape(32, 32)
                    assert np.array_equal(pixels[..., channel], plane)
                seen.append(index_of(path))
        assert sorted(seen) == list(range(count))  # every record exactly once


def test_limit_per_class_keeps_the_first_images_of_each_class(archive, tmp_path: Path) -> None:
    source, members = archive
    summary = convert_cifar10(tmp_path / "out", source, limit_per_class=2)
    assert (summary.classes, summary.train_count, summary.val_count) == (list(CLASSES), 20, 20)
    for split in ("train", "val"):
        labels = split_records(members, split)[:, 0]
        for class_index, name in enumerate(CLASSES):
            indices = sorted(index_of(p) for p in (tmp_path / "out" / split / name).iterdir())
            assert indices == np.flatnonzero(labels == class_index)[:2].tolist()


def test_a_finished_conversion_is_reused_and_other_folders_refused(archive, converted: Path, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in converted.rglob("*")}
    summary = convert_cifar10(converted, archive[0])
    assert (summary.train_count, summary.val_count) == (150, 30)
    assert {p: p.stat().st_mtime_ns for p in converted.rglob("*")} == before
    # Reuse does not read the archive.
    assert convert_cifar10(converted, tmp_path / "gone.tar.gz") == summary
    with pytest.raises(DataError, match="other settings: limit_per_class=None"):
        convert_cifar10(converted, archive[0], limit_per_class=2)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="already holds files that are not a clr_dist CIFAR-10 set"):
        convert_cifar10(tmp_path / "mine", archive[0])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".*partial*")) and not list(converted.parent.glob(".*partial*"))


def test_an_uncompressed_tar_with_dot_slash_names_converts(tmp_path: Path) -> None:
    members = {f"./{name}": data for name, data in binary_members().items()}
    source = write_tar(tmp_path / "cifar-10-binary.tar", members, mode="w")
    summary = convert_cifar10(tmp_path / "out", source, limit_per_class=1)
    assert (summary.train_count, summary.val_count) == (10, 10)


def _refused(source: Path, out: Path) -> str:
    """The one-line message of converting ``source`` into ``out``; nothing may be left behind."""
    with pytest.raises(DataError) as caught:
        convert_cifar10(out, source)
    message = str(caught.value)
    assert "\n" not in message
    assert not out.exists() and not list(out.parent.glob(".*partial*"))
    return message


def test_the_pickled_python_version_is_refused_without_unpickling(tmp_path: Path) -> None:
    # The Python version's layout; its members are arbitrary bytes (nothing here is a pickle).
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch", "batches.meta", "readme.html"]
    source = write_tar(tmp_path / "cifar-10-python.tar.gz", {f"cifar-10-batches-py/{n}": b"\x80\x02}q" for n in names})
    message = _refused(source, tmp_path / "out")
    assert str(source) in message
    assert "pickled Python version" in message and "never unpickles" in message
    assert "cifar-10-binary.tar.gz" in message and "https://www.cs.toronto.edu/~kriz/cifar.html" in message


@pytest.mark.parametrize(
    "content",
    [b"airplane,automobile,bird\n" * 50, b"", gzip.compress(b"a gzipped file that is no tar " * 40)],
    ids=["text", "empty", "gzip-of-text"],
)
def test_a_file_that_is_not_a_tar_is_refused(tmp_path: Path, content: bytes) -> None:
    source = tmp_path / "cifar-10-binary.tar.gz"
    source.write_bytes(content)
    message = _refused(source, tmp_path / "out")
    assert f"{str(source)!r} is not a tar archive" in message and "cifar-10-binary.tar.gz from" in message


def test_a_missing_archive_or_a_folder_is_refused(tmp_path: Path) -> None:
    assert "does not exist" in _refused(tmp_path / "nowhere.tar.gz", tmp_path / "out")
    assert "is a folder" in _refused(tmp_path, tmp_path / "out")


def test_a_truncated_batch_file_is_refused_by_name(tmp_path: Path) -> None:
    members = binary_members()
    members["cifar-10-batches-bin/data_batch_3.bin"] = members["cifar-10-batches-bin/data_batch_3.bin"][:-100]
    message = _refused(write_tar(tmp_path / "a.tar.gz", members), tmp_path / "out")
    assert (
        "'cifar-10-batches-bin/data_batch_3.bin'" in message and "not a whole number of 3,073-byte records" in message
    )
    assert "truncated or damaged" in message and "download cifar-10-binary.tar.gz" in message


def test_a_truncated_or_corrupt_archive_is_refused(tmp_path: Path) -> None:
    raw = write_tar(tmp_path / "good.tar.gz", binary_members()).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(raw[: len(raw) // 2])  # an interrupted download
    message = _refused(cut, tmp_path / "out")
    assert "is truncated or damaged" in message and "download cifar-10-binary.tar.gz" in message
    # One flipped byte inside the compressed data: tar would stop quietly, gzip's CRC does not.
    flipped = bytearray(raw)
    flipped[len(raw) // 3] ^= 0xFF
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(bytes(flipped))
    assert "is truncated or damaged" in _refused(damaged, tmp_path / "out")


def test_missing_members_bad_labels_and_bad_names_are_refused(tmp_path: Path) -> None:
    members = binary_members()
    del members["cifar-10-batches-bin/test_batch.bin"]
    message = _refused(write_tar(tmp_path / "a.tar.gz", members), tmp_path / "out")
    assert "lacks cifar-10-batches-bin/test_batch.bin" in message

    members = binary_members()
    rows = bytearray(members["cifar-10-batches-bin/data_batch_2.bin"])
    rows[4 * 3073] = 10  # record 4's label
    members["cifar-10-batches-bin/data_batch_2.bin"] = bytes(rows)
    message = _refused(write_tar(tmp_path / "b.tar.gz", members), tmp_path / "out")
    assert "record 4 of cifar-10-batches-bin/data_batch_2.bin" in message and "label 10" in message

    members = binary_members()
    members["cifar-10-batches-bin/test_batch.bin"] = bytes(10_001 * 3073)  # one record more than CIFAR-10's
    message = _refused(write_tar(tmp_path / "e.tar.gz", members), tmp_path / "out")
    assert "'cifar-10-batches-bin/test_batch.bin'" in message and "more than CIFAR-10's 10,000 records" in message

    others = write_tar(tmp_path / "f.tar.gz", {"photos/cat.png": b"x", "photos/dog.png": b"y"})
    message = _refused(others, tmp_path / "out")
    assert "holds none of CIFAR-10's binary files" in message and "photos/cat.png" in message

    members = binary_members()
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\nautomobile\n"
    assert "names 2 classes, not 10" in _refused(write_tar(tmp_path / "c.tar.gz", members), tmp_path / "out")

    members = binary_members()
    members["cifar-10-batches-bin/test_batch.bin"] = batch_bytes(9)[: 3 * 3073]  # three records: classes absent
    message = _refused(write_tar(tmp_path / "d.tar.gz", members), tmp_path / "out")
    assert "has no val images of class" in message


def test_the_presets_compose() -> None:
    data = compose_train(["data=cifar10"]).data
    assert (data.name, data.root, data.image_size, data.val_resize) == ("cifar10", "data/cifar10", 32, 32)
    assert data.mean == pytest.approx((0.4914, 0.4822, 0.4465)) and data.std == pytest.approx((0.2470, 0.2435, 0.2616))
    assert tuple(data.crop_scale) == (0.35, 1.0)
    fmnist, fmnist28 = (compose_train([f"data={name}"]).data for name in ("fashion_mnist", "fashion_mnist_28"))
    assert (fmnist28.root, fmnist28.image_size, fmnist28.val_resize) == (fmnist.root, 28, 28)
    assert (fmnist28.mean, fmnist28.std) == (fmnist.mean, fmnist.std)


@pytest.mark.parametrize("loader", ["torchvision", "dali"])
def test_both_loaders_read_the_pngs(archive, converted: Path, loader: str) -> None:
    from clr_dist.data import build_loaders
    from clr_dist.dist import DistInfo

    cfg = compose_train(
        ["data=cifar10", f"data.root={converted}", f"data.loader={loader}", "data.batch_size=10", "data.workers=1"]
    ).data
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    loaders = build_loaders(cfg, info, seed=0)
    assert (loaders.classes, loaders.train_size, loaders.val_size) == (list(CLASSES), 150, 30)
    images, targets = next(iter(loaders.train_epoch(0)))
    assert images.shape == (10, 3, 32, 32)
    images, targets = next(iter(loaders.val_batches()))
    assert images.shape == (10, 3, 32, 32)
    # Validation reads in file order: the first image is airplane's first, label 0.
    first = min((converted / "val" / "airplane").iterdir())
    assert int(targets[0]) == 0
    record = split_records(archive[1], "val")[index_of(first)]
    pixels = record[1:].reshape(3, 32, 32).astype(np.float32) / 255
    mean, std = (np.array(v, np.float32).reshape(3, 1, 1) for v in (cfg.mean, cfg.std))
    # 32 -> 32 is no resize: the image comes through as stored, normalised (float rounding only).
    assert np.abs(images[0].numpy() - (pixels - mean) / std).max() < 1e-4


@pytest.mark.slow
def test_cli_converts_and_reports_bad_input_in_one_line(archive, tmp_path: Path) -> None:
    out = tmp_path / "cifar10"
    args = ["clr-dist", "data", "cifar10", str(out), "--source", str(archive[0]), "--limit-per-class", "1"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"CIFAR-10 at {out}: 10 classes, 10 train and 10 val images"

    python = write_tar(tmp_path / "cifar-10-python.tar.gz", {"cifar-10-batches-py/data_batch_1": b"x"})
    result = run_cli(["clr-dist", "data", "cifar10", str(tmp_path / "o2"), "--source", str(python)], cwd=tmp_path)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("clr-dist data: error: ") and "pickled Python version" in line

    result = run_cli(["clr-dist", "data", "cifar10", str(tmp_path / "o3")], cwd=tmp_path)
    assert result.returncode == 2 and "the following arguments are required: --source" in result.stderr


@pytest.mark.gpu
def test_mixed_decoding_reads_the_pngs_on_cuda(converted: Path) -> None:
    from clr_dist.data.dali import DaliLoaders
    from clr_dist.dist import DistInfo

    cfg = compose_train(["data=cifar10", f"data.root={converted}", "data.batch_size=10", "data.workers=1"]).data
    on = {
        device: DaliLoaders(cfg, DistInfo(rank=0, local_rank=0, world_size=1, device=device), 0, list(CLASSES))
        for device in (torch.device("cuda", 0), torch.device("cpu"))
    }
    (gpu_images, gpu_targets), (cpu_images, cpu_targets) = (next(loader.val_batches()) for loader in on.values())
    assert gpu_images.is_cuda and gpu_images.shape == (10, 3, 32, 32)
    assert torch.equal(gpu_targets.cpu(), cpu_targets)
    assert (gpu_images.cpu() - cpu_images).abs().max() < 1e-3  # PNG is lossless: the same pixels
