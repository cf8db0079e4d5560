"""Every configuration mistake fails at build time with one line naming the key, the value and
what to do."""

from __future__ import annotations

import pytest

from clr_dist.errors import ConfigError
from clr_dist.schedules import POLICY_NAMES, ScheduleConfig, StageConfig, build_schedule

TABLE_2_STAGES = [
    dict(policy="triangular2", base_lr=0.001, max_lr=0.005, stepsize=2000, start=0, max_iter=16000),
    dict(policy="triangular2", base_lr=0.0001, max_lr=0.0005, stepsize=1000, start=16000, max_iter=22000),
    dict(policy="triangular2", base_lr=0.00001, max_lr=0.00005, stepsize=500, start=22000, max_iter=25000),
]


def stages(**changes: dict[str, object]) -> list[StageConfig]:
    """Table 2's stages, with ``s1={...}`` updating stage 1 (and so on)."""
    rows = [dict(row) for row in TABLE_2_STAGES]
    for index, fields in changes.items():
        rows[int(index.removeprefix("s"))].update(fields)
    return [StageConfig(**row) for row in rows]


CASES = [
    # (fields, fragments the message must contain)
    (
        dict(policy="trinagular", stepsize=10),
        ["schedule.policy='trinagular'", "valid policies: " + ", ".join(POLICY_NAMES)],
    ),
    (dict(policy="triangular", stepsize=10, shape="square"), ["schedule.shape='square'", "triangular, welch, hann"]),
    (
        dict(policy="triangular", stepsize=10, base_lr=0.06, max_lr=0.01),
        ["schedule.max_lr=0.01", "schedule.base_lr=0.06", "swap"],
    ),
    (dict(policy="decay", stepsize=10, base_lr=0.06, max_lr=0.01), ["schedule.max_lr=0.01", "below"]),
    (dict(policy="triangular", stepsize=0), ["schedule.stepsize=0", "positive"]),
    (dict(policy="step", stepsize=-5, gamma=0.1), ["schedule.stepsize=-5", "positive"]),
    (dict(policy="triangular", stepsize_epochs=-1.0), ["schedule.stepsize_epochs=-1.0", "positive"]),
    (dict(policy="triangular"), ["schedule.stepsize", "schedule.stepsize_epochs", "2-10 epochs"]),
    (
        dict(policy="triangular", stepsize=10, stepsize_epochs=2.0),
        ["schedule.stepsize=10", "schedule.stepsize_epochs=2.0", "one of them"],
    ),
    (dict(policy="exp_range", stepsize=10, gamma=1.5), ["schedule.gamma=1.5", "(0, 1]"]),
    (dict(policy="exp", gamma=0.0), ["schedule.gamma=0.0", "(0, 1]"]),
    (dict(policy="fixed", base_lr=0.0), ["schedule.base_lr=0.0", "positive"]),
    (dict(policy="triangular", stepsize=10, step_ratio=1.0), ["schedule.step_ratio=1.0", "(0, 1)"]),
    (dict(policy="exp", gamma=0.9, shape="welch"), ["schedule.shape=welch", "no effect", "schedule.policy=exp"]),
    (dict(policy="cosine_restarts", stepsize=10, step_ratio=0.3), ["schedule.step_ratio=0.3", "no effect"]),
    (dict(policy="multistep", gamma=0.1), ["schedule.milestones", "needs"]),
    (dict(policy="multistep", gamma=0.1, milestones=[300, 100]), ["schedule.milestones=[300, 100]", "increasing"]),
    (
        dict(policy="one_cycle", stepsize=50),
        ["schedule.policy=one_cycle needs schedule.total_steps", "${trainer.max_steps}"],
    ),
    (dict(policy="one_cycle", stepsize=50, total_steps=100), ["schedule.total_steps=100", "anneal"]),
    (dict(policy="cosine_restarts", stepsize=10, cycle_mult=0), ["schedule.cycle_mult=0", ">= 1"]),
    (dict(policy="triangular", stepsize=10, warmup_steps=-1), ["schedule.warmup_steps=-1", ">= 0"]),
    (
        dict(policy="triangular", stepsize=10, momentum_cycle=True, base_momentum=0.95, max_momentum=0.85),
        ["schedule.base_momentum=0.95", "schedule.max_momentum=0.85", "base_momentum <= max_momentum"],
    ),
    (
        dict(policy="triangular", stepsize=10, stages=stages()),
        ["schedule.stages", "schedule.policy=triangular", "multistage"],
    ),
    (dict(policy="multistage"), ["schedule.policy=multistage needs schedule.stages"]),
    # Table 2 with a mistake in one stage:
    (
        dict(policy="multistage", stages=stages(s1=dict(start=15000))),
        ["schedule.stages[1].start=15000", "overlaps", "ends at 16000", "start=16000"],
    ),
    (
        dict(policy="multistage", stages=stages(s2=dict(start=12000, max_iter=14000))),
        ["schedule.stages[2].start=12000", "overlaps", "in order"],
    ),
    (
        dict(policy="multistage", stages=stages(s1=dict(start=17000))),
        ["schedule.stages[1].start=17000", "gap", "start=16000"],
    ),
    (dict(policy="multistage", stages=stages(s0=dict(start=100))), ["schedule.stages[0].start=100", "start at 0"]),
    (
        dict(policy="multistage", stages=stages(s1=dict(max_iter=None))),
        ["schedule.stages[1].max_iter=None", "needs max_iter"],
    ),
    (
        dict(policy="multistage", stages=stages(s1=dict(max_iter=16000))),
        ["schedule.stages[1].max_iter=16000", "greater than its start=16000"],
    ),
    (
        dict(policy="multistage", stages=stages(s1=dict(max_lr=0.00001))),
        ["schedule.stages[1].max_lr=1e-05", "schedule.stages[1].base_lr=0.0001"],
    ),
    (
        dict(policy="multistage", stages=stages(s2=dict(policy="tri"))),
        ["schedule.stages[2].policy='tri'", "give one of: cosine_restarts, decay"],
    ),
    (
        dict(policy="multistage", stages=stages(s2=dict(policy="multistage"))),
        ["schedule.stages[2].policy='multistage'", "not a policy a stage can run"],
    ),
    (dict(policy="multistage", stages=stages(s0=dict(stepsize=0))), ["schedule.stages[0].stepsize=0", "positive"]),
    (dict(policy="multistage", stages=stages(s0=dict(gamma=2.0))), ["schedule.stages[0].gamma=2.0", "(0, 1]"]),
]


@pytest.mark.parametrize("fields,fragments", CASES, ids=[str(i) for i in range(len(CASES))])
def test_config_error_message(fields: dict, fragments: list[str]):
    with pytest.raises(ConfigError) as caught:
        build_schedule(ScheduleConfig(**fields), steps_per_epoch=100)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_table_2_itself_is_valid():
    built = build_schedule(ScheduleConfig(policy="multistage", stages=stages()), steps_per_epoch=500)
    assert built.schedule.total_steps == 25000 and built.stepsize is None
