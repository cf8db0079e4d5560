"""Multi-stage schedules, as in the paper's Table 2: consecutive stages, each its own policy."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from clr_dist.schedules.base import Schedule


@dataclass(frozen=True)
class Stage:
    """``schedule`` runs on updates [start, end); it sees ``step - start``, like Caffe's
    ``start_lr_policy`` (Appendix A: ``itr = iter_ - start_lr_policy``), so its cycle count,
    triangular2 halving and exp_range decay all restart at ``start``. ``end`` None: open-ended."""

    start: int
    end: int | None
    schedule: Schedule


class MultiStage(Schedule):
    """Stages that follow each other without gaps, the first starting at update 0.

    Every stage's cycle ends are cycle ends of the whole schedule, so the trainer validates at
    each of them. ``cycle`` numbers cycles consecutively over the stages (a cycle cut short by
    its stage's end still counts); updates of a stage without cycles report 0. Past the last
    stage's end the last stage simply continues (LR and cycle ends); ``total_steps`` is that end.
    """

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)
        self._starts = [stage.start for stage in self.stages]
        # Cycles begun before each stage, so cycle numbers run on across stages.
        self._cycles_before = [0]
        for stage in self.stages[:-1]:
            last_local_step = stage.end - 1 - stage.start
            self._cycles_before.append(self._cycles_before[-1] + stage.schedule.cycle(last_local_step))

    def _index(self, step: int) -> int:
        return bisect.bisect_right(self._starts, step) - 1

    def lr(self, step: int) -> float:
        stage = self.stages[self._index(step)]
        return stage.schedule.lr(step - stage.start)

    def height(self, step: int) -> float:
        stage = self.stages[self._index(step)]
        return stage.schedule.height(step - stage.start)

    @property
    def cycle_length(self) -> int | None:
        lengths = [stage.schedule.cycle_length for stage in self.stages]
        return next((length for length in lengths if length is not None), None)

    @property
    def total_steps(self) -> int | None:
        return self.stages[-1].end

    def cycle(self, step: int) -> int:
        index = self._index(step)
        stage = self.stages[index]
        local = stage.schedule.cycle(step - stage.start)
        return self._cycles_before[index] + local if local else 0

    def next_cycle_end(self, completed_steps: int) -> int | None:
        last = len(self.stages) - 1
        for index in range(self._index(completed_steps), last + 1):
            stage = self.stages[index]
            local = stage.schedule.next_cycle_end(max(0, completed_steps - stage.start))
            if local is None:
                continue
            end = stage.start + local
            if index == last or end <= stage.end:
                return end
        return None
