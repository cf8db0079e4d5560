"""The optimizers of the paper's Table 3, built from config, and the hooks the schedule drives.

The schedule owns the learning rate (and, if it cycles it, the momentum): ``set_lr`` and
``set_momentum`` overwrite the optimizer's values before every update. A model may carry Caffe's
per-parameter multipliers (``caffe_multipliers``: name -> (lr_mult, decay_mult), as in
``clr_dist.models.Cifar10Full``): its parameters then fall into groups whose LR is the schedule's
times ``lr_mult`` at every step and whose weight decay is ``optimizer.weight_decay`` times
``decay_mult``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from clr_dist.config import OptimizerConfig


class CaffeSGD(torch.optim.Optimizer):
    """SGD with momentum as Caffe computes it, the optimizer of the CLR paper's experiments.

    Caffe keeps the LR inside the velocity: v = m v + lr (g + wd w); w -= v. PyTorch applies it
    outside: v = m v + (g + wd w); w -= lr v. With a fixed LR the two differ only by a constant
    factor in v, but when the LR changes every step, as in CLR, the velocity remembers past
    learning rates in Caffe and not in PyTorch, so faithful reproductions need this form.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad.add(p, alpha=group["weight_decay"]).mul_(group["lr"])
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = update
                else:
                    state["velocity"].mul_(group["momentum"]).add_(update)
                p.sub_(state["velocity"])
        return loss


def _sgd(cfg: OptimizerConfig, params: Iterable, lr: float) -> torch.optim.Optimizer:
    if cfg.momentum_style == "caffe":
        return CaffeSGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


OPTIMIZERS: dict[str, Callable[[OptimizerConfig, Iterable, float], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "nesterov": lambda cfg, params, lr: torch.optim.SGD(
        params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
    ),
    "adam": lambda cfg, params, lr: torch.optim.Adam(
        params, lr=lr, betas=(cfg.momentum, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay
    ),
    "rmsprop": lambda cfg, params, lr: torch.optim.RMSprop(
        params, lr=lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    ),
    "adagrad": lambda cfg, params, lr: torch.optim.Adagrad(params, lr=lr, eps=cfg.eps, weight_decay=cfg.weight_decay),
    "adadelta": lambda cfg, params, lr: torch.optim.Adadelta(
        params, lr=lr, rho=cfg.rho, eps=cfg.eps, weight_decay=cfg.weight_decay
    ),
}
# Optimizers with no momentum term for a schedule to cycle.
WITHOUT_MOMENTUM = frozenset({"adagrad", "adadelta"})


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """``model``'s trainable parameters, one group per (lr_mult, decay_mult) of its
    ``caffe_multipliers`` ((1, 1) for every parameter it does not name, and for models without
    them), in the order the parameters first appear."""
    multipliers: dict[str, tuple[float, float]] = getattr(model, "caffe_multipliers", {})
    unknown = set(multipliers) - {name for name, _ in model.named_parameters()}
    if unknown:  # a typo in a model's table would silently train at the wrong rate
        raise ValueError(f"caffe_multipliers names no parameter of the model: {sorted(unknown)}")
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault(multipliers.get(name, (1.0, 1.0)), []).append(param)
    return [
        {"params": params, "lr_mult": lr_mult, "weight_decay": weight_decay * decay_mult}
        for (lr_mult, decay_mult), params in groups.items()
    ]


def build_optimizer(cfg: OptimizerConfig, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """The configured optimizer (``clr_dist.checks`` has checked ``cfg``) over ``model``'s
    parameter groups. The LR is overwritten every step (``set_lr``)."""
    optimizer = OPTIMIZERS[cfg.name](cfg, parameter_groups(model, cfg.weight_decay), lr)
    set_lr(optimizer, lr)
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's ``lr`` on every group, times the group's ``lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def current_momentum(optimizer: torch.optim.Optimizer) -> float | None:
    """SGD's or RMSprop's momentum, Adam's beta1, or None for an optimizer without one."""
    group = optimizer.param_groups[0]
    if "betas" in group:
        return group["betas"][0]
    return group.get("momentum")


def set_momentum(optimizer: torch.optim.Optimizer, momentum: float) -> None:
    """SGD's or RMSprop's momentum, or Adam's beta1 (beta2 is left alone)."""
    for group in optimizer.param_groups:
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        else:
            group["momentum"] = momentum
