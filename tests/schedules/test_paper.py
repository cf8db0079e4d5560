"""The paper's own numbers: Table 2's multistage run, Appendix A's Caffe code, the decay control,
the cycle shapes of §3.1, and exp_range tracking exp (§4.2)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from schedule_helpers import build, cycle_ends

from clr_dist.schedules import ScheduleConfig, StageConfig, build_schedule
from tests.conftest import closed_form_triangular

# Table 2. Hyper-parameter settings for CIFAR-10 example in Figure 1 (policy triangular2):
#   base_lr  max_lr   stepsize  start   max_iter
#   0.001    0.005    2,000     0       16,000
#   0.0001   0.0005   1,000     16,000  22,000
#   0.00001  0.00005  500       22,000  25,000
TABLE_2 = [
    (0.001, 0.005, 2000, 0, 16000),
    (0.0001, 0.0005, 1000, 16000, 22000),
    (0.00001, 0.00005, 500, 22000, 25000),
]
CIFAR10_STEPS_PER_EPOCH = 500  # "an epoch = 50,000/100 = 500 iterations" (§3.2)


def table_2_config() -> ScheduleConfig:
    return ScheduleConfig(
        policy="multistage",
        stages=[
            StageConfig(policy="triangular2", base_lr=base, max_lr=top, stepsize=ss, start=start, max_iter=end)
            for base, top, ss, start, end in TABLE_2
        ],
    )


def caffe_triangular2(iteration: int, base_lr: float, max_lr: float, stepsize: int, start_lr_policy: int) -> float:
    """Appendix A's SGDSolver::GetLearningRate() for lr_policy == "triangular2", line by line."""
    itr = iteration - start_lr_policy
    if itr <= 0:
        return base_lr
    cycle = itr // (2 * stepsize)
    x = (itr - (2 * cycle + 1) * stepsize) / stepsize
    return base_lr + (max_lr - base_lr) * min(1.0, max(0.0, (1.0 - abs(x)) / 2.0**cycle))


def test_table_2_values_at_stage_and_cycle_boundaries():
    schedule = build_schedule(table_2_config(), CIFAR10_STEPS_PER_EPOCH).schedule
    expected = {
        # stage 1: cycles of 4,000 steps, the amplitude 0.004 halves at every cycle end
        0: 0.001,
        2000: 0.005,
        4000: 0.001,
        6000: 0.003,
        10000: 0.002,
        14000: 0.0015,
        # stage 2 starts at 16,000 with its own bounds and a fresh cycle count (start_lr_policy)
        16000: 0.0001,
        17000: 0.0005,
        18000: 0.0001,
        19000: 0.0003,
        21000: 0.0002,
        # stage 3 starts at 22,000
        22000: 0.00001,
        22500: 0.00005,
        23000: 0.00001,
        23500: 0.00003,
        24500: 0.00002,
    }
    for step, lr in expected.items():
        assert schedule.lr(step) == pytest.approx(lr, rel=1e-12), step
    # Just before each boundary: the last update of a stage's last cycle is one step above base.
    assert schedule.lr(15999) == pytest.approx(0.001 + 0.004 / 8 / 2000, rel=1e-9)
    assert schedule.lr(21999) == pytest.approx(0.0001 + 0.0004 / 4 / 1000, rel=1e-9)
    assert schedule.lr(24999) == pytest.approx(0.00001 + 0.00004 / 4 / 500, rel=1e-9)


