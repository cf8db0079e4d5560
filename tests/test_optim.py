from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clr_dist.config import OptimizerConfig
from clr_dist.errors import ConfigError
from clr_dist.optim import OPTIMIZERS, CaffeSGD, build_optimizer, current_momentum, set_lr, set_momentum
from clr_dist.schedules import POLICY_NAMES
from clr_dist.trainer import Trainer
from tests.conftest import compose_train, quick_overrides


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
        (w ** 2).sum().backward()  # g = 2w
        opt.step()
        v = 0.9 * v + lr * (2 * expected_w + 0.1 * expected_w)
        expected_w -= v
        assert w.item() == pytest.approx(expected_w, rel=1e-6)
    pytorch = _trajectory(torch.optim.SGD, lrs, momentum=0.9, weight_decay=0.1)
    assert not torch.allclose(_trajectory(CaffeSGD, lrs, momentum=0.9, weight_decay=0.1), pytorch, atol=1e-4)


@pytest.mark.parametrize(("name", "cls"), [("sgd", torch.optim.SGD), ("nesterov", torch.optim.SGD),
                                           ("adam", torch.optim.Adam), ("rmsprop", torch.optim.RMSprop),
                                           ("adagrad", torch.optim.Adagrad), ("adadelta", torch.optim.Adadelta)])
def test_table_3_optimizers(name: str, cls: type) -> None:
    opt = build_optimizer(OptimizerConfig(name=name, momentum=0.8), torch.nn.Linear(2, 2), 0.1)
    assert type(opt) is cls
    if name == "nesterov":
        assert opt.param_groups[0]["nesterov"]
    if name in ("sgd", "nesterov", "adam", "rmsprop"):
        assert current_momentum(opt) == 0.8
        set_momentum(opt, 0.85)
        assert current_momentum(opt) == 0.85
    if name == "adam":
        assert opt.param_groups[0]["betas"] == (0.85, 0.999)  # beta2 untouched


def test_optimizer_errors() -> None:
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="unknown optimizer.name='lamb'; valid optimizers: sgd, nesterov, adam"):
        build_optimizer(OptimizerConfig(name="lamb"), model, 0.1)
    with pytest.raises(ConfigError, match="momentum_style=caffe applies to optimizer.name=sgd only, not adam"):
        build_optimizer(OptimizerConfig(name="adam", momentum_style="caffe"), model, 0.1)


def test_momentum_cycling_never_turns_momentum_on(tmp_path: Path, small_demo: Path) -> None:
    for optimizer in ("adagrad", "sgd optimizer.momentum=0"):
        name, *extra = optimizer.split()
        with pytest.raises(ConfigError, match="has no momentum to cycle"):
            Trainer(compose_train(quick_overrides(small_demo, f"optimizer={name}", *extra,
                                                  "schedule.momentum_cycle=true")), tmp_path / "run")


TINY = ["model.name=test_resnet", "trainer.max_steps=3", "logger.log_every=1", "schedule.stepsize=1",
        "schedule.stepsize_epochs=null", "trainer.record_lr=true"]


def _smoke(tmp_path: Path, data: Path, *overrides: str) -> list[float]:
    cfg = compose_train(quick_overrides(data, *TINY, *overrides))
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    trainer.close()
    rows = (tmp_path / "run" / "lr_rank0.csv").read_text().splitlines()[1:]
    applied = [float(r.split(",")[1]) for r in rows]
    assert applied == [trainer.schedule.lr(step) for step in range(3)]  # the schedule drives every step
    return applied


@pytest.mark.parametrize("policy", [p for p in POLICY_NAMES if p != "multistage"])
def test_every_policy_trains(policy: str, tmp_path: Path, small_demo: Path) -> None:
    extra = {"one_cycle": ["schedule.total_steps=6"], "multistep": ["schedule.milestones=[1,2]"]}.get(policy, [])
    _smoke(tmp_path, small_demo, f"schedule={policy}", *extra)


def test_multistage_trains(tmp_path: Path, small_demo: Path) -> None:
    _smoke(tmp_path, small_demo, "schedule=multistage")


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_every_optimizer_trains_with_cycled_momentum_where_it_has_one(optimizer: str, tmp_path: Path, small_demo: Path) -> None:
    cycled = optimizer in ("sgd", "nesterov", "adam")
    _smoke(tmp_path, small_demo, f"optimizer={optimizer}", f"schedule.momentum_cycle={str(cycled).lower()}")
    momenta = [r.split(",")[2] for r in (tmp_path / "run" / "lr_rank0.csv").read_text().splitlines()[1:]]
    if cycled:
        assert len(set(momenta)) > 1
