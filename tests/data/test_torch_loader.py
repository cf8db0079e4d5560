"""The torchvision fallback loader: exact validation shards and a resumable epoch position."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from clr_dist.config import DataConfig
from clr_dist.data.datasets import check_image_folder
from clr_dist.data.torch_loader import TorchvisionLoaders
from clr_dist.dist import DistInfo
from clr_dist.errors import DataError


def loaders(root: Path, rank: int, world_size: int, **settings) -> TorchvisionLoaders:
    cfg = DataConfig(
        root=str(root),
        loader="torchvision",
        batch_size=8 * world_size,
        image_size=32,
        val_resize=32,
        **{"workers": 0, **settings},
    )
    info = DistInfo(rank=rank, local_rank=rank, world_size=world_size, device=torch.device("cpu"))
    return TorchvisionLoaders(cfg, info, seed=0, classes=check_image_folder(root).classes)


def test_mid_epoch_resume_reads_the_same_files(small_demo: Path) -> None:
    original = loaders(small_demo, 1, 2)
    original.sampler.set_epoch(3)
    order = list(original.sampler)  # this rank's files for epoch 3, in order
    epoch3 = original.train_epoch(3)
    for _ in range(4):
        next(epoch3)
    resumed = loaders(small_demo, 1, 2)
    resumed.load_state_dict(original.state_dict())
    resumed.sampler.set_epoch(3)
    assert list(resumed.sampler) == order[4 * 8 :]  # the files not yet trained on, in order
    labels = [targets for _, targets in resumed.train_epoch(3)]
    assert len(labels) == original.batches_per_epoch - 4
    dataset_labels = torch.tensor(original.train_set.targets)
    assert torch.equal(torch.cat(labels), dataset_labels[order[4 * 8 :]])
    assert len(list(resumed.train_epoch(4))) == original.batches_per_epoch  # then whole epochs again


def test_resume_into_another_layout_is_refused_unless_asked(small_demo: Path) -> None:
    state = loaders(small_demo, 0, 2).state_dict()
    with pytest.raises(DataError, match=r"saved by rank 0 of 2 over 240 training images, and this is rank 0 of 1"):
        loaders(small_demo, 0, 1).load_state_dict(state)
    state["yielded"] = 5
    restarted = loaders(small_demo, 0, 1, restart_epoch_on_layout_change=True)
    restarted.load_state_dict(state)
    assert len(list(restarted.train_epoch(0))) == restarted.batches_per_epoch


def test_crop_ratio_reaches_the_transform(small_demo: Path) -> None:
    crop = loaders(small_demo, 0, 1, crop_ratio=(0.5, 2.0)).train_set.transform.transforms[0]
    assert crop.ratio == (0.5, 2.0)


def test_auto_workers_leave_the_training_process_a_cpu(small_demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert loaders(small_demo, 0, 1, workers="auto").train.num_workers == 3  # 4 CPUs per rank
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    data = loaders(small_demo, 0, 1, workers="auto")  # one CPU per rank: load in this process
    assert data.train.num_workers == 0 and len(next(data.train_epoch(0))[1]) == 8
