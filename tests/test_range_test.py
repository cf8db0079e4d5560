"""The LR range test: the sweep, reading the bounds off a curve, the outputs, bad settings."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from clr_dist.bounds import centred_mean, read_bounds, read_bounds_off, suggest
from clr_dist.checks import check_range_test
from clr_dist.config import RangeTestConfig
from clr_dist.errors import ConfigError
from clr_dist.range_test import range_test, run_range_test, sweep_lr
from tests.conftest import compose_train, quick_overrides, run_cli

LRS = [0.001 * (i + 1) for i in range(100)]  # 0.001 .. 0.1
GRID = 0.001


def ramp(lr: float, low: float, high: float) -> float:
    """0 below ``low``, 1 above ``high``, linear between."""
    return min(1.0, max(0.0, (lr - low) / (high - low)))


def accuracy_curve(noise: float = 0.01) -> list[float]:
    """Flat at chance (10%) up to LR 0.02, rising to 80% at 0.06, ragged then falling past 0.07."""
    rng = random.Random(0)
    return [0.1 + 0.7 * ramp(lr, 0.02, 0.06) - 0.5 * ramp(lr, 0.07, 0.1) + rng.uniform(-noise, noise) for lr in LRS]


def loss_curve(noise: float = 0.02) -> list[float]:
    """Flat at 2.3 up to LR 0.02, falling to 0.5 at 0.06, then blowing up past 0.075."""
    rng = random.Random(1)
    return [
        2.3 - 1.8 * ramp(lr, 0.02, 0.06) + (math.exp(60 * (lr - 0.075)) - 1) * (lr > 0.075) + rng.uniform(-noise, noise)
        for lr in LRS
    ]


def test_sweep_runs_from_start_to_end() -> None:
    linear = [sweep_lr(s, 5, 0.01, 0.05, "linear") for s in range(5)]
    assert linear == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    exp = [sweep_lr(s, 3, 0.001, 0.1, "exp") for s in range(3)]
    assert exp == pytest.approx([0.001, 0.01, 0.1])  # a constant factor per step


def test_centred_mean_by_hand() -> None:
    values = [3.0, 0.0, 6.0, 9.0, 0.0, 12.0, 3.0]
    # Window 3: each point with its two neighbours; the end points have none on one side, so
    # their window narrows to themselves alone (still centred).
    assert centred_mean(values, 3) == pytest.approx(
        [
            3.0,  # [3]
            (3 + 0 + 6) / 3,  # 3
            (0 + 6 + 9) / 3,  # 5
            (6 + 9 + 0) / 3,  # 5
            (9 + 0 + 12) / 3,  # 7
            (0 + 12 + 3) / 3,  # 5
            3.0,  # [3]
        ]
    )
    # Window 5: two either side; one in from each end the window narrows to 3 points, at the ends to 1.
    assert centred_mean(values, 5) == pytest.approx(
        [
            3.0,  # [3]
            (3 + 0 + 6) / 3,  # 3
            (3 + 0 + 6 + 9 + 0) / 5,  # 3.6
            (0 + 6 + 9 + 0 + 12) / 5,  # 5.4
            (6 + 9 + 0 + 12 + 3) / 5,  # 6
            (0 + 12 + 3) / 3,  # 5
            3.0,  # [3]
        ]
    )
    assert centred_mean(values, 1) == values
    assert centred_mean(values, 4) == centred_mean(values, 5)  # an even window: half of it either side
    assert centred_mean([], 5) == []


def test_centred_smoothing_does_not_move_a_peak() -> None:
    bump = [max(0.0, 5 - abs(i - 20)) for i in range(41)]  # 0 ... 0 1 2 3 4 5 4 3 2 1 0 ... 0, peak at 20
    smoothed = centred_mean(bump, 7)
    assert max(range(41), key=smoothed.__getitem__) == 20
    # Around the peak, by hand: the mean of 7 points centred there.
    assert smoothed[20] == pytest.approx((2 + 3 + 4 + 5 + 4 + 3 + 2) / 7)
    assert smoothed[19] == smoothed[21] == pytest.approx((1 + 2 + 3 + 4 + 5 + 4 + 3) / 7)
    # The bump is non-zero from 16 on; a window of 7 carries it 3 points further out, no more.
    assert smoothed[13] == pytest.approx(1 / 7) and smoothed[12] == 0.0
    assert smoothed[0] == bump[0] and smoothed[-1] == bump[-1]  # narrower, still centred, at the ends
    # A lopsided peak: 10 at 5, with 1 before it and 4 after. The centred window-3 mean is highest
    # at 5, where the peak is; a trailing window of 3 would put it at 6, past the peak
    # ((1 + 10 + 4) / 3 = 5 there, against (0 + 1 + 10) / 3 at 5).
    lopsided = [0, 0, 0, 0, 1, 10, 4, 0, 0, 0]
    assert centred_mean(lopsided, 3)[4:7] == pytest.approx([11 / 3, 5.0, 14 / 3])
    assert max(range(10), key=centred_mean(lopsided, 3).__getitem__) == 5


def test_accuracy_curve_bounds_land_on_its_features() -> None:
    reading = read_bounds_off(LRS, accuracy_curve(), higher_is_better=True, rise_fraction=0.1, smooth_fraction=0.05)
    # base_lr: 10% into the rise that starts at 0.02 (0.024); max_lr: 90% of the way up (0.056).
    assert reading["base_lr"] == pytest.approx(0.024, abs=3 * GRID)
    assert reading["max_lr"] == pytest.approx(0.056, abs=3 * GRID)
    assert 0.055 <= reading["best_lr"] <= 0.072  # the noisy plateau's top, before the fall


def test_loss_curve_bounds_land_on_its_features_at_any_scale() -> None:
    losses = loss_curve()
    reading = read_bounds_off(LRS, losses, higher_is_better=False, rise_fraction=0.1, smooth_fraction=0.05)
    assert reading["base_lr"] == pytest.approx(0.024, abs=3 * GRID)
    assert reading["max_lr"] == pytest.approx(0.056, abs=3 * GRID)
    for scale in (1e-3, 7.0, 1e4):
        scaled = read_bounds_off(
            LRS, [scale * v for v in losses], higher_is_better=False, rise_fraction=0.1, smooth_fraction=0.05
        )
        assert scaled == reading


def test_max_lr_stops_where_the_accuracy_turns_ragged() -> None:
    """The paper's "turns ragged": a rise to 50% at 0.03, a fall to 35% (a quarter of the whole
    rise of 60 points), then a further climb to 70%. max_lr is the top before the fall; without
    the ragged check, the end of the climb."""
    curve = [
        0.1 + 0.4 * ramp(lr, 0.01, 0.03) - 0.15 * ramp(lr, 0.03, 0.035) + 0.35 * ramp(lr, 0.035, 0.08) for lr in LRS
    ]
    common = {"higher_is_better": True, "rise_fraction": 0.1, "smooth_fraction": 0.0}
    ragged = read_bounds_off(LRS, curve, ragged_fraction=0.2, **common)
    assert ragged["max_lr"] == pytest.approx(0.030)  # the top before the fall
    assert ragged["ragged_lr"] == pytest.approx(0.035, abs=GRID)  # where the fall passes 20% of 0.6
    assert ragged["base_lr"] == pytest.approx(0.013, abs=GRID)  # 10% into the rise, unchanged
    assert read_bounds_off(LRS, curve, ragged_fraction=0.3, **common)["max_lr"] > 0.07  # a fall of 25% is not 30%
    plateau = read_bounds_off(LRS, curve, **common)
    assert plateau["max_lr"] > 0.07 and plateau["ragged_lr"] is None
    # Noise of +-5 points (falls of at most 10) on a rise of 70 is not ragged (a fall of 14).
    noisy = read_bounds_off(LRS, accuracy_curve(noise=0.05), ragged_fraction=0.2, **common)
    assert noisy["ragged_lr"] is None and noisy["max_lr"] == pytest.approx(0.056, abs=3 * GRID)


def test_suggest_applies_the_ragged_check_to_accuracy_only() -> None:
    jagged = [0.1 + 0.6 * ramp(lr, 0.02, 0.06) - (0.3 if i % 2 else 0.0) for i, lr in enumerate(LRS)]
    result = suggest(
        {"lr": LRS, "loss": [-v for v in jagged]}, evaluations_from(jagged, 1), RangeTestConfig(method="accuracy")
    )
    # Every odd point falls 0.3 below its neighbours, more than 0.2 of the rise of about 0.6: the
    # accuracy reading turns ragged at the first point after base_lr (0.021, an even point, 10%
    # into the smoothed rise), 0.022, and max_lr is the best point before it, base_lr itself.
    accuracy = result["readings"]["accuracy"]
    assert accuracy["base_lr"] == pytest.approx(0.021)
    assert accuracy["ragged_lr"] == pytest.approx(accuracy["base_lr"] + GRID)
    assert accuracy["max_lr"] == accuracy["base_lr"]
    # One batch's loss is noisy by nature: no ragged check, the smoothed plateau's start.
    loss = result["readings"]["loss"]
    assert loss["ragged_lr"] is None and loss["base_lr"] == accuracy["base_lr"]
    assert loss["max_lr"] == pytest.approx(0.056, abs=3 * GRID)
    off = suggest(
        {"lr": LRS, "loss": [1.0] * 100},
        evaluations_from(jagged, 1),
        RangeTestConfig(method="accuracy", ragged_fraction=None),
    )
    assert off["readings"]["accuracy"]["ragged_lr"] is None
    assert off["readings"]["accuracy"]["max_lr"] == loss["max_lr"]  # the same curve, read the same way


def test_a_curve_that_never_improves_gives_no_bounds() -> None:
    falling = [0.9 - 0.005 * i for i in range(100)]
    assert read_bounds_off(LRS, falling, higher_is_better=True, rise_fraction=0.1, smooth_fraction=0.05) is None
    result = suggest({"lr": LRS, "loss": [1.0 + 0.01 * i for i in range(100)]}, [], RangeTestConfig())
    assert result["suggestion"] is None
    assert result["problem"].startswith("the loss never improved over the sweep: widen the range")


def evaluations_from(curve: list[float], every: int) -> list[dict]:
    return [{"step": i, "lr": LRS[i], "top1": curve[i]} for i in range(every - 1, 100, every)]


def test_suggest_reads_accuracy_when_there_are_enough_points_and_applies_the_rule() -> None:
    curve = {"lr": LRS, "loss": loss_curve()}
    evaluations = evaluations_from(accuracy_curve(noise=0.0), 4)  # 25 points
    result = suggest(curve, evaluations, RangeTestConfig())
    assert result["suggestion"]["method"] == "accuracy" and result["suggestion"]["rule"] == "range"
    assert result["suggestion"]["base_lr"] < result["suggestion"]["max_lr"]
    third = suggest(curve, evaluations, RangeTestConfig(rule="third"))["suggestion"]
    assert third["base_lr"] == pytest.approx(third["max_lr"] / 3)
    few = suggest(curve, evaluations[:4], RangeTestConfig())["suggestion"]
    assert few["method"] == "loss"  # 4 evaluations are too few to read
    assert suggest(curve, evaluations[:4], RangeTestConfig(method="accuracy"))["suggestion"]["method"] == "accuracy"


def test_a_one_step_rise_falls_back_to_the_quarter_rule() -> None:
    """A jump in one step, read with thresholds 45% and 55% of the rise: both land on the same
    point, which cannot be both bounds."""
    jump = [0.1] * 50 + [0.9] * 50
    result = suggest(
        {"lr": LRS, "loss": [1.0] * 100},
        evaluations_from(jump, 1),
        RangeTestConfig(smooth_fraction=0.0, rise_fraction=0.45),
    )
    assert result["readings"]["accuracy"]["base_lr"] == result["readings"]["accuracy"]["max_lr"]
    assert result["suggestion"]["rule"] == "quarter"
    assert result["suggestion"]["base_lr"] == pytest.approx(result["suggestion"]["max_lr"] / 4)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"start_lr": 0.1, "end_lr": 0.01}, "range_test.start_lr=0.1 and end_lr=0.01: need 0 < start_lr < end_lr"),
        ({"start_lr": 0.0}, "need 0 < start_lr < end_lr"),
        ({"mode": "cosine"}, "range_test.mode='cosine' is not one of: linear, exp"),
        ({"method": "vibes"}, "range_test.method='vibes' is not one of: auto, accuracy, loss"),
        ({"rule": "half"}, "range_test.rule='half' is not one of: range, third, quarter"),
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


def test_bounds_from_a_range_test_file(tmp_path: Path) -> None:
    path = tmp_path / "range_test.json"
    path.write_text(
        json.dumps({"suggestion": {"base_lr": 0.003, "max_lr": 0.012, "method": "accuracy", "rule": "range"}})
    )
    cfg = compose_train([f"schedule.bounds_from={path}", "schedule.base_lr=0.5"])
    assert (cfg.schedule.base_lr, cfg.schedule.max_lr) == (0.003, 0.012)  # the file wins
    with pytest.raises(
        ConfigError,
        match=r"schedule.bounds_from='/nowhere.json' cannot be read \(No such file or directory\); "
        r"give the range_test.json that `clr-dist range-test` wrote",
    ):
        read_bounds("/nowhere.json")
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"is not JSON"):
        read_bounds(str(path))
    path.write_text(json.dumps({"suggestion": None, "problem": "the loss never improved over the sweep"}))
    with pytest.raises(ConfigError, match=r"holds no suggested bounds: the loss never improved over the sweep$"):
        read_bounds(str(path))


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
