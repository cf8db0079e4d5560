"""``data=synthetic``: random tensors made once on the device, to measure the model-only ceiling.

No decoding, no host-to-device copies: the same batch is served at every step, so the
throughput of a run on it is what the model, optimizer and communication alone allow.
Comparing a real-data run with it gives the data pipeline's efficiency.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from clr_dist.config import DataConfig
from clr_dist.dist import DistInfo

Batch = tuple[torch.Tensor, torch.Tensor]


class SyntheticLoaders:
    """The loader interface over one random batch per rank (the same on every step)."""

    def __init__(self, cfg: DataConfig, info: DistInfo, seed: int) -> None:
        per_rank = cfg.batch_size // info.world_size
        generator = torch.Generator().manual_seed(seed + info.rank)
        self.classes = [f"class_{i:04d}" for i in range(cfg.synthetic_classes)]
        self.train_size = cfg.synthetic_images
        # Each rank validates on its own batch, so the total is world_size batches.
        self.val_size = per_rank * info.world_size
        self.rank, self.world_size = info.rank, info.world_size
        self.batches_per_epoch = cfg.synthetic_images // cfg.batch_size
        images = torch.randn(per_rank, 3, cfg.image_size, cfg.image_size, generator=generator)
        targets = torch.randint(0, cfg.synthetic_classes, (per_rank,), generator=generator)
        dtype = getattr(torch, cfg.output_dtype)
        self.batch = (images.to(info.device, dtype), targets.to(info.device))
        self.yielded = 0

    def train_epoch(self, epoch: int) -> Iterator[Batch]:
        while self.yielded < self.batches_per_epoch:
            self.yielded += 1
            yield self.batch
        self.yielded = 0

    def state_dict(self) -> dict:
        return {"yielded": self.yielded}

    def load_state_dict(self, state: dict) -> None:
        self.yielded = state["yielded"]

    def val_batches(self, limit: int | None = None) -> Iterator[Batch]:
        """This rank's batch, or its share of a ``limit``-image subset (ranks before the
        remainder take one more)."""
        if limit is None or limit >= self.val_size:
            return iter([self.batch])
        share = limit // self.world_size + (self.rank < limit % self.world_size)
        return iter([(self.batch[0][:share], self.batch[1][:share])])

    def train_subset_batches(self, limit: int) -> Iterator[Batch]:
        """The same as ``val_batches(limit)``: one random batch stands for both splits."""
        return self.val_batches(limit)
