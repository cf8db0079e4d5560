"""Schedule configuration, its checks, and the factory that turns it into a Schedule.

Every default lives in ``ScheduleConfig`` (and ``StageConfig``); the builders below only read
fields. Every check raises ConfigError with one line naming the key, its value and what to do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from clr_dist.errors import ConfigError
from clr_dist.schedules.base import Schedule
from clr_dist.schedules.baselines import Decay, Exp, Fixed, MultiStep, Step
from clr_dist.schedules.cosine import CosineRestarts
from clr_dist.schedules.cyclical import SHAPES, ExpRange, ExpRangeAmplitude, Triangular, Triangular2
from clr_dist.schedules.modifiers import InverseMomentum, LinearWarmup
from clr_dist.schedules.multistage import MultiStage, Stage
from clr_dist.schedules.one_cycle import OneCycle


# The keys with a fixed set of values, typed so that Hydra refuses any other while composing; a
# member is its own string, named as its value because OmegaConf looks values up by member name.
class PolicyName(StrEnum):
    """``schedule.policy``: a key of POLICIES, or multistage."""

    cosine_restarts = "cosine_restarts"
    decay = "decay"
    exp = "exp"
    exp_range = "exp_range"
    exp_range_amplitude = "exp_range_amplitude"
    fixed = "fixed"
    multistage = "multistage"
    multistep = "multistep"
    one_cycle = "one_cycle"
    step = "step"
    triangular = "triangular"
    triangular2 = "triangular2"


# ``schedule.shape``: the windows of ``clr_dist.schedules.cyclical.SHAPES``.
CycleShape = StrEnum("CycleShape", [(shape, shape) for shape in SHAPES], module=__name__)


@dataclass
class StageConfig:
    """One row of a multistage schedule (the paper's Table 2). Keys left null take the value of
    the same key of the enclosing ``schedule`` config."""

    # Any policy but multistage; required.
    policy: Optional[PolicyName] = None
    # First update of the stage; null: where the previous stage ends (0 for the first stage).
    start: Optional[int] = None
    # The update where the stage ends (exclusive, Caffe's max_iter); null only for the last stage,
    # which then runs on forever.
    max_iter: Optional[int] = None
    base_lr: Optional[float] = None
    max_lr: Optional[float] = None
    stepsize: Optional[int] = None
    stepsize_epochs: Optional[float] = None
    gamma: Optional[float] = None


@dataclass
class ScheduleConfig:
    """The ``schedule`` node of the train config. See POLICY_NAMES for ``policy``."""

    policy: PolicyName = PolicyName.triangular
    # Lower LR bound (the LR itself for fixed/step/multistep/exp).
    base_lr: float = 0.01
    # Upper LR bound of cyclical, decay, one_cycle and cosine_restarts policies.
    max_lr: float = 0.06
    # A range_test.json (`clr-dist range-test`): take base_lr and max_lr from its suggestion.
    bounds_from: Optional[str] = None
    # Half a cycle, in optimizer steps (the decay length for decay, the drop interval for step);
    # or give stepsize_epochs instead (the paper: "2 - 10 times the number of iterations in an
    # epoch", §3.2), converted with the trainer's optimizer steps per epoch.
    stepsize: Optional[int] = None
    stepsize_epochs: Optional[float] = None
    # Per-step decay factor in (0, 1]: exp_range, exp_range_amplitude, exp; per drop for step and
    # multistep.
    gamma: float = 1.0
    # Window of each cycle: triangular (the paper's), welch (parabolic) or hann (sinusoidal).
    shape: CycleShape = CycleShape.triangular
    # Fraction of each 2*stepsize cycle spent rising, in (0, 1); 0.5 is the paper's symmetric
    # cycle (CyclicLR: step_size_up / (step_size_up + step_size_down)).
    step_ratio: float = 0.5
    # multistep: updates at which the LR is multiplied by gamma (Caffe's stepvalue), increasing.
    milestones: list[int] = field(default_factory=list)
    # one_cycle: the whole run's length in updates (conf/schedule/one_cycle.yaml: trainer.max_steps).
    total_steps: Optional[int] = None
    # one_cycle: the LR at the last update, as a fraction of base_lr.
    final_lr_ratio: float = 0.01
    # cosine_restarts: each cycle is this many times longer than the previous one (SGDR's T_mult).
    cycle_mult: int = 1
    # Linear LR warmup over the first updates (0: none); see LinearWarmup.
    warmup_steps: int = 0
    # Cycle the momentum (SGD momentum, Adam's beta1) inversely to the LR.
    momentum_cycle: bool = False
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    # multistage: the stages, in order, without gaps.
    stages: list[StageConfig] = field(default_factory=list)


@dataclass(frozen=True)
class BuiltSchedule:
    """What ``build_schedule`` returns: the schedule and the numbers it was built with."""

    schedule: Schedule
    # The stepsize in optimizer steps after converting stepsize_epochs; None for policies without
    # one, and for multistage (each stage has its own).
    stepsize: int | None
    steps_per_epoch: int | None


@dataclass(frozen=True)
class Policy:
    """How to build one policy, given the config and the stepsize in steps (None if unused)."""

    build: Callable[[ScheduleConfig, Optional[int]], Schedule]
    needs_stepsize: bool = False
    # Uses max_lr as an upper bound (checked against base_lr).
    bounded: bool = False
    # A triangular wave: takes shape and step_ratio.
    wave: bool = False


POLICIES: dict[str, Policy] = {
    "fixed": Policy(lambda cfg, ss: Fixed(cfg.base_lr)),
    "step": Policy(lambda cfg, ss: Step(cfg.base_lr, ss, cfg.gamma), needs_stepsize=True),
    "multistep": Policy(lambda cfg, ss: MultiStep(cfg.base_lr, cfg.milestones, cfg.gamma)),
    "exp": Policy(lambda cfg, ss: Exp(cfg.base_lr, cfg.gamma)),
    "decay": Policy(lambda cfg, ss: Decay(cfg.base_lr, cfg.max_lr, ss), needs_stepsize=True, bounded=True),
    "triangular": Policy(
        lambda cfg, ss: Triangular(cfg.base_lr, cfg.max_lr, ss, cfg.step_ratio, cfg.shape),
        needs_stepsize=True,
        bounded=True,
        wave=True,
    ),
    "triangular2": Policy(
        lambda cfg, ss: Triangular2(cfg.base_lr, cfg.max_lr, ss, cfg.step_ratio, cfg.shape),
        needs_stepsize=True,
        bounded=True,
        wave=True,
    ),
    "exp_range": Policy(
        lambda cfg, ss: ExpRange(cfg.base_lr, cfg.max_lr, ss, cfg.gamma, cfg.step_ratio, cfg.shape),
        needs_stepsize=True,
        bounded=True,
        wave=True,
    ),
    "exp_range_amplitude": Policy(
        lambda cfg, ss: ExpRangeAmplitude(cfg.base_lr, cfg.max_lr, ss, cfg.gamma, cfg.step_ratio, cfg.shape),
        needs_stepsize=True,
        bounded=True,
        wave=True,
    ),
    "one_cycle": Policy(
        lambda cfg, ss: OneCycle(
            cfg.base_lr, cfg.max_lr, ss, cfg.total_steps, cfg.base_lr * cfg.final_lr_ratio, cfg.step_ratio, cfg.shape
        ),
        needs_stepsize=True,
        bounded=True,
        wave=True,
    ),
    # The first cycle is 2*stepsize long, like the paper's policies, so switching policy keeps the
    # cycle ends (and the validation points) where they were.
    "cosine_restarts": Policy(
        lambda cfg, ss: CosineRestarts(cfg.base_lr, cfg.max_lr, 2 * ss, cfg.cycle_mult),
        needs_stepsize=True,
        bounded=True,
    ),
}
MULTISTAGE = "multistage"
POLICY_NAMES: tuple[str, ...] = tuple(sorted([*POLICIES, MULTISTAGE]))


def resolve_stepsize(cfg: ScheduleConfig, steps_per_epoch: int | None, key: str = "schedule") -> int:
    """Stepsize in optimizer steps, from ``stepsize`` or from ``stepsize_epochs``."""
    if cfg.stepsize is not None and cfg.stepsize_epochs is not None:
        raise ConfigError(
            f"{key}.stepsize={cfg.stepsize} and {key}.stepsize_epochs={cfg.stepsize_epochs} "
            f"are both set; give one of them (the other =null)"
        )
    if cfg.stepsize_epochs is not None:
        if cfg.stepsize_epochs <= 0:
            raise ConfigError(f"{key}.stepsize_epochs={cfg.stepsize_epochs} must be positive")
        if steps_per_epoch is None:
            raise ConfigError(
                f"{key}.stepsize_epochs={cfg.stepsize_epochs} needs the optimizer steps per epoch, which come "
                f"from the dataset: point data.root at it, or give the stepsize in steps ({key}.stepsize=N)"
            )
        return max(1, math.ceil(cfg.stepsize_epochs * steps_per_epoch))
    if cfg.stepsize is None:
        raise ConfigError(
            f"{key}.policy={cfg.policy} needs {key}.stepsize (steps) or "
            f"{key}.stepsize_epochs (the paper suggests 2-10 epochs)"
        )
    if cfg.stepsize <= 0:
        raise ConfigError(f"{key}.stepsize={cfg.stepsize} must be a positive number of steps")
    return cfg.stepsize


def as_schedule_config(cfg: ScheduleConfig | DictConfig | dict[str, Any]) -> ScheduleConfig:
    """A ScheduleConfig from the dataclass itself, a (structured or plain) DictConfig, or a dict.

    A node of the composed train config keeps its parent, so interpolations such as
    ``total_steps: ${trainer.max_steps}`` resolve here.
    """
    if isinstance(cfg, ScheduleConfig):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_object(cfg)
        if isinstance(cfg, ScheduleConfig):
            return cfg
    merged = OmegaConf.merge(OmegaConf.structured(ScheduleConfig), OmegaConf.create(cfg))
    return OmegaConf.to_object(merged)


def build_schedule(cfg: ScheduleConfig | DictConfig, steps_per_epoch: int | None) -> BuiltSchedule:
    """Check ``cfg`` and build its Schedule; ``steps_per_epoch`` counts optimizer steps (None when
    unknown: then a stepsize in epochs is refused).

    The policy is wrapped by LinearWarmup when ``warmup_steps > 0`` and by InverseMomentum when
    ``momentum_cycle`` is set; otherwise ``momentum()`` returns None.
    """
    cfg = as_schedule_config(cfg)
    if cfg.policy != MULTISTAGE and cfg.stages:
        raise ConfigError(
            f"schedule.stages has {len(cfg.stages)} stage(s) but schedule.policy={cfg.policy}; "
            f"use schedule.policy=multistage or schedule.stages=[]"
        )
    if cfg.policy == MULTISTAGE:
        schedule, stepsize = _build_multistage(cfg, steps_per_epoch), None
    else:
        _check_wave_keys(cfg)
        schedule, stepsize = _build_policy(cfg, steps_per_epoch, "schedule")
    if cfg.warmup_steps < 0:
        raise ConfigError(f"schedule.warmup_steps={cfg.warmup_steps} must be >= 0 (0: no warmup)")
    if cfg.warmup_steps > 0:
        schedule = LinearWarmup(schedule, cfg.warmup_steps)
    if cfg.momentum_cycle:
        if not 0 <= cfg.base_momentum <= cfg.max_momentum < 1:
            raise ConfigError(
                f"schedule.base_momentum={cfg.base_momentum} and schedule.max_momentum={cfg.max_momentum} "
                f"must satisfy 0 <= base_momentum <= max_momentum < 1"
            )
        schedule = InverseMomentum(schedule, cfg.base_momentum, cfg.max_momentum)
    return BuiltSchedule(schedule, stepsize, steps_per_epoch)


def check_schedule_config(cfg: ScheduleConfig | DictConfig) -> Schedule:
    """Every check of ``build_schedule`` that needs no data; returns the schedule built with a
    stand-in of one optimizer step per epoch. Only a stepsize in epochs depends on the data, and
    the real one is at least as long as the stand-in's: what fails here fails with any data."""
    return build_schedule(cfg, steps_per_epoch=1).schedule


def _check_wave_keys(cfg: ScheduleConfig) -> None:
    """Refuse shape/step_ratio on policies that would silently ignore them."""
    if cfg.policy in POLICIES and not POLICIES[cfg.policy].wave:
        wave_policies = ", ".join(name for name, policy in POLICIES.items() if policy.wave)
        if cfg.shape != ScheduleConfig.shape:
            raise ConfigError(
                f"schedule.shape={cfg.shape} has no effect on schedule.policy={cfg.policy}; "
                f"it applies to {wave_policies}; remove the override"
            )
        if cfg.step_ratio != ScheduleConfig.step_ratio:
            raise ConfigError(
                f"schedule.step_ratio={cfg.step_ratio} has no effect on schedule.policy={cfg.policy}; "
                f"it applies to {wave_policies}; remove the override"
            )


def _build_policy(cfg: ScheduleConfig, steps_per_epoch: int | None, key: str) -> tuple[Schedule, int | None]:
    """Check the keys of one (non-multistage) policy and build it; ``key`` prefixes messages."""
    if cfg.policy not in POLICIES:
        raise ConfigError(f"unknown {key}.policy={cfg.policy!r}; valid policies: {', '.join(POLICY_NAMES)}")
    policy = POLICIES[cfg.policy]
    # SGDR usually anneals to 0; every other policy multiplies or offsets base_lr.
    if cfg.policy == "cosine_restarts" and cfg.base_lr < 0:
        raise ConfigError(f"{key}.base_lr={cfg.base_lr} must be >= 0 (the LR at the end of each cycle)")
    if cfg.policy != "cosine_restarts" and cfg.base_lr <= 0:
        raise ConfigError(f"{key}.base_lr={cfg.base_lr} must be positive")
    if policy.bounded and cfg.max_lr < cfg.base_lr:
        raise ConfigError(
            f"{key}.max_lr={cfg.max_lr} is below {key}.base_lr={cfg.base_lr}; "
            f"max_lr is the upper bound of the cycle: swap them"
        )
    if not 0 < cfg.gamma <= 1:
        raise ConfigError(f"{key}.gamma={cfg.gamma} must be in (0, 1] (1: no decay)")
    if cfg.shape not in SHAPES:
        raise ConfigError(f"unknown {key}.shape={cfg.shape!r}; valid shapes: {', '.join(SHAPES)}")
    if not 0 < cfg.step_ratio < 1:
        raise ConfigError(
            f"{key}.step_ratio={cfg.step_ratio} must be in (0, 1): the fraction of each cycle "
            f"spent rising (0.5: symmetric)"
        )
    stepsize = resolve_stepsize(cfg, steps_per_epoch, key) if policy.needs_stepsize else None

    if cfg.policy == "multistep":
        milestones = list(cfg.milestones)
        if not milestones:
            raise ConfigError(f"{key}.policy=multistep needs {key}.milestones, e.g. [30000,60000]")
        if milestones[0] <= 0 or any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ConfigError(f"{key}.milestones={milestones} must be positive and strictly increasing update counts")
    if cfg.policy == "one_cycle":
        if cfg.total_steps is None:
            raise ConfigError(
                f"{key}.policy=one_cycle needs {key}.total_steps, the run's length in updates "
                f"(conf/schedule/one_cycle.yaml sets it to ${{trainer.max_steps}})"
            )
        if cfg.total_steps <= 2 * stepsize:
            raise ConfigError(
                f"{key}.total_steps={cfg.total_steps} must exceed the cycle of 2*stepsize={2 * stepsize} "
                f"steps, leaving room for the final anneal; raise it or lower the stepsize"
            )
        if not 0 <= cfg.final_lr_ratio <= 1:
            raise ConfigError(f"{key}.final_lr_ratio={cfg.final_lr_ratio} must be in [0, 1] (a fraction of base_lr)")
    if cfg.policy == "cosine_restarts" and cfg.cycle_mult < 1:
        raise ConfigError(f"{key}.cycle_mult={cfg.cycle_mult} must be an integer >= 1 (1: equal cycles)")
    return policy.build(cfg, stepsize), stepsize


def _build_multistage(cfg: ScheduleConfig, steps_per_epoch: int | None) -> MultiStage:
    if not cfg.stages:
        raise ConfigError(
            "schedule.policy=multistage needs schedule.stages, e.g. "
            "[{policy: triangular2, base_lr: 0.001, max_lr: 0.005, stepsize: 2000, start: 0, max_iter: 16000}]"
        )
    stages: list[Stage] = []
    previous_end = 0
    for index, stage_cfg in enumerate(cfg.stages):
        key = f"schedule.stages[{index}]"
        last = index == len(cfg.stages) - 1
        if stage_cfg.policy not in POLICIES:
            given = None if stage_cfg.policy is None else str(stage_cfg.policy)  # a member's repr names its class
            raise ConfigError(
                f"{key}.policy={given!r} is not a policy a stage can run; give one of: {', '.join(sorted(POLICIES))}"
            )
        start = previous_end if stage_cfg.start is None else stage_cfg.start
        if start < previous_end:
            raise ConfigError(
                f"{key}.start={start} overlaps the previous stage, which ends at {previous_end}; "
                f"stages must be in order without overlaps: set start={previous_end}"
            )
        if start > previous_end:
            what = "the schedule must start at 0" if index == 0 else f"the previous stage ends at {previous_end}"
            raise ConfigError(f"{key}.start={start} leaves a gap ({what}); set start={previous_end}")
        end = stage_cfg.max_iter
        if end is None and not last:
            raise ConfigError(f"{key}.max_iter=None: every stage but the last needs max_iter (its end update)")
        if end is not None and end <= start:
            raise ConfigError(f"{key}.max_iter={end} must be greater than its start={start}")
        # A stage is a schedule config of its own: the stage's keys over the enclosing ones.
        # Keys without effect on the stage's policy fall back to their defaults, so a parent
        # shape does not trip the checks of a fixed stage.
        overrides = {
            name: value
            for name, value in dataclasses.asdict(stage_cfg).items()
            if value is not None and name not in ("start", "max_iter")
        }
        if stage_cfg.stepsize is not None or stage_cfg.stepsize_epochs is not None:
            overrides.setdefault("stepsize", None)
            overrides.setdefault("stepsize_epochs", None)
        policy = POLICIES.get(stage_cfg.policy)
        if policy is not None and not policy.wave:
            overrides.update(shape=ScheduleConfig.shape, step_ratio=ScheduleConfig.step_ratio)
        if stage_cfg.policy == "one_cycle":
            overrides["total_steps"] = None if end is None else end - start
        stage_policy_cfg = dataclasses.replace(cfg, stages=[], **overrides)
        schedule, _ = _build_policy(stage_policy_cfg, steps_per_epoch, key)
        stages.append(Stage(start, end, schedule))
        previous_end = end if end is not None else start
    return MultiStage(stages)
