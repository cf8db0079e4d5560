"""Every conf/schedule/*.yaml preset loads into ScheduleConfig and builds, one per policy."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from clr_dist.schedules import POLICY_NAMES, ScheduleConfig, build_schedule

PRESETS = sorted((Path(__file__).parents[2] / "conf" / "schedule").glob("*.yaml"))
DEMO_STEPS_PER_EPOCH, DEMO_MAX_STEPS = 31, 1000  # the demo set: 2,000 images / batch 64; trainer default


def load(path: Path):
    """The preset as the ``schedule`` node of a train config (so ${trainer.max_steps} resolves)."""
    root = OmegaConf.create({"trainer": {"max_steps": DEMO_MAX_STEPS}})
    root.schedule = OmegaConf.merge(OmegaConf.structured(ScheduleConfig), OmegaConf.load(path))
    return root.schedule


def test_one_preset_per_policy():
    assert sorted(path.stem for path in PRESETS) == sorted(POLICY_NAMES)


@pytest.mark.parametrize("path", PRESETS, ids=lambda path: path.stem)
def test_preset_builds(path: Path):
    cfg = load(path)
    assert cfg.policy == path.stem
    schedule = build_schedule(cfg, DEMO_STEPS_PER_EPOCH).schedule
    lrs = [schedule.lr(step) for step in range(DEMO_MAX_STEPS)]
    assert all(math.isfinite(lr) and lr >= 0 for lr in lrs)
    if path.stem == "one_cycle":
        # total_steps follows trainer.max_steps: the anneal ends on the run's last update.
        assert schedule.total_steps == DEMO_MAX_STEPS
        assert lrs[-1] == pytest.approx(cfg.base_lr * cfg.final_lr_ratio)


def test_paper_values_in_presets():
    exp_range = load(next(path for path in PRESETS if path.stem == "exp_range"))
    assert exp_range.gamma == 0.99994  # §4.1.1: "gamma = 0.99994", 82.2% at 42,000 steps
    triangular = build_schedule(load(next(path for path in PRESETS if path.stem == "triangular")), DEMO_STEPS_PER_EPOCH)
    assert triangular.stepsize == 4 * DEMO_STEPS_PER_EPOCH  # stepsize_epochs: 4, within the paper's 2-10
