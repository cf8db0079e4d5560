"""Smith's one-cycle policy: a single CLR cycle, then an anneal below ``base_lr`` to the end."""

from __future__ import annotations

from clr_dist.schedules.base import Schedule
from clr_dist.schedules.cyclical import Triangular


class OneCycle(Schedule):
    """Three phases over ``total_steps`` updates:

    1. up from ``base_lr`` to ``max_lr`` and 2. back down to ``base_lr``, one cycle of
       ``2 * stepsize`` steps shaped like the cyclical policies (``step_ratio``, ``shape``);
    3. the remaining updates fall linearly from ``base_lr`` to ``final_lr``, reached at the last
       update (``total_steps - 1``) and held after it.

    The cycle ends after ``2 * stepsize`` updates (the LR is back at ``base_lr``, where the paper
    sees accuracy peak); the anneal belongs to no further cycle, so its updates report cycle 1.
    ``height`` is 0 during the anneal: cycled momentum stays at its maximum there, as in Smith's
    one-cycle recipe.
    """

    def __init__(
        self,
        base_lr: float,
        max_lr: float,
        stepsize: int,
        total_steps: int,
        final_lr: float,
        step_ratio: float = 0.5,
        shape: str = "triangular",
    ) -> None:
        self.base_lr, self.final_lr = base_lr, final_lr
        self._total_steps = total_steps
        # Phases 1 and 2 are the first cycle of the triangular policy, computed by it.
        self.first_cycle = Triangular(base_lr, max_lr, stepsize, step_ratio, shape)

    @property
    def cycle_length(self) -> int:
        return self.first_cycle.cycle_length

    @property
    def total_steps(self) -> int:
        return self._total_steps

    def cycle(self, step: int) -> int:
        return 1

    def next_cycle_end(self, completed_steps: int) -> int | None:
        return self.cycle_length if completed_steps < self.cycle_length else None

    def height(self, step: int) -> float:
        return self.first_cycle.height(step) if step < self.cycle_length else 0.0

    def lr(self, step: int) -> float:
        if step < self.cycle_length:
            return self.first_cycle.lr(step)
        # (step - L + 1) / (total - L): just below base_lr on the first anneal update, final_lr
        # exactly on the last one, never a repeat of base_lr.
        done = min(1.0, (step - self.cycle_length + 1) / (self._total_steps - self.cycle_length))
        return self.base_lr + (self.final_lr - self.base_lr) * done
