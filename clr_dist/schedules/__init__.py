"""Learning-rate policies as stateless functions of the global optimizer step."""

from clr_dist.schedules.base import Schedule
from clr_dist.schedules.factory import (
    POLICIES,
    POLICY_NAMES,
    ResolvedSchedule,
    ScheduleConfig,
    StageConfig,
    as_schedule_config,
    build_schedule,
)

__all__ = [
    "POLICIES",
    "POLICY_NAMES",
    "ResolvedSchedule",
    "Schedule",
    "ScheduleConfig",
    "StageConfig",
    "as_schedule_config",
    "build_schedule",
]
