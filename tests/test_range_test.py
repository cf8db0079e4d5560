"""The LR range test: the sweep, its outputs, its settings and presets (the reading of the curve: test_bounds.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from clr_dist.checks import check_range_test
from clr_dist.config import RangeTestConfig
from clr_dist.errors import ConfigError
from clr_dist.range_test import range_test, run_range_test, sweep_lr
from tests.conftest import compose_train, quick_overrides, run_cli


def test_sweep_runs_from_start_to_end() -> None:
    linear = [sweep_lr(s, 5, 0.01, 0.05, "linear") for s in range(5)]
    assert linear == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    exp = [sweep_lr(s, 3, 0.001, 0.1, "exp") for s in range(3)]
    assert exp == pytest.approx([0.001, 0.01, 0.1])  # a constant factor per step


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"start_lr": 0.1, "end_lr": 0.01}, "range_test.start_lr=0.1 and end_lr=0.01: need 0 < start_lr < end_lr"),
        ({"start_lr": 0.0}, "need 0 < start_lr < end_lr"),
        # mode, method and rule are enums, refused while composing (tests/test_config.py)
        ({"steps": 100}, "give the sweep's length as range_test.steps or range_test.epochs, and set the other to null"),
        ({"steps": 1, "epochs": None}, "range_test.steps=1: the sweep needs at least 2 steps"),
        ({"epochs": 0.0}, "range_test.epochs=0.0 must be positive"),
        ({"diverge_factor": 1.0}, "range_test.diverge_factor=1.0 must be above 1 (or null: never stop)"),
        ({"rise_fraction": 0.5}, "range_test.rise_fraction=0.5 must be in (0, 0.5)"),
        ({"eval_images": 0}, "range_test.eval_images=0 must be a positive integer"),
        ({"ragged_fraction": 1.0}, "range_test.ragged_fraction=1.0 must be in (0, 1) (or null: off)"),
    ],
)
def test_bad_settings(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_range_test(RangeTestConfig(**fields))
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_sweep_leaves_the_trainer_as_it_found_it(tmp_path: Path, small_demo: Path, make_trainer) -> None:
    """A fit() after a range test on the same Trainer ends exactly as a fit() alone: the sweep's
    weights, optimizer state, data position and RNG are all put back."""
    common = (
        "schedule=fixed",
        "schedule.base_lr=0.01",
        "trainer.max_steps=6",
        "range_test.steps=8",
        "range_test.epochs=null",
        "range_test.eval_every=4",
        "range_test.eval_images=30",
        "logger.log_every=3",
    )
    alone = make_trainer(small_demo, *common, run_dir=tmp_path / "alone")
    alone.fit()
    swept = make_trainer(small_demo, *common, run_dir=tmp_path / "swept")
    before = {name: tensor.clone() for name, tensor in swept.model.state_dict().items()}
    result = run_range_test(swept, swept.cfg.range_test)
    assert result["curve"]["step"] == list(range(8)) and len(result["curve"]["loss"]) == 8
    # The default sweep (range_test.start_lr/end_lr, linear) over 8 steps, 0-based.
    rt = swept.cfg.range_test
    assert result["curve"]["lr"] == pytest.approx([rt.start_lr + (rt.end_lr - rt.start_lr) * s / 7 for s in range(8)])
    assert all(math.isfinite(loss) for loss in result["curve"]["loss"])
    assert [e["step"] for e in result["evaluations"]] == [3, 7]
    assert swept.step == 0
    for name, tensor in before.items():  # the sweep's updates are undone
        assert torch.equal(swept.model.state_dict()[name], tensor), name
    swept.fit()
    assert swept.step == alone.step == 6
    weights = alone.model.state_dict()
    assert any(not torch.equal(before[name], tensor) for name, tensor in weights.items())  # fit() moved them
    for name, tensor in weights.items():
        assert torch.equal(swept.model.state_dict()[name], tensor), name


@pytest.mark.slow
def test_range_test_writes_json_png_and_stops_on_divergence(tmp_path: Path, small_demo: Path) -> None:
    cfg = compose_train(
        quick_overrides(
            small_demo,
            "range_test.start_lr=0.01",
            "range_test.end_lr=1e5",
            "range_test.mode=exp",
            "range_test.steps=40",
            "range_test.epochs=null",
            "logger.log_every=4",
        )
    )
    result = range_test(cfg, tmp_path / "run")
    assert result["stopped"] and "above 4.0 x the lowest" in result["stopped"]
    kept = len(result["curve"]["loss"])
    assert 2 <= kept < 40
    last = result["curve"]["loss"][-1]
    assert not math.isfinite(last) or last > 4 * min(result["curve"]["loss"])
    assert all(
        math.isfinite(v) and v <= 4 * min(result["curve"]["loss"][: i + 1])
        for i, v in enumerate(result["curve"]["loss"][:-1])
    )  # it stopped at the first one
    saved = json.loads((tmp_path / "run" / "range_test.json").read_text())
    assert saved["curve"]["loss"][:-1] == result["curve"]["loss"][:-1] and saved["stopped"] == result["stopped"]
    assert (tmp_path / "run" / "range_test.png").stat().st_size > 10_000


@pytest.mark.slow
def test_command_line_bad_input_is_one_line_before_any_work(tmp_path: Path, small_demo: Path) -> None:
    result = run_cli(
        [
            "clr-dist",
            "range-test",
            f"data.root={small_demo}",
            "range_test.start_lr=0.1",
            "range_test.end_lr=0.01",
            "logger.mode=disabled",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "clr-dist range-test: error: range_test.start_lr=0.1 and end_lr=0.01: need 0 < start_lr < end_lr (the LR rises)"
    )
    assert not list((tmp_path / "runs").rglob("range_test.json"))
    bad_bounds = run_cli(
        ["clr-dist", "train", f"data.root={small_demo}", "schedule.bounds_from=missing.json", "logger.mode=disabled"],
        cwd=tmp_path,
    )
    assert bad_bounds.returncode == 2
    assert "clr-dist train: error: schedule.bounds_from='missing.json' cannot be read" in bad_bounds.stderr


def test_range_test_presets() -> None:
    googlenet = compose_train(["experiment=range_test_googlenet"])
    assert googlenet.model.name == "googlenet" and googlenet.data.batch_size == 128
    rt = googlenet.range_test
    assert (rt.start_lr, rt.end_lr, rt.epochs, rt.steps, rt.mode) == (0.001, 0.065, 4.0, None, "linear")  # §4.2
    check_range_test(rt)
    sweep = compose_train(["experiment=range_test_superconvergence"]).range_test
    assert (sweep.end_lr, sweep.diverge_factor, sweep.mode) == (3.0, None, "linear")
    check_range_test(sweep)
