"""Cycle queries, baselines, one-cycle, warmup, momentum cycling, and resuming at any step."""

from __future__ import annotations

import pickle

import pytest
from schedule_helpers import build, cycle_ends

from clr_dist.schedules import ScheduleConfig, StageConfig, build_schedule


def test_cyclical_cycle_queries():
    schedule = build(policy="triangular", base_lr=0.1, max_lr=0.5, stepsize=5)
    assert schedule.cycle_length == 10
    assert schedule.total_steps is None
    assert [schedule.cycle(step) for step in (0, 9, 10, 19, 20)] == [1, 1, 2, 2, 3]
    assert [schedule.is_cycle_end(done) for done in (0, 5, 9, 10, 11, 20)] == [False, False, False, True, False, True]
    assert [schedule.next_cycle_end(done) for done in (0, 9, 10, 15, 20)] == [10, 10, 20, 20, 30]
    assert cycle_ends(schedule, 35) == [10, 20, 30]


def test_policies_without_cycles():
    for policy in ("fixed", "exp", "step", "decay"):
        schedule = build(policy=policy, base_lr=0.1, max_lr=0.5, stepsize=5, gamma=0.9)
        assert schedule.cycle_length is None, policy
        assert schedule.cycle(7) == 0 and schedule.next_cycle_end(7) is None, policy
        assert cycle_ends(schedule, 50) == [], policy
        assert schedule.momentum(3) is None, policy


