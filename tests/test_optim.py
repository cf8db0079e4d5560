from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import timm
import torch

from clr_dist.checks import check_optimizer
from clr_dist.config import OptimizerConfig
from clr_dist.errors import ConfigError
from clr_dist.optim import (
    OPTIMIZERS,
    CaffeSGD,
    build_optimizer,
    current_momentum,
    implementation_kwargs,
    parameter_groups,
    set_lr,
    set_momentum,
)
from clr_dist.schedules import POLICY_NAMES
from tests.conftest import closed_form_triangular


def _trajectory(optimizer_cls, lrs: list[float], **kwargs) -> torch.Tensor:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    target = torch.randn(5)
    opt = optimizer_cls([w], lr=lrs[0], **kwargs)
    for lr in lrs:
        set_lr(opt, lr)
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        opt.step()
    return w.detach().clone()


def test_caffe_sgd_matches_pytorch_at_a_fixed_lr() -> None:
    lrs = [0.05] * 20
    caffe = _trajectory(CaffeSGD, lrs, momentum=0.9, weight_decay=0.01)
    pytorch = _trajectory(torch.optim.SGD, lrs, momentum=0.9, weight_decay=0.01)
    assert torch.allclose(caffe, pytorch, atol=1e-6)


def test_caffe_sgd_keeps_the_lr_in_the_velocity() -> None:
    lrs = [0.01 * (1 + k) for k in range(10)]
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = CaffeSGD([w], lr=lrs[0], momentum=0.9, weight_decay=0.1)
    expected_w, v = 1.0, 0.0
    for lr in lrs:
        set_lr(opt, lr)
        opt.zero_grad()
        (w**2).sum().backward()  # g = 2w
        opt.step()
        v = 0.9 * v + lr * (2 * expected_w + 0.1 * expected_w)
        expected_w -= v
        assert w.item() == pytest.approx(expected_w, rel=1e-6)
    pytorch = _trajectory(torch.optim.SGD, lrs, momentum=0.9, weight_decay=0.1)
    assert not torch.allclose(_trajectory(CaffeSGD, lrs, momentum=0.9, weight_decay=0.1), pytorch, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sgd", torch.optim.SGD),
        ("nesterov", torch.optim.SGD),
        ("adam", torch.optim.Adam),
        ("rmsprop", torch.optim.RMSprop),
        ("adagrad", torch.optim.Adagrad),
        ("adadelta", torch.optim.Adadelta),
    ],
)
def test_table_3_optimizers(name: str, cls: type) -> None:
    opt = build_optimizer(OptimizerConfig(name=name, momentum=0.8), torch.nn.Linear(2, 2), 0.1)
    assert type(opt) is cls
    if name == "nesterov":
        assert opt.param_groups[0]["nesterov"]
    if name in ("sgd", "nesterov", "adam", "rmsprop"):
        assert current_momentum(opt) == 0.8
        set_momentum(opt, 0.85)
        assert current_momentum(opt) == 0.85
    else:  # AdaGrad and AdaDelta have no momentum term
        assert current_momentum(opt) is None
    if name == "adam":
        assert opt.param_groups[0]["betas"] == (0.85, 0.999)  # beta2 untouched


def test_optimizer_errors() -> None:
    # An unknown optimizer.name is refused while composing (an enum: tests/test_config.py).
    with pytest.raises(
        ConfigError, match="^optimizer.momentum_style=caffe applies to optimizer.name=sgd only, not adam$"
    ):
        check_optimizer(OptimizerConfig(name="adam", momentum_style="caffe"))
    for name in OPTIMIZERS:
        check_optimizer(OptimizerConfig(name=name))  # every optimizer of Table 3 passes with its defaults


def test_momentum_cycling_never_turns_momentum_on(small_demo: Path, make_trainer) -> None:
    for optimizer in ("adagrad", "adadelta", "sgd optimizer.momentum=0", "rmsprop"):  # rmsprop's preset: 0
        name, *extra = optimizer.split()
        with pytest.raises(ConfigError, match="has no momentum to cycle"):
            make_trainer(small_demo, f"optimizer={name}", *extra, "schedule.momentum_cycle=true")


