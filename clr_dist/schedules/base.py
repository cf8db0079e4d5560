"""The schedule contract: a pure function of the global optimizer step.

``step`` is the 0-based index of an optimizer update (not a micro-batch, not an epoch):
``lr(step)`` is the learning rate that update applies. Nothing is stored between calls, so every
rank computes the same value without communicating and a resumed run needs only the step.

Cycle queries use two counts that differ by one, on purpose:

- ``cycle(step)`` takes an update index: the cycle that update belongs to.
- ``is_cycle_end(completed_steps)`` / ``next_cycle_end(completed_steps)`` take the number of
  updates done so far, which is what the trainer holds right after an update. A cycle of length
  ``L`` starting at update 0 ends when ``completed_steps == L``, and its last update is ``L - 1``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class Schedule(ABC):
    """A learning-rate policy. Subclasses implement ``lr``; cyclical ones also the cycle queries.

    The defaults below describe evenly spaced cycles of ``cycle_length`` steps starting at update
    0, or no cycles when ``cycle_length`` is None; policies with uneven cycles (multistage,
    cosine restarts with a growing period, one-cycle) override ``cycle`` and ``next_cycle_end``.
    ``is_cycle_end`` is derived from ``next_cycle_end`` and needs no override.
    """

    @abstractmethod
    def lr(self, step: int) -> float:
        """The learning rate applied by optimizer update ``step`` (0-based)."""

    def momentum(self, step: int) -> float | None:
        """The momentum for update ``step``, or None when the schedule leaves momentum alone."""
        return None

    def height(self, step: int) -> float:
        """Where the LR of update ``step`` stands between its current lower and upper bound, in
        [0, 1]: 0 at the lower bound (``base_lr``, decayed for exp_range), 1 at ``max_lr``.

        Momentum cycling maps it inversely onto [base_momentum, max_momentum], as CyclicLR does.
        Policies without an upper bound (fixed, step, multistep, exp) sit at their lower bound.
        """
        return 0.0

    @property
    def cycle_length(self) -> int | None:
        """Optimizer steps in the first cycle (two stepsizes for the paper's policies), or None
        for a policy without cycles."""
        return None

    @property
    def total_steps(self) -> int | None:
        """The number of updates the schedule is planned for, or None when it goes on forever.
        Past it ``lr`` stays defined (see each policy), so a longer run does not crash."""
        return None

    def cycle(self, step: int) -> int:
        """The 1-based cycle that update ``step`` belongs to; 0 outside any cycle."""
        length = self.cycle_length
        if length is None:
            return 0
        return step // length + 1

    def next_cycle_end(self, completed_steps: int) -> int | None:
        """The smallest update count above ``completed_steps`` that ends a cycle, or None."""
        length = self.cycle_length
        if length is None:
            return None
        return (completed_steps // length + 1) * length

    def is_cycle_end(self, completed_steps: int) -> bool:
        """True when ``completed_steps`` updates finish a cycle: the LR is back at its minimum
        and, as the paper observes, validation accuracy peaks."""
        return completed_steps > 0 and self.next_cycle_end(completed_steps - 1) == completed_steps
