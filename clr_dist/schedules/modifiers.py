"""Modifiers that wrap any policy: a linear LR warmup and momentum cycled inversely to the LR."""

from __future__ import annotations

from clr_dist.schedules.base import Schedule


class Wrapped(Schedule):
    """Delegates everything to ``inner``; subclasses override what they change."""

    def __init__(self, inner: Schedule) -> None:
        self.inner = inner

    def lr(self, step: int) -> float:
        return self.inner.lr(step)

    def momentum(self, step: int) -> float | None:
        return self.inner.momentum(step)

    def height(self, step: int) -> float:
        return self.inner.height(step)

    @property
    def cycle_length(self) -> int | None:
        return self.inner.cycle_length

    @property
    def total_steps(self) -> int | None:
        return self.inner.total_steps

    def cycle(self, step: int) -> int:
        return self.inner.cycle(step)

    def next_cycle_end(self, completed_steps: int) -> int | None:
        return self.inner.next_cycle_end(completed_steps)


class LinearWarmup(Wrapped):
    """The first ``warmup_steps`` updates ramp the LR linearly up to the policy's LR at update
    ``warmup_steps``: update s < warmup_steps uses lr(warmup_steps) (s + 1) / (warmup_steps + 1).

    The ramp replaces the policy's first updates rather than delaying the policy (timm's default,
    ``warmup_prefix=False``), so cycle ends, stage boundaries and ``total_steps`` stay where the
    configuration puts them. Momentum is left to the policy.
    """

    def __init__(self, inner: Schedule, warmup_steps: int) -> None:
        super().__init__(inner)
        self.warmup_steps = warmup_steps

    def lr(self, step: int) -> float:
        if step >= self.warmup_steps:
            return self.inner.lr(step)
        return self.inner.lr(self.warmup_steps) * (step + 1) / (self.warmup_steps + 1)


class InverseMomentum(Wrapped):
    """Momentum cycled against the LR: ``max_momentum`` when the LR is at its lower bound,
    ``base_momentum`` when it is at ``max_lr``; momentum = max - (max - base) height(step).

    This is CyclicLR's ``cycle_momentum`` rule: the momentum amplitude shrinks with the LR
    amplitude (triangular2, amplitude-only exp_range), so both stay in step.
    """

    def __init__(self, inner: Schedule, base_momentum: float, max_momentum: float) -> None:
        super().__init__(inner)
        self.base_momentum, self.max_momentum = base_momentum, max_momentum

    def momentum(self, step: int) -> float:
        return self.max_momentum - (self.max_momentum - self.base_momentum) * self.inner.height(step)