STEPS = 4
TINY = [
    "model.name=test_resnet",
    f"trainer.max_steps={STEPS}",
    "logger.log_every=1",
    "schedule.stepsize=1",
    "schedule.stepsize_epochs=null",
    "trainer.record_lr=true",
]
# conf/schedule/*.yaml, with TINY's stepsize of 1 step where a policy takes one.
BASE, TOP, GAMMA = 0.01, 0.06, 0.99994  # base_lr, max_lr and the per-step gamma of the presets
TRIANGLE = [closed_form_triangular(step, BASE, TOP, 1) for step in range(STEPS)]  # 0.01, 0.06, 0.01, 0.06

# The LR of updates 0..3 under each preset, worked out from the preset's numbers, not read from
# the package's schedule objects.
EXPECTED_LR: dict[str, list[float]] = {
    "fixed": [BASE] * STEPS,
    "triangular": TRIANGLE,
    # Cycle 2 (updates 2, 3) has half the amplitude: its peak at update 3 is 0.01 + 0.05 / 2.
    "triangular2": [0.01, 0.06, 0.01, 0.035],
    # The paper's exp_range: both bounds decay, lr = (base + (max - base) tri) gamma^step.
    "exp_range": [t * GAMMA**step for step, t in enumerate(TRIANGLE)],
    # PyTorch's: only the amplitude decays, lr = base + (max - base) tri gamma^step.
    "exp_range_amplitude": [0.01, 0.01 + 0.05 * GAMMA, 0.01, 0.01 + 0.05 * GAMMA**3],
    "exp": [BASE * GAMMA**step for step in range(STEPS)],
    # step: gamma 0.1 every stepsize (1) steps.
    "step": [0.01, 0.001, 0.0001, 0.00001],
    # multistep with milestones [1, 2] (set in the test), gamma 0.1: dropped from updates 1 and 2 on.
    "multistep": [0.01, 0.001, 0.0001, 0.0001],
    # decay: from max_lr down to base_lr over stepsize (1) steps, then base_lr.
    "decay": [0.06, 0.01, 0.01, 0.01],
    # one_cycle with total_steps 6: up 0.01 -> 0.06 -> back over updates 0..1, the cycle ends at
    # 2; then (step - 1) / 4 of the way from base_lr to final_lr = 0.01 * 0.01 = 0.0001.
    "one_cycle": [0.01, 0.06, 0.01 - 0.0099 / 4, 0.01 - 0.0099 / 2],
    # cosine_restarts: base 0, max 0.06, cycles of 2 * stepsize = 2 steps, starting at max_lr:
    # 0.06 (1 + cos(pi t / 2)) / 2 for t = 0, 1.
    "cosine_restarts": [0.06, 0.03, 0.06, 0.03],
    # multistage: Table 2's first stage (triangular2, 0.001 -> 0.005 over 2000 steps), so the LR
    # rises by 0.004 / 2000 a step; TINY's stepsize does not reach into the stages.
    "multistage": [0.001 + 0.004 * step / 2000 for step in range(STEPS)],
}


def lr_log(run_dir: Path) -> list[tuple[int, float, str]]:
    """lr_rank0.csv as (step, lr, momentum column), the momentum column as written ('' when none)."""
    rows = (run_dir / "lr_rank0.csv").read_text().splitlines()
    assert rows[0] == "step,lr,momentum"
    return [(int(step), float(lr), momentum) for step, lr, momentum in (row.split(",") for row in rows[1:])]


