"""The paper's baseline policies (Table 1)."""

from __future__ import annotations

from clr_dist.schedules.base import Schedule


class Fixed(Schedule):
    """A constant learning rate (``base_lr``), Caffe's "fixed"."""

    def __init__(self, base_lr: float) -> None:
        self.base_lr = base_lr

    def lr(self, step: int) -> float:
        return self.base_lr
