"""The schedule contract: a pure function of the global optimizer step.

``step`` is the 0-based index of an optimizer update (not a micro-batch, not an epoch):
``lr(step)`` is the learning rate that update applies. Nothing is stored between calls, so every
rank computes the same value without communicating and a resumed run needs only the step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class Schedule(ABC):
    """A learning-rate policy. Subclasses implement ``lr``; cyclical ones also ``cycle_length``."""

    @abstractmethod
    def lr(self, step: int) -> float:
        """The learning rate applied by optimizer update ``step`` (0-based)."""

    def momentum(self, step: int) -> float | None:
        """The momentum for update ``step``, or None when the schedule leaves momentum alone."""
        return None

    @property
    def cycle_length(self) -> int | None:
        """Optimizer steps per cycle (two stepsizes), or None for a policy without cycles."""
        return None

    def cycle(self, step: int) -> int:
        """The 1-based cycle that update ``step`` belongs to; 0 for a policy without cycles."""
        if self.cycle_length is None:
            return 0
        return step // self.cycle_length + 1

    def is_cycle_end(self, completed_steps: int) -> bool:
        """True when ``completed_steps`` updates finish a cycle: the LR is back at its minimum
        and, as the paper observes, validation accuracy peaks."""
        length = self.cycle_length
        return length is not None and completed_steps > 0 and completed_steps % length == 0