def _smoke(tmp_path: Path, data: Path, make_trainer, *overrides: str) -> list[tuple[int, float, str]]:
    """Train STEPS steps; every step's applied LR is recorded. Returns the lr_rank0.csv rows."""
    trainer = make_trainer(data, *TINY, *overrides)
    trainer.fit()
    assert trainer.step == STEPS
    rows = lr_log(tmp_path / "run")
    assert [step for step, _, _ in rows] == list(range(STEPS))
    losses = [
        e
        for e in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
        if e["event"] == "train"
    ]
    assert [e["step"] for e in losses] == list(range(1, STEPS + 1))
    assert all(math.isfinite(e["loss"]) for e in losses)
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_policy_applies_its_closed_form_lr(policy: str, tmp_path: Path, small_demo: Path, make_trainer) -> None:
    assert set(EXPECTED_LR) == set(POLICY_NAMES)  # a new policy needs its expected values here
    extra = {"one_cycle": ["schedule.total_steps=6"], "multistep": ["schedule.milestones=[1,2]"]}.get(policy, [])
    rows = _smoke(tmp_path, small_demo, make_trainer, f"schedule={policy}", *extra)
    assert [lr for _, lr, _ in rows] == pytest.approx(EXPECTED_LR[policy], rel=1e-12, abs=1e-15)
    # SGD (the default optimizer, momentum 0.9) with the momentum not cycled: 0.9 every step.
    assert [momentum for _, _, momentum in rows] == ["0.9"] * STEPS


# (optimizer, extra overrides, expected momentum column). Cycled (sgd, nesterov, adam's beta1):
# momentum = max_m - (max_m - base_m) * height with base_m 0.85, max_m 0.95 and the triangle's
# height 0, 1, 0, 1 at updates 0..3 (stepsize 1). RMSprop's momentum is not cycled here: the
# column holds optimizer.momentum (0.5, set below). AdaGrad and AdaDelta have none: empty.
CYCLED = [0.95 - 0.1 * h for h in (0.0, 1.0, 0.0, 1.0)]
MOMENTUM_CASES = {
    "sgd": (["schedule.momentum_cycle=true"], CYCLED),
    "nesterov": (["schedule.momentum_cycle=true"], CYCLED),
    "adam": (["schedule.momentum_cycle=true"], CYCLED),
    "rmsprop": (["optimizer.momentum=0.5", "schedule.momentum_cycle=false"], [0.5] * STEPS),
    "adagrad": (["schedule.momentum_cycle=false"], [None] * STEPS),
    "adadelta": (["schedule.momentum_cycle=false"], [None] * STEPS),
}


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_every_optimizer_trains_with_cycled_momentum_where_it_has_one(
    optimizer: str, tmp_path: Path, small_demo: Path, make_trainer
) -> None:
    assert set(MOMENTUM_CASES) == set(OPTIMIZERS)  # a new optimizer needs its expected column here
    extra, expected = MOMENTUM_CASES[optimizer]
    rows = _smoke(tmp_path, small_demo, make_trainer, f"optimizer={optimizer}", *extra)
    assert [lr for _, lr, _ in rows] == pytest.approx(TRIANGLE, rel=1e-12)  # the default triangular preset
    momenta = [None if column == "" else float(column) for _, _, column in rows]
    if expected[0] is None:
        assert momenta == expected
    else:
        assert momenta == pytest.approx(expected, rel=1e-12)


def test_caffe_multipliers_become_parameter_groups() -> None:
    """cifar10_full_train_test.prototxt: biases of conv1 and conv2 at twice the LR; conv3 names no
    multipliers (1, 1); ip1's weight decay 250 times the base and its bias at 2x LR, no decay."""
    model = timm.create_model("cifar10_full", num_classes=10)
    groups = parameter_groups(model, weight_decay=0.004)
    names = {id(p): name for name, p in model.named_parameters()}
    table = {(g["lr_mult"], g["weight_decay"]): sorted(names[id(p)] for p in g["params"]) for g in groups}
    assert table == {
        (1.0, 0.004): ["conv1.weight", "conv2.weight", "conv3.bias", "conv3.weight"],
        (2.0, 0.004): ["conv1.bias", "conv2.bias"],
        (1.0, 0.004 * 250): ["ip1.weight"],
        (2.0, 0.0): ["ip1.bias"],
    }
    plain = parameter_groups(torch.nn.Linear(2, 2), weight_decay=0.1)  # a model without multipliers
    assert [(g["lr_mult"], g["weight_decay"], len(g["params"])) for g in plain] == [(1.0, 0.1, 2)]