def test_table_2_cycles():
    schedule = build_schedule(table_2_config(), CIFAR10_STEPS_PER_EPOCH).schedule
    # 4 cycles of 4,000 + 3 of 2,000 + 3 of 1,000; each stage's cycle ends are the schedule's.
    ends = [4000, 8000, 12000, 16000, 18000, 20000, 22000, 23000, 24000, 25000]
    assert cycle_ends(schedule, 25000) == ends
    assert schedule.total_steps == 25000
    assert schedule.cycle_length == 4000
    # Cycle numbers run on across stages; the last update before each end belongs to that cycle.
    assert [schedule.cycle(end - 1) for end in ends] == list(range(1, 11))
    assert [schedule.cycle(end) for end in ends[:-1]] == list(range(2, 11))
    next_ends = [schedule.next_cycle_end(done) for done in (0, 3999, 4000, 15999, 16000, 21999, 22000, 24999)]
    assert next_ends == [4000, 4000, 8000, 16000, 18000, 22000, 23000, 25000]


def test_table_2_every_step_matches_appendix_a_caffe_code():
    schedule = build_schedule(table_2_config(), CIFAR10_STEPS_PER_EPOCH).schedule
    for base, top, ss, start, end in TABLE_2:
        for step in range(start, end):
            assert schedule.lr(step) == pytest.approx(caffe_triangular2(step, base, top, ss, start), rel=1e-12)


def test_multistage_preset_is_table_2():
    preset = OmegaConf.load(Path(__file__).parents[2] / "conf" / "schedule" / "multistage.yaml")
    from_yaml = build_schedule(OmegaConf.merge(OmegaConf.structured(ScheduleConfig), preset), 500).schedule
    from_table = build_schedule(table_2_config(), 500).schedule
    assert [from_yaml.lr(step) for step in range(0, 25000, 50)] == [from_table.lr(step) for step in range(0, 25000, 50)]
    assert cycle_ends(from_yaml, 25000) == cycle_ends(from_table, 25000)


def test_decay_control_of_section_4_1_1():
    # "max_lr = 0.007, base_lr = 0.001, and stepsize = 4000": linear down, then fixed at base_lr.
    schedule = build(policy="decay", base_lr=0.001, max_lr=0.007, stepsize=4000)
    assert [schedule.lr(step) for step in (0, 1000, 2000, 4000, 10000, 70000)] == pytest.approx(
        [0.007, 0.0055, 0.004, 0.001, 0.001, 0.001], rel=1e-12
    )
    assert schedule.cycle_length is None and schedule.next_cycle_end(0) is None


@pytest.mark.parametrize(
    "shape,quarter",
    [("triangular", 0.5), ("welch", 0.75), ("hann", 0.5)],
)
def test_cycle_shapes(shape: str, quarter: float):
    # stepsize 4: update 2 is a quarter cycle (tri = 0.5), 4 the peak, 8 the end.
    schedule = build(policy="triangular", base_lr=1.0, max_lr=3.0, stepsize=4, shape=shape)
    assert schedule.lr(0) == schedule.lr(8) == 1.0
    assert schedule.lr(4) == pytest.approx(3.0)
    assert schedule.lr(2) == pytest.approx(1.0 + 2.0 * quarter)
    assert schedule.lr(6) == pytest.approx(schedule.lr(2))  # symmetric
    # Welch (1 - x^2) lies above the triangle and Hann (cos^2) crosses it at the quarter.
    triangle = build(policy="triangular", base_lr=1.0, max_lr=3.0, stepsize=4)
    if shape == "welch":
        assert all(schedule.lr(step) > triangle.lr(step) for step in (1, 2, 3, 5, 6, 7))
    if shape == "hann":
        assert schedule.lr(1) == pytest.approx(1.0 + 2.0 * math.sin(math.pi / 8) ** 2)
        assert schedule.lr(1) < triangle.lr(1) and schedule.lr(3) > triangle.lr(3)


def test_shape_with_triangular2_and_asymmetric_cycle():
    # Rise over 2 of 8 steps, fall over 6; Hann window; amplitude halved in cycle 2.
    schedule = build(policy="triangular2", base_lr=1.0, max_lr=2.0, stepsize=4, step_ratio=0.25, shape="hann")
    assert schedule.lr(2) == pytest.approx(2.0)
    assert schedule.lr(10) == pytest.approx(1.5)
    assert schedule.lr(5) == pytest.approx(1.0 + 0.5 * (1 - math.cos(math.pi * 3 / 6)))  # tri = 3/6 on the way down
    assert schedule.lr(8) == 1.0


