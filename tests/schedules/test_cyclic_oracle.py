"""Every step of several cycles against PyTorch's own schedulers.

torch.optim.lr_scheduler.CyclicLR sets the optimizer's LR (and momentum) for update 0 when it is
constructed, and for update k after k calls of ``step()``; so the value read before the k-th
``step()`` call is what our ``lr(k)`` / ``momentum(k)`` must return.
"""

from __future__ import annotations

import pytest
import torch
from schedule_helpers import build
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, CyclicLR

BASE_LR, MAX_LR = 0.001, 0.006  # the paper's CIFAR-10 bounds (§3.3)
BASE_MOMENTUM, MAX_MOMENTUM = 0.85, 0.95
GAMMA = 0.99


def torch_cyclic_trace(steps: int, **kwargs) -> tuple[list[float], list[float]]:
    """(lr, momentum) applied by updates 0..steps-1 under CyclicLR over a momentum SGD."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5, momentum=0.5)
    scheduler = CyclicLR(
        optimizer,
        base_lr=BASE_LR,
        max_lr=MAX_LR,
        cycle_momentum=True,
        base_momentum=BASE_MOMENTUM,
        max_momentum=MAX_MOMENTUM,
        **kwargs,
    )
    lrs, momentums = [], []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        momentums.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    return lrs, momentums


# (our policy, CyclicLR mode); our exp_range is the paper's, CyclicLR's is exp_range_amplitude.
MODES = [("triangular", "triangular"), ("triangular2", "triangular2"), ("exp_range_amplitude", "exp_range")]
# (stepsize, step_ratio) -> (step_size_up, step_size_down): symmetric, slow rise, fast rise.
CYCLES = [(7, 0.5, 7, 7), (10, 0.3, 6, 14), (10, 0.8, 16, 4)]


@pytest.mark.parametrize("policy,mode", MODES)
@pytest.mark.parametrize("stepsize,step_ratio,up,down", CYCLES)
def test_matches_cyclic_lr_every_step(policy: str, mode: str, stepsize: int, step_ratio: float, up: int, down: int):
    steps = 3 * (up + down) + up + 1  # three full cycles, then into the fourth past its peak
    expected_lr, expected_momentum = torch_cyclic_trace(
        steps, step_size_up=up, step_size_down=down, mode=mode, gamma=GAMMA
    )
    schedule = build(
        policy=policy,
        base_lr=BASE_LR,
        max_lr=MAX_LR,
        stepsize=stepsize,
        step_ratio=step_ratio,
        gamma=GAMMA,
        momentum_cycle=True,
        base_momentum=BASE_MOMENTUM,
        max_momentum=MAX_MOMENTUM,
    )
    assert [schedule.lr(step) for step in range(steps)] == pytest.approx(expected_lr, rel=1e-12, abs=1e-15)
    assert [schedule.momentum(step) for step in range(steps)] == pytest.approx(expected_momentum, rel=1e-12, abs=1e-15)
    # The trace really cycles: cycle 1 peaks at update `up` (at max_lr, less the decay of
    # exp_range) and every cycle ends at base_lr with the momentum back at its maximum.
    peak_scale = GAMMA**up if mode == "exp_range" else 1.0
    assert max(expected_lr[: up + down]) == pytest.approx(BASE_LR + (MAX_LR - BASE_LR) * peak_scale)
    assert schedule.lr(up) == pytest.approx(BASE_LR + (MAX_LR - BASE_LR) * peak_scale)
    assert schedule.momentum(up) == pytest.approx(MAX_MOMENTUM - (MAX_MOMENTUM - BASE_MOMENTUM) * peak_scale)
    for cycle_end in (up + down, 2 * (up + down), 3 * (up + down)):
        assert schedule.lr(cycle_end) == pytest.approx(BASE_LR, abs=1e-15)
        assert schedule.momentum(cycle_end) == pytest.approx(MAX_MOMENTUM)


def test_stepsize_epochs_is_converted_with_steps_per_epoch():
    # 2.5 epochs of 4 steps = a stepsize of 10 steps.
    expected_lr, _ = torch_cyclic_trace(70, step_size_up=10, mode="triangular")
    schedule = build(steps_per_epoch=4, policy="triangular", base_lr=BASE_LR, max_lr=MAX_LR, stepsize_epochs=2.5)
    assert [schedule.lr(step) for step in range(70)] == pytest.approx(expected_lr, rel=1e-12)


@pytest.mark.parametrize("cycle_mult", [1, 2])
def test_cosine_restarts_matches_torch_sgdr(cycle_mult: int):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=MAX_LR)
    scheduler = CosineAnnealingWarmRestarts(optimizer, T_0=8, T_mult=cycle_mult, eta_min=BASE_LR)
    expected = []
    for _ in range(60):  # 7.5 cycles of 8, or cycles of 8 + 16 + 32 and a bit
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    schedule = build(policy="cosine_restarts", base_lr=BASE_LR, max_lr=MAX_LR, stepsize=4, cycle_mult=cycle_mult)
    assert [schedule.lr(step) for step in range(60)] == pytest.approx(expected, rel=1e-12, abs=1e-15)