def test_a_caffe_sgd_step_applies_each_groups_lr_and_decay() -> None:
    """One step of Caffe's SGD from zero velocity moves each parameter by lr_mult * lr * (g + wd w)."""
    torch.manual_seed(0)
    model = timm.create_model("cifar10_full", num_classes=10)
    cfg = OptimizerConfig(name="sgd", momentum_style="caffe", momentum=0.9, weight_decay=0.004)
    optimizer = build_optimizer(cfg, model, 0.01)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    set_lr(optimizer, 0.003)
    optimizer.step()
    for name, param in model.named_parameters():
        lr_mult, decay_mult = model.caffe_multipliers.get(name, (1.0, 1.0))
        expected = before[name] - lr_mult * 0.003 * (param.grad + 0.004 * decay_mult * before[name])
        assert torch.allclose(param.detach(), expected, rtol=1e-5, atol=1e-12), name


@pytest.mark.slow
def test_the_schedules_lr_reaches_every_group_times_its_multiplier(small_demo: Path, make_trainer) -> None:
    trainer = make_trainer(
        small_demo,
        "model=cifar10_full",
        "data.image_size=32",
        "data.val_resize=32",
        "schedule.base_lr=0.001",
        "schedule.max_lr=0.006",
        "schedule.stepsize=2",
        "schedule.stepsize_epochs=null",
        "trainer.max_steps=5",
        "logger.log_every=1",
    )
    seen = []
    original = trainer.optimizer.step

    def step_and_record(*args, **kwargs):
        seen.append([(group["lr_mult"], group["lr"]) for group in trainer.optimizer.param_groups])
        return original(*args, **kwargs)

    trainer.optimizer.step = step_and_record
    trainer.fit()
    assert len(seen) == 5
    for step, groups in enumerate(seen):
        lr = closed_form_triangular(step, 0.001, 0.006, 2)
        assert sorted({m for m, _ in groups}) == [1.0, 2.0]
        for lr_mult, group_lr in groups:
            assert group_lr == pytest.approx(lr_mult * lr, rel=1e-12), (step, lr_mult)


@pytest.mark.parametrize(
    ("cls", "implementation", "device", "expected"),
    [
        (torch.optim.SGD, "auto", "cuda", {"fused": True}),  # the fused kernel where there is one
        (torch.optim.Adam, "auto", "cuda", {"fused": True}),
        (torch.optim.RMSprop, "auto", "cuda", {"foreach": True}),  # no fused RMSprop: foreach
        (torch.optim.SGD, "auto", "cpu", {}),  # PyTorch's own choice on the CPU
        (CaffeSGD, "auto", "cuda", {}),  # its own loop
        (torch.optim.SGD, "foreach", "cpu", {"foreach": True}),
        (torch.optim.Adadelta, "for_loop", "cuda", {"foreach": False}),
    ],
)
def test_the_optimizer_step_implementation(cls: type, implementation: str, device: str, expected: dict) -> None:
    assert implementation_kwargs(cls, implementation, device) == expected


def test_an_implementation_the_optimizer_lacks_is_one_line() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^optimizer.implementation=fused: RMSprop has no fused step; use auto, foreach, or for_loop$",
    ):
        implementation_kwargs(torch.optim.RMSprop, "fused", "cuda")
    with pytest.raises(ConfigError, match=r"CaffeSGD has no foreach step; use auto, or for_loop"):
        check_optimizer(OptimizerConfig(momentum_style="caffe", implementation="foreach"))


@pytest.mark.parametrize("implementation", ["fused", "foreach"])
def test_fused_and_foreach_steps_take_the_for_loops_step(implementation: str) -> None:
    """The same SGD update, with momentum and weight decay, over three steps on the CPU."""
    results = {}
    for kind in ("for_loop", implementation):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        optimizer = build_optimizer(OptimizerConfig(implementation=kind), model, 0.1)
        assert optimizer.defaults[kind if kind != "for_loop" else "foreach"] is (kind != "for_loop")
        for step in range(3):
            model(torch.full((2, 4), float(step + 1))).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        results[kind] = [p.detach().clone() for p in model.parameters()]
    for ours, reference in zip(results[implementation], results["for_loop"]):
        torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-7)