def test_exp_range_both_bounds_decay():
    # §3.1: "each boundary value declines by an exponential factor of gamma^iteration".
    gamma = 0.99
    schedule = build(policy="exp_range", base_lr=0.001, max_lr=0.006, stepsize=10, gamma=gamma)
    assert schedule.lr(40) == pytest.approx(0.001 * gamma**40)  # a cycle end: the decayed base
    assert schedule.lr(50) == pytest.approx(0.006 * gamma**50)  # a peak: the decayed max
    amplitude_only = build(policy="exp_range_amplitude", base_lr=0.001, max_lr=0.006, stepsize=10, gamma=gamma)
    assert amplitude_only.lr(40) == pytest.approx(0.001)
    assert amplitude_only.lr(50) == pytest.approx(0.001 + 0.005 * gamma**50)


def test_exp_range_cycle_average_tracks_exp():
    """§4.2 (AlexNet): exp with base_lr 0.01 against exp_range with bounds 0.006-0.014 and the same
    gamma = 0.999995, "in this case one expects that the average accuracy of the exp_range policy
    to be equal to the accuracy from the exp policy"; stepsize 30,000 ("6 epochs").

    The bounds average to exp's base_lr, and the triangle averages exactly 1/2 over a cycle of
    whole steps, so the cycle means differ only through the correlation of the triangle with the
    decay across the cycle. For a cycle with a = 2 stepsize |ln gamma| (0.3 here), a second-order
    expansion gives a relative gap of (max - base)/(max + base) * a^2 / 48 = 0.4 * 0.09 / 48
    = 7.5e-4 in every cycle, hence the tolerance of 1e-3; a mistake in the decay (e.g. the
    amplitude-only variant) is off by more than 5% from the first cycle on.
    """
    gamma, stepsize = 0.999995, 30000
    exp_range = build(policy="exp_range", base_lr=0.006, max_lr=0.014, stepsize=stepsize, gamma=gamma)
    amplitude_only = build(policy="exp_range_amplitude", base_lr=0.006, max_lr=0.014, stepsize=stepsize, gamma=gamma)
    exp = build(policy="exp", base_lr=0.01, gamma=gamma)
    a = 2 * stepsize * -math.log(gamma)
    predicted_gap = (0.014 - 0.006) / (0.014 + 0.006) * a**2 / 48
    for cycle in range(3):
        steps = range(2 * stepsize * cycle, 2 * stepsize * (cycle + 1), 10)  # every 10th step
        mean_exp = sum(exp.lr(step) for step in steps) / len(steps)
        gap = sum(exp_range.lr(step) for step in steps) / len(steps) / mean_exp - 1
        assert abs(gap) < 1e-3, cycle
        assert gap == pytest.approx(-predicted_gap, rel=0.05), cycle
        amplitude_gap = sum(amplitude_only.lr(step) for step in steps) / len(steps) / mean_exp - 1
        assert abs(amplitude_gap) > 0.05, cycle


def test_wave_is_the_papers_triangle_formula():
    # Our cycle position comes from an integer remainder; the paper's (§3.1) from floor/abs: the
    # conftest oracle, between base 0 and max 1, is the paper's triangle itself.
    from clr_dist.schedules.cyclical import Wave

    for stepsize in (1, 7, 2000):
        wave = Wave(2 * stepsize)
        steps = list(range(0, 8 * stepsize, max(1, stepsize // 50))) + [8 * stepsize - 1]
        for step in steps:
            assert wave(step) == pytest.approx(closed_form_triangular(step, 0.0, 1.0, stepsize), abs=1e-12)
        # Four whole cycles: 0 at every cycle start, 1 at every peak.
        assert [wave(k * stepsize) for k in range(8)] == [0.0, 1.0] * 4
