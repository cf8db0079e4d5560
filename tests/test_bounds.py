"""Reading a range test's curve (clr_dist.bounds): the bounds land on the curve's features."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from clr_dist.bounds import centred_mean, read_bounds, read_bounds_off, suggest
from clr_dist.config import RangeTestConfig
from clr_dist.errors import ConfigError
from tests.conftest import compose_train

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
    assert result["suggestion"]["method"] == "accuracy" and result["suggestion"]["rule"] == "third"  # the default
    assert result["suggestion"]["base_lr"] == pytest.approx(result["suggestion"]["max_lr"] / 3)
    reading = suggest(curve, evaluations, RangeTestConfig(rule="range"))["suggestion"]
    assert reading["base_lr"] == result["readings"]["accuracy"]["base_lr"] < reading["max_lr"]
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
        RangeTestConfig(smooth_fraction=0.0, rise_fraction=0.45, rule="range"),
    )
    assert result["readings"]["accuracy"]["base_lr"] == result["readings"]["accuracy"]["max_lr"]
    assert result["suggestion"]["rule"] == "quarter"
    assert result["suggestion"]["base_lr"] == pytest.approx(result["suggestion"]["max_lr"] / 4)


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
