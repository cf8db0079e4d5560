"""The torchvision loader: ImageFolder, a distributed sampler, PyTorch DataLoader workers."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset
from torchvision import transforms
from torchvision.datasets import ImageFolder

from clr_dist.config import DataConfig
from clr_dist.data.layout import evenly_spaced, saved_position_applies
from clr_dist.data.workers import dataloader_workers
from clr_dist.dist import DistInfo
from clr_dist.errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor]


class _ResumableSampler(DistributedSampler):
    """A DistributedSampler that can leave out the first ``skip`` indices of the epoch (the
    batches a resumed run already trained on); its length stays the whole epoch's."""

    skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = super().__iter__()
        return itertools.islice(indices, self.skip, None)


class TorchvisionLoaders:
    """Training batches by epoch and this rank's share of the validation set.

    The loader interface the Trainer reads: ``classes``, ``train_size``, ``val_size``,
    ``batches_per_epoch``, ``train_epoch(epoch)`` and ``val_batches()``.

    Training drops the last incomplete global batch, so every optimizer step sees exactly
    ``data.batch_size`` images. Validation gives each rank a disjoint slice with no padding, so
    after a sum over ranks every validation image counts exactly once.
    """

    def __init__(self, cfg: DataConfig, info: DistInfo, seed: int, classes: list[str]) -> None:
        normalize = transforms.Normalize(cfg.mean, cfg.std)
        train_tf = transforms.Compose(
            [
                transforms.RandomResizedCrop(cfg.image_size, scale=tuple(cfg.crop_scale), ratio=tuple(cfg.crop_ratio)),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        )
        val_tf = transforms.Compose(
            [
                transforms.Resize(cfg.val_resize),
                transforms.CenterCrop(cfg.image_size),
                transforms.ToTensor(),
                normalize,
            ]
        )
        self.train_set = ImageFolder(f"{cfg.root}/train", train_tf)
        self._plain_train_set = lambda: ImageFolder(f"{cfg.root}/train", val_tf)  # train_subset_batches
        val_set = ImageFolder(f"{cfg.root}/val", val_tf)
        if not self.train_set.classes == val_set.classes == classes:
            # The folders were checked a moment ago (check_image_folder): they changed since.
            raise DataError(
                f"the class folders under {cfg.root!r} changed while the run started; "
                f"check the dataset (`clr-dist data check {cfg.root}`) and start again"
            )
        self.classes = classes
        self.train_size = len(self.train_set)
        self.val_size = len(val_set)
        self.sampler = _ResumableSampler(
            self.train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.per_rank_batch = per_rank_batch = cfg.batch_size // info.world_size
        self.layout = (info.rank, info.world_size)
        self.restart_epoch_on_layout_change = cfg.restart_epoch_on_layout_change
        self.yielded = 0  # batches served in the current epoch
        workers = dataloader_workers(cfg.workers)
        common = dict(
            num_workers=workers,
            pin_memory=info.device.type == "cuda",
            persistent_workers=workers > 0,
        )
        self.train = DataLoader(
            self.train_set, batch_size=per_rank_batch, sampler=self.sampler, drop_last=True, **common
        )
        self._subset_loader = lambda dataset, indices: DataLoader(
            Subset(dataset, indices[info.rank :: info.world_size]), batch_size=per_rank_batch, **common
        )
        self._val_set = val_set
        self.val = self._subset_loader(val_set, range(len(val_set)))
        self._subsets: dict[tuple[str, int], DataLoader] = {}

    @property
    def batches_per_epoch(self) -> int:
        """Micro-batches per epoch on each rank (the same on every rank)."""
        return len(self.train)

    def train_epoch(self, epoch: int) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch)
        for batch in self.train:
            self.yielded += 1
            yield batch
        self.yielded = self.sampler.skip = 0

    def state_dict(self) -> dict:
        """The position in the current epoch. A resumed run reads the same files in the same
        order; the random crops and flips are drawn afresh (DataLoader workers reseed)."""
        rank, world_size = self.layout
        return {"rank": rank, "world_size": world_size, "train_size": self.train_size, "yielded": self.yielded}

    def load_state_dict(self, state: dict) -> None:
        applies = saved_position_applies(
            state, *self.layout, self.train_size, restart_epoch_allowed=self.restart_epoch_on_layout_change
        )
        self.yielded = state["yielded"] if applies else 0
        self.sampler.skip = self.yielded * self.per_rank_batch

    def val_batches(self, limit: int | None = None) -> Iterator[Batch]:
        """This rank's share of the validation set, or of a fixed subset of ``limit`` images
        spread evenly over it; each image on exactly one rank."""
        if limit is None or limit >= self.val_size:
            return iter(self.val)
        if ("val", limit) not in self._subsets:
            self._subsets["val", limit] = self._subset_loader(self._val_set, evenly_spaced(self.val_size, limit))
        return iter(self._subsets["val", limit])

    def train_subset_batches(self, limit: int) -> Iterator[Batch]:
        """This rank's share of a fixed subset of ``limit`` training images spread evenly over
        the training set, with the validation transforms (no random crop or flip): the same
        images at every call, each on exactly one rank."""
        limit = min(limit, self.train_size)
        if ("train", limit) not in self._subsets:
            indices = evenly_spaced(self.train_size, limit)
            self._subsets["train", limit] = self._subset_loader(self._plain_train_set(), indices)
        return iter(self._subsets["train", limit])
