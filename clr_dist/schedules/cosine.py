"""Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017)."""

from __future__ import annotations

import math

from clr_dist.schedules.base import Schedule


class CosineRestarts(Schedule):
    """Each cycle falls along half a cosine from ``max_lr`` to ``base_lr``, then restarts at
    ``max_lr``: lr = base + (max - base) (1 + cos(pi t / T)) / 2, with t the step inside the
    cycle and T its length. The first cycle lasts ``first_cycle`` steps and each next one
    ``cycle_mult`` times the previous (SGDR's T_0 and T_mult; torch's
    CosineAnnealingWarmRestarts with eta_min = base_lr).

    Cycles end where the LR is at its minimum, just before a restart, which is where the trainer
    validates, as for the paper's policies.
    """

    def __init__(self, base_lr: float, max_lr: float, first_cycle: int, cycle_mult: int) -> None:
        self.base_lr, self.max_lr, self.first_cycle, self.cycle_mult = base_lr, max_lr, first_cycle, cycle_mult

    @property
    def cycle_length(self) -> int:
        return self.first_cycle

    def _locate(self, step: int) -> tuple[int, int, int]:
        """(1-based cycle, its first step, its length) for update ``step``."""
        if self.cycle_mult == 1:
            return step // self.first_cycle + 1, step // self.first_cycle * self.first_cycle, self.first_cycle
        # Periods grow geometrically, so this loop runs O(log step) times.
        cycle, start, length = 1, 0, self.first_cycle
        while step >= start + length:
            cycle, start, length = cycle + 1, start + length, length * self.cycle_mult
        return cycle, start, length

    def cycle(self, step: int) -> int:
        return self._locate(step)[0]

    def next_cycle_end(self, completed_steps: int) -> int | None:
        _, start, length = self._locate(completed_steps)
        return start + length

    def height(self, step: int) -> float:
        _, start, length = self._locate(step)
        return 0.5 * (1.0 + math.cos(math.pi * (step - start) / length))

    def lr(self, step: int) -> float:
        return self.base_lr + (self.max_lr - self.base_lr) * self.height(step)
