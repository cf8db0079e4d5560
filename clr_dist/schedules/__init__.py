"""Learning-rate policies as stateless functions of the global optimizer step."""

from clr_dist.schedules.base import Schedule
from clr_dist.schedules.factory import (
    POLICIES,
    POLICY_NAMES,
    BuiltSchedule,
    CycleShape,
    PolicyName,
    ScheduleConfig,
    StageConfig,
    as_schedule_config,
    build_schedule,
    check_schedule_config,
)

__all__ = [
    "POLICIES",
    "POLICY_NAMES",
    "BuiltSchedule",
    "CycleShape",
    "PolicyName",
    "Schedule",
    "ScheduleConfig",
    "StageConfig",
    "as_schedule_config",
    "build_schedule",
    "check_schedule_config",
]
