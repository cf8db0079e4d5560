"""Cyclical policies of Smith (2015), §3.1: triangular, triangular2, exp_range, and PyTorch's
amplitude-only exp_range; with Welch/Hann cycle shapes and asymmetric (up != down) cycles."""

from __future__ import annotations

import math

from clr_dist.schedules.base import Schedule

# §3.1: "a triangular window (linear), a Welch window (parabolic) and a Hann window (sinusoidal)
# all produced equivalent results" -- so all three are offered, the triangle by default.
SHAPES = ("triangular", "welch", "hann")


def window(tri: float, shape: str) -> float:
    """Reshape a triangle value into the named window, keeping 0 at the ends and 1 at the peak.

    With x in [-1, 1] the distance from the peak (tri = 1 - |x|): Welch is 1 - x^2 and Hann is
    cos^2(pi x / 2) = (1 - cos(pi tri)) / 2.
    """
    if shape == "triangular":
        return tri
    if shape == "welch":
        return 1.0 - (1.0 - tri) ** 2
    if shape == "hann":
        return 0.5 * (1.0 - math.cos(math.pi * tri))
    raise ValueError(f"unknown cycle shape {shape!r}; valid shapes: {', '.join(SHAPES)}")


class Wave:
    """A periodic rise-and-fall in [0, 1]: ``cycle_length`` steps per cycle, rising over the
    first ``step_ratio`` of each cycle and falling over the rest, shaped by ``shape``.

    step_ratio = 0.5 is the paper's symmetric triangle (stepsize = half a cycle); otherwise it is
    CyclicLR's ``step_size_up / (step_size_up + step_size_down)``.
    """

    def __init__(self, cycle_length: int, step_ratio: float = 0.5, shape: str = "triangular") -> None:
        self.cycle_length, self.step_ratio, self.shape = cycle_length, step_ratio, shape

    def cycle(self, step: int) -> int:
        return step // self.cycle_length + 1

    def __call__(self, step: int) -> float:
        # The position inside the cycle from an exact integer remainder, so float error does not
        # grow with the step count (CyclicLR computes it as 1 + it/L - cycle).
        position = (step % self.cycle_length) / self.cycle_length
        if position <= self.step_ratio:
            tri = position / self.step_ratio
        else:
            tri = (1.0 - position) / (1.0 - self.step_ratio)
        return window(tri, self.shape)


class Triangular(Schedule):
    """LR rises from ``base_lr`` to ``max_lr`` over the first part of each ``2 * stepsize``-step
    cycle (half of it by default), then falls back: the paper's *triangular* policy."""

    def __init__(
        self, base_lr: float, max_lr: float, stepsize: int, step_ratio: float = 0.5, shape: str = "triangular"
    ) -> None:
        self.base_lr, self.max_lr, self.stepsize = base_lr, max_lr, stepsize
        self.wave = Wave(2 * stepsize, step_ratio, shape)

    @property
    def cycle_length(self) -> int:
        return 2 * self.stepsize

    def amplitude_scale(self, step: int) -> float:
        """The factor on the amplitude (max - base) at ``step``; 1 for plain triangular."""
        return 1.0

    def height(self, step: int) -> float:
        return self.wave(step) * self.amplitude_scale(step)

    def lr(self, step: int) -> float:
        return self.base_lr + (self.max_lr - self.base_lr) * self.height(step)


class Triangular2(Triangular):
    """Triangular where "the learning rate difference is cut in half at the end of each cycle"
    (§3.1): amplitude (max - base) / 2^(cycle - 1)."""

    def amplitude_scale(self, step: int) -> float:
        return 1.0 / 2 ** (self.wave.cycle(step) - 1)


class _Decaying(Triangular):
    """A triangular wave with a per-step decay factor ``gamma``."""

    def __init__(
        self,
        base_lr: float,
        max_lr: float,
        stepsize: int,
        gamma: float,
        step_ratio: float = 0.5,
        shape: str = "triangular",
    ) -> None:
        super().__init__(base_lr, max_lr, stepsize, step_ratio, shape)
        self.gamma = gamma


class ExpRangeAmplitude(_Decaying):
    """PyTorch's ``CyclicLR(mode='exp_range')`` and the Keras callback: only the amplitude decays,
    lr = base + (max - base) tri gamma^step, so the LR never goes below ``base_lr``."""

    def amplitude_scale(self, step: int) -> float:
        return self.gamma**step


class ExpRange(_Decaying):
    """The paper's exp_range: "each boundary value declines by an exponential factor of
    gamma^iteration" (§3.1), lr = (base + (max - base) tri) gamma^step.

    Not PyTorch's CyclicLR(mode='exp_range'), which decays only the amplitude (ExpRangeAmplitude).
    ``height`` is the position between the two decayed bounds, so cycled momentum still spans
    its full range in every cycle.
    """

    def lr(self, step: int) -> float:
        return super().lr(step) * self.gamma**step
