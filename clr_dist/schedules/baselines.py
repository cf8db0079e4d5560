"""The paper's baseline policies (Table 1), with Caffe's semantics: fixed, step, multistep, exp,
and the paper's decay."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from clr_dist.schedules.base import Schedule


class Fixed(Schedule):
    """A constant learning rate (``base_lr``), Caffe's "fixed"."""

    def __init__(self, base_lr: float) -> None:
        self.base_lr = base_lr

    def lr(self, step: int) -> float:
        return self.base_lr


class Step(Schedule):
    """Caffe's "step": base_lr gamma^floor(step / stepsize)."""

    def __init__(self, base_lr: float, stepsize: int, gamma: float) -> None:
        self.base_lr, self.stepsize, self.gamma = base_lr, stepsize, gamma

    def lr(self, step: int) -> float:
        return self.base_lr * self.gamma ** (step // self.stepsize)


class MultiStep(Schedule):
    """Caffe's "multistep": base_lr gamma^(milestones passed); a milestone m is passed from update
    m on (Caffe: ``iter_ >= stepvalue``)."""

    def __init__(self, base_lr: float, milestones: Sequence[int], gamma: float) -> None:
        self.base_lr, self.milestones, self.gamma = base_lr, tuple(milestones), gamma

    def lr(self, step: int) -> float:
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, step)


class Exp(Schedule):
    """Caffe's "exp": base_lr gamma^step."""

    def __init__(self, base_lr: float, gamma: float) -> None:
        self.base_lr, self.gamma = base_lr, gamma

    def lr(self, step: int) -> float:
        return self.base_lr * self.gamma**step


class Decay(Schedule):
    """The paper's *decay* control (§4.1.1): "the learning rate starts at the max_lr value and then
    is linearly reduced to the base_lr value for stepsize number of iterations. After that, the
    learning rate is fixed to base_lr." It reached only 78.5% vs 81.4% for triangular2 (Table 1),
    "evidence that both increasing and decreasing the learning rate are essential"."""

    def __init__(self, base_lr: float, max_lr: float, stepsize: int) -> None:
        self.base_lr, self.max_lr, self.stepsize = base_lr, max_lr, stepsize

    def height(self, step: int) -> float:
        return max(0.0, 1.0 - step / self.stepsize)

    def lr(self, step: int) -> float:
        return self.base_lr + (self.max_lr - self.base_lr) * self.height(step)
