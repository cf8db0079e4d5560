"""The DALI loader with the real DALI package on the CPU (device_id=None)."""

from __future__ import annotations

import inspect
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clr_dist.config import DataConfig
from clr_dist.data.dali import (
    DaliLoaders,
    decoder_options,
    file_list,
    pipeline_on_gpu,
    pipeline_options,
    shard_bounds,
)
from clr_dist.data.datasets import check_image_folder
from clr_dist.dist import DistInfo
from clr_dist.errors import ConfigError, DataError
from tests.conftest import copy_tree

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def odd_demo(tmp_path_factory: pytest.TempPathFactory, small_demo: Path) -> Path:
    """The small demo set less one train and one val image: 239 train, 69 val (odd sizes)."""
    root = copy_tree(small_demo, tmp_path_factory.mktemp("dali") / "d")
    for split in ("train", "val"):
        next((root / split).rglob("*.JPEG")).unlink()
    return root


def loaders(
    root: Path, rank: int, world_size: int, batch_size: int, channels_last: bool = False, **settings
) -> DaliLoaders:
    cfg = DataConfig(
        root=str(root),
        loader="dali",
        batch_size=batch_size,
        image_size=64,
        val_resize=64,
        **{"crop_scale": (0.35, 1.0), "workers": 1, **settings},
    )
    info = DistInfo(rank=rank, local_rank=rank, world_size=world_size, device=torch.device("cpu"))
    return DaliLoaders(cfg, info, seed=0, classes=check_image_folder(root).classes, channels_last=channels_last)


def fingerprints(batches) -> Counter:
    """(label, pixel sum) of every image: the demo images are distinct, so these identify them."""
    seen: Counter = Counter()
    for images, targets in batches:
        for image, target in zip(images, targets):
            seen[(int(target), round(float(image.double().sum()), 2))] += 1
    return seen


