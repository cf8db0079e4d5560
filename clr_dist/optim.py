"""Optimizers, built from config, and the hooks the schedule drives them through."""

from __future__ import annotations

import torch

from clr_dist.config import OptimizerConfig


def build_optimizer(cfg: OptimizerConfig, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay. The LR given here is overwritten at every step."""
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def set_momentum(optimizer: torch.optim.Optimizer, momentum: float) -> None:
    """SGD's momentum, or Adam's beta1 (beta2 is left alone)."""
    for group in optimizer.param_groups:
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        else:
            group["momentum"] = momentum
