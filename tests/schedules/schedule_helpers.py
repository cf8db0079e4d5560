"""Helpers shared by the schedule tests."""

from __future__ import annotations

from typing import Any

from clr_dist.schedules import Schedule, ScheduleConfig, build_schedule


def build(steps_per_epoch: int = 100, **fields: Any) -> Schedule:
    """The Schedule the trainer would get for ``ScheduleConfig(**fields)``."""
    return build_schedule(ScheduleConfig(**fields), steps_per_epoch).schedule


def cycle_ends(schedule: Schedule, up_to: int) -> list[int]:
    """Cycle ends in (0, up_to], found with is_cycle_end (the trainer's query), step by step."""
    return [done for done in range(1, up_to + 1) if schedule.is_cycle_end(done)]
