"""Schedule configuration, its checks, and the factory that turns it into a Schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

from clr_dist.errors import ConfigError
from clr_dist.schedules.base import Schedule
from clr_dist.schedules.baselines import Fixed
from clr_dist.schedules.cyclical import ExpRange, Triangular, Triangular2


@dataclass
class ScheduleConfig:
    policy: str = "triangular"
    base_lr: float = 0.01
    max_lr: float = 0.06
    # Half a cycle, in optimizer steps; or give stepsize_epochs instead (the paper: 2-10 epochs).
    stepsize: Optional[int] = None
    stepsize_epochs: Optional[float] = None
    # Per-step decay of exp_range.
    gamma: float = 1.0


@dataclass(frozen=True)
class ResolvedSchedule:
    schedule: Schedule
    stepsize: int | None
    steps_per_epoch: int


POLICIES: dict[str, Callable[[ScheduleConfig, int], Schedule]] = {
    "fixed": lambda cfg, stepsize: Fixed(cfg.base_lr),
    "triangular": lambda cfg, stepsize: Triangular(cfg.base_lr, cfg.max_lr, stepsize),
    "triangular2": lambda cfg, stepsize: Triangular2(cfg.base_lr, cfg.max_lr, stepsize),
    "exp_range": lambda cfg, stepsize: ExpRange(cfg.base_lr, cfg.max_lr, stepsize, cfg.gamma),
}
CYCLICAL = frozenset({"triangular", "triangular2", "exp_range"})


def resolve_stepsize(cfg: ScheduleConfig, steps_per_epoch: int) -> int:
    """Stepsize in optimizer steps, from ``stepsize`` or from ``stepsize_epochs``."""
    if cfg.stepsize is not None and cfg.stepsize_epochs is not None:
        raise ConfigError(
            f"schedule.stepsize={cfg.stepsize} and schedule.stepsize_epochs={cfg.stepsize_epochs} "
            f"are both set; give one of them (the other =null)"
        )
    if cfg.stepsize_epochs is not None:
        if cfg.stepsize_epochs <= 0:
            raise ConfigError(f"schedule.stepsize_epochs={cfg.stepsize_epochs} must be positive")
        return max(1, math.ceil(cfg.stepsize_epochs * steps_per_epoch))
    if cfg.stepsize is None:
        raise ConfigError(
            f"schedule.policy={cfg.policy} needs schedule.stepsize (steps) or "
            f"schedule.stepsize_epochs (the paper suggests 2-10 epochs)"
        )
    if cfg.stepsize <= 0:
        raise ConfigError(f"schedule.stepsize={cfg.stepsize} must be a positive number of steps")
    return cfg.stepsize


def build_schedule(cfg: ScheduleConfig, steps_per_epoch: int) -> ResolvedSchedule:
    """Check ``cfg`` and build its Schedule; ``steps_per_epoch`` counts optimizer steps."""
    if cfg.policy not in POLICIES:
        raise ConfigError(
            f"unknown schedule.policy={cfg.policy!r}; valid policies: {', '.join(sorted(POLICIES))}"
        )
    if cfg.base_lr <= 0:
        raise ConfigError(f"schedule.base_lr={cfg.base_lr} must be positive")
    stepsize = None
    if cfg.policy in CYCLICAL:
        if cfg.max_lr < cfg.base_lr:
            raise ConfigError(
                f"schedule.max_lr={cfg.max_lr} is below schedule.base_lr={cfg.base_lr}; "
                f"max_lr is the upper bound of the cycle"
            )
        if not 0 < cfg.gamma <= 1:
            raise ConfigError(f"schedule.gamma={cfg.gamma} must be in (0, 1]")
        stepsize = resolve_stepsize(cfg, steps_per_epoch)
    return ResolvedSchedule(POLICIES[cfg.policy](cfg, stepsize), stepsize, steps_per_epoch)