def normalised(path: str) -> torch.Tensor:
    """The image as PIL decodes it, normalised like the pipeline's output (CHW)."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy((pixels - np.array(MEAN, np.float32)) / np.array(STD, np.float32)).permute(2, 0, 1)


def test_validation_batches_are_normalised_decoded_images(odd_demo: Path) -> None:
    data = loaders(odd_demo, 0, 1, 8)
    images, targets = next(data.val_batches())
    assert images.shape == (8, 3, 64, 64) and images.dtype == torch.float32
    assert targets.dtype == torch.int64 and targets.shape == (8,)
    files, labels = file_list(odd_demo / "val", data.classes)
    assert targets.tolist() == labels[:8]  # validation reads in file order
    expected = normalised(files[0])
    # Two JPEG decoders may round a few pixels differently: allow 2/255 before normalisation.
    assert (images[0] - expected).abs().max() <= 2 / 255 / min(STD) + 1e-6


def test_training_batches(odd_demo: Path) -> None:
    data = loaders(odd_demo, 0, 1, 8)
    batches = list(data.train_epoch(0))
    assert len(batches) == data.batches_per_epoch == 239 // 8
    images, targets = batches[0]
    assert images.shape == (8, 3, 64, 64) and targets.dtype == torch.int64
    assert -3 < float(images.min()) and float(images.max()) < 3  # normalised, not 0-255
    second = list(data.train_epoch(1))
    assert len(second) == len(batches)
    assert fingerprints(second) != fingerprints(batches)  # reshuffled and re-augmented


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_shards_are_disjoint_and_complete(odd_demo: Path, world_size: int) -> None:
    everything = fingerprints(loaders(odd_demo, 0, 1, 4).val_batches())
    assert sum(everything.values()) == 69 and max(everything.values()) == 1
    union: Counter = Counter()
    train_counts = []
    for rank in range(world_size):
        data = loaders(odd_demo, rank, world_size, 4 * world_size)
        shard = fingerprints(data.val_batches())
        start, end = shard_bounds(69, rank, world_size)
        assert sum(shard.values()) == end - start  # this rank's true shard, no padding
        assert not (union & shard)  # disjoint from the other ranks
        union += shard
        train_counts.append(sum(1 for _ in data.train_epoch(0)))
    assert union == everything  # together complete: every image exactly once
    assert len(set(train_counts)) == 1 and train_counts[0] == (239 // world_size) // 4  # equal steps


def test_corrupt_jpeg_error_names_the_file(tmp_path: Path, small_demo: Path) -> None:
    root = copy_tree(small_demo, tmp_path / "d")
    bad = sorted((root / "val").rglob("*.JPEG"))[30]
    bad.write_bytes(b"these bytes are not a JPEG")
    data = loaders(root, 0, 1, 8)
    with pytest.raises(DataError) as info:
        for _ in data.val_batches():
            pass
    message = str(info.value)
    assert f"DALI cannot decode '{bad}'" in message and f"clr-dist data check {root} --out DIR" in message
    assert "\n" not in message


def test_uneven_shards_with_a_shard_of_whole_batches(tmp_path: Path, small_demo: Path) -> None:
    """17 images on 2 ranks: shards of 8 and 9. With 4 per rank, rank 0's shard is exactly two
    batches; DALI then ends its epoch with an empty batch (PARTIAL) or, under DROP, serves a batch
    of padding only in the next epoch. Neither may reach the trainer."""
    root = copy_tree(small_demo, tmp_path / "d")
    for split in ("train", "val"):  # keep 2 images in each of 7 classes and 1 in each of 3
        for index, class_dir in enumerate(sorted((root / split).iterdir())):
            for path in sorted(class_dir.glob("*.JPEG"))[2 if index < 7 else 1 :]:
                path.unlink()
    per_rank = {}
    for rank in (0, 1):
        data = loaders(root, rank, 2, 8)
        val = list(data.val_batches())
        assert [len(t) for _, t in val] == ([4, 4] if rank == 0 else [4, 4, 1])  # no empty batch
        per_rank[rank] = fingerprints(val)
        for epoch in range(3):
            epoch_batches = list(data.train_epoch(epoch))
            assert len(epoch_batches) == data.batches_per_epoch == 2
            seen = fingerprints(epoch_batches)
            assert max(seen.values()) == 1  # no batch of repeated padding
    assert sum((per_rank[0] + per_rank[1]).values()) == 17 and not (per_rank[0] & per_rank[1])


@pytest.mark.gpu
def test_mixed_decoding_on_cuda(odd_demo: Path) -> None:
    cfg = DataConfig(root=str(odd_demo), loader="dali", batch_size=8, image_size=64, val_resize=64, workers=2)
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cuda", 0))
    gpu = DaliLoaders(cfg, info, seed=0, classes=check_image_folder(odd_demo).classes)
    cpu = loaders(odd_demo, 0, 1, 8)
    (gpu_images, gpu_targets), (cpu_images, cpu_targets) = next(gpu.val_batches()), next(cpu.val_batches())
    assert gpu_images.is_cuda and gpu_targets.is_cuda and gpu_images.shape == (8, 3, 64, 64)
    assert torch.equal(gpu_targets.cpu(), cpu_targets)
    # nvJPEG and the CPU decoder may round differently; the images must still agree closely.
    assert (gpu_images.cpu() - cpu_images).abs().mean() < 0.05
    assert len(list(gpu.train_epoch(0))) == gpu.batches_per_epoch


@pytest.mark.gpu
def test_gpu_pipeline_options_on_cuda(odd_demo: Path) -> None:
    """fp16 channels-last batches straight from the mixed decoder; dali_device=cpu keeps the
    pipeline on the CPU on a GPU machine."""
    classes = check_image_folder(odd_demo).classes
    cfg = DataConfig(
        root=str(odd_demo), loader="dali", batch_size=8, image_size=64, val_resize=64, workers=2, output_dtype="float16"
    )
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cuda", 0))
    images, _ = next(DaliLoaders(cfg, info, seed=0, classes=classes, channels_last=True).train_epoch(0))
    assert images.is_cuda and images.dtype == torch.float16
    assert images.shape == (8, 3, 64, 64) and images.is_contiguous(memory_format=torch.channels_last)
    cpu_cfg = DataConfig(
        root=str(odd_demo), loader="dali", batch_size=8, image_size=64, val_resize=64, workers=2, dali_device="cpu"
    )
    images, targets = next(DaliLoaders(cpu_cfg, info, seed=0, classes=classes).val_batches())
    assert not images.is_cuda and not targets.is_cuda


@pytest.mark.parametrize(("rank", "world_size"), [(0, 1), (1, 2)])
def test_mid_epoch_resume_is_bit_exact(odd_demo: Path, rank: int, world_size: int) -> None:
    original = loaders(odd_demo, rank, world_size, 8 * world_size)
    epoch0 = original.train_epoch(0)
    for _ in range(5):
        next(epoch0)
    state = original.state_dict()
    expected = list(epoch0) + list(original.train_epoch(1))  # the rest of epoch 0, then epoch 1

    resumed = loaders(odd_demo, rank, world_size, 8 * world_size)
    resumed.load_state_dict(state)
    got = list(resumed.train_epoch(0)) + list(resumed.train_epoch(1))
    assert len(got) == len(expected) == 2 * original.batches_per_epoch - 5
    for (images, targets), (want_images, want_targets) in zip(got, expected):
        assert torch.equal(targets, want_targets) and torch.equal(images, want_images)  # same files, same pixels


def test_resume_after_the_last_batch_of_an_epoch(small_demo: Path) -> None:
    """240 images in batches of 16: the epoch ends exactly on its 15th batch. Saved right after
    it, the resumed run reads the next epoch whole (not as the leftovers of this one)."""
    original = loaders(small_demo, 0, 1, 16)
    epoch0 = original.train_epoch(0)
    for _ in range(original.batches_per_epoch):
        next(epoch0)
    state = original.state_dict()
    expected = list(epoch0) + list(original.train_epoch(1))
    resumed = loaders(small_demo, 0, 1, 16)
    resumed.load_state_dict(state)
    got = list(resumed.train_epoch(0)) + list(resumed.train_epoch(1))
    assert len(got) == len(expected) == 15
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, expected))


def test_resume_into_another_world_size_is_refused(odd_demo: Path) -> None:
    state = loaders(odd_demo, 0, 2, 16).state_dict()
    with pytest.raises(
        DataError,
        match=r"saved by rank 0 of 2 over 239 training images, and this is rank 0 of 1 over 239"
        r".*or set data.restart_epoch_on_layout_change=true to start the epoch again$",
    ):
        loaders(odd_demo, 0, 1, 16).load_state_dict(state)


def test_resume_into_another_world_size_restarts_the_epoch_when_asked(odd_demo: Path) -> None:
    original = loaders(odd_demo, 1, 2, 16)
    epoch0 = original.train_epoch(0)
    for _ in range(3):
        next(epoch0)
    state = original.state_dict()
    resumed = loaders(odd_demo, 0, 1, 16, restart_epoch_on_layout_change=True)
    resumed.load_state_dict(state)
    fresh = loaders(odd_demo, 0, 1, 16)
    got, want = list(resumed.train_epoch(0)), list(fresh.train_epoch(0))
    assert len(got) == resumed.batches_per_epoch == 239 // 16  # the whole epoch, from its start
    assert all(torch.equal(a[1], b[1]) and torch.equal(a[0], b[0]) for a, b in zip(got, want))


def test_resume_over_another_dataset_is_refused_even_when_restarts_are_allowed(
    odd_demo: Path, small_demo: Path
) -> None:
    state = loaders(small_demo, 0, 1, 16).state_dict()  # 240 training images, odd_demo has 239
    with pytest.raises(DataError, match=r"over 240 training images, and this is rank 0 of 1 over 239; .* dataset$"):
        loaders(odd_demo, 0, 1, 16, restart_epoch_on_layout_change=True).load_state_dict(state)


def test_channels_last_output_is_the_same_images(odd_demo: Path) -> None:
    chw_images, chw_targets = next(loaders(odd_demo, 0, 1, 8).val_batches())
    images, targets = next(loaders(odd_demo, 0, 1, 8, channels_last=True).val_batches())
    assert images.shape == (8, 3, 64, 64) and images.is_contiguous(memory_format=torch.channels_last)
    assert not images.is_contiguous()
    assert torch.equal(targets, chw_targets) and torch.equal(images, chw_images)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_output(odd_demo: Path, dtype: str) -> None:
    full, _ = next(loaders(odd_demo, 0, 1, 8).val_batches())
    half, _ = next(loaders(odd_demo, 0, 1, 8, output_dtype=dtype).val_batches())
    assert half.dtype == getattr(torch, dtype) and half.shape == full.shape
    tolerance = {"float16": 2e-3, "bfloat16": 1.6e-2}[dtype]  # relative rounding of the format
    assert torch.allclose(half.float(), full, rtol=tolerance, atol=tolerance)


def test_crop_ranges_reach_the_pipeline(odd_demo: Path) -> None:
    """Area 100% and aspect 1:1 on square images: every training crop is a whole image of its
    class, or its mirror image (with the default ranges, crops are rescaled parts of one)."""
    files, labels = file_list(odd_demo / "train", check_image_folder(odd_demo).classes)
    originals = torch.stack([normalised(path) for path in files])
    labels = torch.tensor(labels)
    data = loaders(odd_demo, 0, 1, 8, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    images, targets = next(data.train_epoch(0))
    for image, target in zip(images, targets):
        candidates = originals[labels == target]
        error = torch.minimum(
            (candidates - image).abs().amax(dim=(1, 2, 3)), (candidates.flip(-1) - image).abs().amax(dim=(1, 2, 3))
        )
        assert float(error.min()) <= 2 / 255 / min(STD) + 1e-6


def test_gpu_pipeline_without_cuda_is_refused(odd_demo: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"data.dali_device=gpu needs training on CUDA \(the device is cpu\); use data.dali_device=auto or cpu",
    ):
        loaders(odd_demo, 0, 1, 8, dali_device="gpu")


def test_file_lists_from_the_checker_skip_bad_files(tmp_path: Path, small_demo: Path) -> None:
    from clr_dist.data.check import check_dataset

    root = copy_tree(small_demo, tmp_path / "d")
    bad = sorted((root / "train").rglob("*.JPEG"))[7]
    bad.write_bytes(b"broken")
    report = check_dataset(root, tmp_path / "lists", workers=1, progress=None)
    assert not report.ok
    cfg = DataConfig(
        root=str(root),
        loader="dali",
        batch_size=8,
        image_size=64,
        val_resize=64,
        workers=1,
        file_lists=str(tmp_path / "lists"),
    )
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    data = DaliLoaders(cfg, info, seed=0, classes=check_image_folder(root).classes)
    assert (data.train_size, data.val_size) == (239, 70)
    assert len(list(data.train_epoch(0))) == 239 // 8  # the corrupt file is never read


GPU_TUNING = dict(
    hw_decoder_load=0.4,
    device_memory_padding=1 << 20,
    host_memory_padding=1 << 19,
    preallocate_width_hint=4000,
    preallocate_height_hint=3000,
    prefetch_queue_depth=3,
    workers=6,
)


def test_the_mixed_path_gets_the_configured_tuning() -> None:
    """What reaches the decoders and the Pipeline on a GPU rank, checked without a GPU: the
    ``data.`` settings, under the names DALI's own operator schemas and Pipeline know."""
    from nvidia.dali import backend
    from nvidia.dali.pipeline import Pipeline

    cfg = DataConfig(loader="dali", **GPU_TUNING)
    info = DistInfo(rank=5, local_rank=3, world_size=8, device=torch.device("cuda", 3))
    assert pipeline_on_gpu(cfg, info)
    training = decoder_options(cfg, True, training=True)
    assert training == {
        "device": "mixed",
        "hw_decoder_load": 0.4,
        "device_memory_padding": 1 << 20,
        "host_memory_padding": 1 << 19,
        "preallocate_width_hint": 4000,
        "preallocate_height_hint": 3000,
    }
    # Validation pipelines hold no preallocated buffers (as in DALI's ImageNet example).
    validation = decoder_options(cfg, True, training=False)
    assert validation == {"device": "mixed", "hw_decoder_load": 0.4}
    for operator, options in (("decoders__ImageRandomCrop", training), ("decoders__Image", validation)):
        schema = backend.GetSchema(operator)
        assert "mixed" in schema.GetSupportedBackends()
        assert all(schema.HasArgument(key) and not schema.IsDeprecatedArg(key) for key in options if key != "device")
    pipeline = pipeline_options(cfg, info, True, batch_size=32, seed=10)
    assert pipeline == {"batch_size": 32, "num_threads": 6, "device_id": 3, "prefetch_queue_depth": 3, "seed": 15}
    assert set(pipeline) <= set(inspect.signature(Pipeline.__init__).parameters)


def test_the_cpu_path_leaves_the_mixed_only_settings_out(odd_demo: Path) -> None:
    """On the CPU the decoder gets none of the mixed-only arguments, and the Pipeline DALI
    builds has the configured threads and prefetch depth."""
    cfg = DataConfig(loader="dali", **GPU_TUNING)
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    assert not pipeline_on_gpu(cfg, info)
    assert (
        decoder_options(cfg, False, training=True) == decoder_options(cfg, False, training=False) == {"device": "cpu"}
    )
    assert pipeline_options(cfg, info, False, batch_size=8, seed=0)["device_id"] is None
    data = loaders(odd_demo, 0, 1, 8, workers=3, prefetch_queue_depth=1)
    pipe = data.train._pipes[0]
    assert (pipe.num_threads, pipe.prefetch_queue_depth) == (3, 1)
    assert len(list(data.train_epoch(0))) == data.batches_per_epoch


def test_auto_workers_builds_a_pipeline_with_the_rank_s_cpus(odd_demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    data = loaders(odd_demo, 0, 1, 8, workers="auto")
    assert data.train._pipes[0].num_threads == 2
    images, _ = next(data.val_batches())
    assert images.shape == (8, 3, 64, 64)
