"""Cyclical policies of Smith (2015), §3.1: triangular, triangular2 and exp_range."""

from __future__ import annotations

import math

from clr_dist.schedules.base import Schedule


def triangle(step: int, stepsize: int) -> float:
    """The triangular window in [0, 1]: 0 at a cycle's start and end, 1 at its middle.

    The paper's formula: cycle = floor(1 + it / (2 ss)), x = |it / ss - 2 cycle + 1|.
    """
    cycle = math.floor(1 + step / (2 * stepsize))
    x = abs(step / stepsize - 2 * cycle + 1)
    return max(0.0, 1.0 - x)


class Triangular(Schedule):
    """LR rises linearly from ``base_lr`` to ``max_lr`` over ``stepsize`` steps, then falls back."""

    def __init__(self, base_lr: float, max_lr: float, stepsize: int) -> None:
        self.base_lr, self.max_lr, self.stepsize = base_lr, max_lr, stepsize

    @property
    def cycle_length(self) -> int:
        return 2 * self.stepsize

    def amplitude(self, step: int) -> float:
        return self.max_lr - self.base_lr

    def lr(self, step: int) -> float:
        return self.base_lr + self.amplitude(step) * triangle(step, self.stepsize)


class Triangular2(Triangular):
    """Triangular with the amplitude halved at the end of every cycle."""

    def amplitude(self, step: int) -> float:
        return (self.max_lr - self.base_lr) / 2 ** (self.cycle(step) - 1)


class ExpRange(Triangular):
    """The paper's exp_range: *both* bounds decay, lr = (base + (max - base) tri) gamma^step.

    Not PyTorch's CyclicLR(mode='exp_range'), which decays only the amplitude.
    """

    def __init__(self, base_lr: float, max_lr: float, stepsize: int, gamma: float) -> None:
        super().__init__(base_lr, max_lr, stepsize)
        self.gamma = gamma

    def lr(self, step: int) -> float:
        return super().lr(step) * self.gamma**step