def test_caffe_baselines():
    step = build(policy="step", base_lr=0.1, stepsize=3, gamma=0.5)
    assert [step.lr(s) for s in (0, 2, 3, 5, 6, 9)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.0125])
    # Caffe's multistep: a milestone m is passed from update m on (iter_ >= stepvalue).
    multistep = build(policy="multistep", base_lr=0.1, milestones=[3, 7], gamma=0.1)
    assert [multistep.lr(s) for s in (0, 2, 3, 6, 7, 100)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    exp = build(policy="exp", base_lr=0.01, gamma=0.99994)
    assert exp.lr(0) == 0.01
    assert exp.lr(70000) == pytest.approx(0.01 * 0.99994**70000)
    assert build(policy="fixed", base_lr=0.01).lr(123456) == 0.01


def test_cosine_restarts_cycle_queries():
    schedule = build(policy="cosine_restarts", base_lr=0.0, max_lr=1.0, stepsize=4, cycle_mult=2)
    assert cycle_ends(schedule, 60) == [8, 24, 56]
    assert [schedule.cycle(step) for step in (0, 7, 8, 23, 24, 55, 56)] == [1, 1, 2, 2, 3, 3, 4]
    assert schedule.next_cycle_end(24) == 56
    assert schedule.lr(8) == 1.0 and schedule.lr(16) == pytest.approx(0.5)  # restart; half of the 16-step cycle


def test_one_cycle():
    schedule = build(
        policy="one_cycle",
        base_lr=0.01,
        max_lr=0.1,
        stepsize=5,
        total_steps=20,
        final_lr_ratio=0.01,
        momentum_cycle=True,
        base_momentum=0.85,
        max_momentum=0.95,
    )
    # Up over 5 steps, down over 5, then 10 steps of anneal from 0.01 to 0.0001, held after.
    assert schedule.lr(0) == 0.01 and schedule.lr(5) == pytest.approx(0.1)
    assert schedule.lr(9) == pytest.approx(0.01 + 0.09 * 0.2)
    assert schedule.lr(10) == pytest.approx(0.01 - 0.0099 * 0.1)
    assert schedule.lr(19) == pytest.approx(0.0001) and schedule.lr(25) == pytest.approx(0.0001)
    assert all(schedule.lr(s) > schedule.lr(s + 1) for s in range(5, 19))
    assert schedule.momentum(5) == pytest.approx(0.85)
    assert [schedule.momentum(s) for s in range(10, 20)] == pytest.approx([0.95] * 10)
    assert schedule.total_steps == 20 and schedule.cycle_length == 10
    assert cycle_ends(schedule, 30) == [10]
    assert schedule.next_cycle_end(10) is None
    assert {schedule.cycle(s) for s in range(20)} == {1}


def test_warmup_ramps_into_the_policy_and_keeps_cycle_ends():
    plain = build(policy="triangular", base_lr=0.1, max_lr=0.5, stepsize=10)
    warm = build(policy="triangular", base_lr=0.1, max_lr=0.5, stepsize=10, warmup_steps=4)
    target = plain.lr(4)
    assert [warm.lr(s) for s in range(4)] == pytest.approx([target * (s + 1) / 5 for s in range(4)])
    assert [warm.lr(s) for s in range(4, 60)] == [plain.lr(s) for s in range(4, 60)]
    assert cycle_ends(warm, 60) == cycle_ends(plain, 60) == [20, 40, 60]
    assert warm.momentum(0) is None


def test_momentum_inverse_to_lr():
    # The paper's exp_range: momentum follows the position between the decayed bounds, so it
    # spans its full range in every cycle.
    schedule = build(
        policy="exp_range",
        base_lr=0.001,
        max_lr=0.006,
        stepsize=10,
        gamma=0.99,
        momentum_cycle=True,
        base_momentum=0.8,
        max_momentum=0.9,
    )
    assert [schedule.momentum(s) for s in (0, 10, 20, 30, 35, 40)] == pytest.approx([0.9, 0.8, 0.9, 0.8, 0.85, 0.9])
    decay = build(
        policy="decay",
        base_lr=0.001,
        max_lr=0.007,
        stepsize=4,
        momentum_cycle=True,
        base_momentum=0.8,
        max_momentum=0.9,
    )
    assert [decay.momentum(s) for s in range(6)] == pytest.approx([0.8, 0.825, 0.85, 0.875, 0.9, 0.9])
    # Without an upper bound the LR sits at its lower bound: momentum stays at its maximum.
    fixed = build(policy="fixed", base_lr=0.01, momentum_cycle=True, base_momentum=0.8, max_momentum=0.9)
    assert fixed.momentum(100) == 0.9
    assert build(policy="triangular", stepsize=10).momentum(5) is None  # off by default


def test_multistage_with_mixed_policies():
    cfg = ScheduleConfig(
        policy="multistage",
        stages=[
            StageConfig(policy="fixed", base_lr=0.1, max_iter=5),
            StageConfig(policy="triangular", base_lr=0.1, max_lr=0.3, stepsize=2, max_iter=13),  # 2 cycles
            StageConfig(policy="exp", base_lr=0.05, gamma=0.5),  # open-ended
        ],
    )
    schedule = build_schedule(cfg, 10).schedule
    assert [schedule.lr(s) for s in range(0, 17)] == pytest.approx(
        [0.1] * 5 + [0.1, 0.2, 0.3, 0.2, 0.1, 0.2, 0.3, 0.2] + [0.05, 0.025, 0.0125, 0.00625]
    )
    assert schedule.cycle_length == 4 and schedule.total_steps is None
    assert [schedule.cycle(s) for s in (0, 4, 5, 8, 9, 12, 13)] == [0, 0, 1, 1, 2, 2, 0]
    # The triangular stage's two cycles end at 5 + 4 and 5 + 8; the fixed and exp stages have none.
    assert cycle_ends(schedule, 40) == [9, 13]


# One config per policy and modifier; stepsizes small so a few cycles fit in 200 steps.
RESUMABLE = [
    dict(policy="triangular", stepsize=7),
    dict(policy="triangular2", stepsize=7, shape="welch", step_ratio=0.3),
    dict(policy="exp_range", stepsize=7, gamma=0.99, momentum_cycle=True),
    dict(policy="exp_range_amplitude", stepsize=7, gamma=0.99, shape="hann"),
    dict(policy="fixed"),
    dict(policy="step", stepsize=30, gamma=0.5),
    dict(policy="multistep", milestones=[50, 120], gamma=0.5),
    dict(policy="exp", gamma=0.99),
    dict(policy="decay", stepsize=40),
    dict(policy="one_cycle", stepsize=60, total_steps=180, momentum_cycle=True),
    dict(policy="cosine_restarts", stepsize=5, cycle_mult=2, warmup_steps=8),
    dict(
        policy="multistage",
        warmup_steps=3,
        momentum_cycle=True,
        stages=[
            StageConfig(policy="triangular2", stepsize=10, max_iter=80),
            StageConfig(policy="exp_range", base_lr=0.001, max_lr=0.002, stepsize=5, gamma=0.99),
        ],
    ),
]


@pytest.mark.parametrize("fields", RESUMABLE, ids=lambda fields: fields["policy"])
def test_resume_at_any_step_gives_the_same_sequence(fields: dict):
    def trace(schedule, steps):
        return [(schedule.lr(s), schedule.momentum(s), schedule.cycle(s), schedule.is_cycle_end(s + 1)) for s in steps]

    original = build(**fields)
    full = trace(original, range(200))
    # A resumed run builds a fresh schedule from the same config and starts at the saved step.
    for resume_at in (1, 37, 111, 199):
        resumed = build(**fields)
        assert trace(resumed, range(resume_at, 200)) == full[resume_at:]
    # Queried backwards, the first object has no memory of the forward pass either.
    assert trace(original, range(199, -1, -1)) == full[::-1]
    # Nothing but plain data inside: a schedule pickles and round-trips (no lambdas held).
    assert trace(pickle.loads(pickle.dumps(original)), range(200)) == full


def test_multistage_cycle_cut_by_its_stage_end():
    cfg = ScheduleConfig(
        policy="multistage",
        stages=[
            # Cycles of 4 from update 0; the stage ends at 6, halfway into cycle 2.
            StageConfig(policy="triangular", base_lr=0.1, max_lr=0.3, stepsize=2, max_iter=6),
            StageConfig(policy="triangular2", base_lr=0.1, max_lr=0.3, stepsize=1, max_iter=10),
        ],
    )
    schedule = build_schedule(cfg, 10).schedule
    assert schedule.lr(5) == pytest.approx(0.2) and schedule.lr(6) == pytest.approx(0.1)
    # The cut cycle 2 has no end of its own; the next stage's cycles are 3 and 4.
    assert cycle_ends(schedule, 10) == [4, 8, 10]
    assert [schedule.cycle(s) for s in (3, 4, 5, 6, 7, 8, 9)] == [1, 2, 2, 3, 3, 4, 4]
    assert schedule.total_steps == 10
    # Past the last stage's end its policy simply continues.
    assert schedule.lr(11) == pytest.approx(0.1 + 0.2 / 4) and schedule.is_cycle_end(12)
