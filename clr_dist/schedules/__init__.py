"""Learning-rate policies as stateless functions of the global optimizer step."""

from clr_dist.schedules.base import Schedule
from clr_dist.schedules.factory import POLICIES, ResolvedSchedule, ScheduleConfig, build_schedule

__all__ = ["POLICIES", "ResolvedSchedule", "Schedule", "ScheduleConfig", "build_schedule"]
