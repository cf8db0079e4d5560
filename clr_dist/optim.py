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
from clr_dist.errors import ConfigError


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


def _sgd(cfg: OptimizerConfig, params: Iterable, lr: float, **implementation: bool) -> torch.optim.Optimizer:
    if cfg.momentum_style == "caffe":
        return CaffeSGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **implementation)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **implementation)


# name -> (the class, for its fused/foreach arguments; the builder, which passes them on)
OPTIMIZERS: dict[str, tuple[Callable[[OptimizerConfig], type], Callable[..., torch.optim.Optimizer]]] = {
    "sgd": (lambda cfg: CaffeSGD if cfg.momentum_style == "caffe" else torch.optim.SGD, _sgd),
    "nesterov": (
        lambda cfg: torch.optim.SGD,
        lambda cfg, params, lr, **kw: torch.optim.SGD(
            params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True, **kw
        ),
    ),
    "adam": (
        lambda cfg: torch.optim.Adam,
        lambda cfg, params, lr, **kw: torch.optim.Adam(
            params, lr=lr, betas=(cfg.momentum, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay, **kw
        ),
    ),
    "rmsprop": (
        lambda cfg: torch.optim.RMSprop,
        lambda cfg, params, lr, **kw: torch.optim.RMSprop(
            params, lr=lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **kw
        ),
    ),
    "adagrad": (
        lambda cfg: torch.optim.Adagrad,
        lambda cfg, params, lr, **kw: torch.optim.Adagrad(
            params, lr=lr, eps=cfg.eps, weight_decay=cfg.weight_decay, **kw
        ),
    ),
    "adadelta": (
        lambda cfg: torch.optim.Adadelta,
        lambda cfg, params, lr, **kw: torch.optim.Adadelta(
            params, lr=lr, rho=cfg.rho, eps=cfg.eps, weight_decay=cfg.weight_decay, **kw
        ),
    ),
}


def implementation_kwargs(optimizer_class: type, implementation: str, device_type: str) -> dict[str, bool]:
    """The ``fused``/``foreach`` arguments of ``optimizer_class`` for ``optimizer.implementation``
    on ``device_type``. auto: fused on CUDA where the class has a fused kernel, else foreach on
    CUDA, and PyTorch's own default on the CPU. Raises ConfigError for a kind the class lacks."""
    import inspect

    accepts = inspect.signature(optimizer_class.__init__).parameters
    if implementation == "auto":
        if device_type != "cuda" or "foreach" not in accepts:
            return {}
        implementation = "fused" if "fused" in accepts else "foreach"
    if implementation == "for_loop":
        return {"foreach": False} if "foreach" in accepts else {}
    if implementation not in accepts:
        raise ConfigError(
            f"optimizer.implementation={implementation}: {optimizer_class.__name__} has no {implementation} "
            f"step; use auto, {'foreach, ' if 'foreach' in accepts else ''}or for_loop"
        )
    return {implementation: True}


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


def build_optimizer(
    cfg: OptimizerConfig, model: torch.nn.Module, lr: float, device_type: str = "cpu"
) -> torch.optim.Optimizer:
    """The configured optimizer (``clr_dist.checks`` has checked ``cfg``) over ``model``'s
    parameter groups, its step fused or foreach as ``cfg.implementation`` says for
    ``device_type``. The LR is overwritten every step (``set_lr``)."""
    optimizer_class, build = OPTIMIZERS[cfg.name]
    kwargs = implementation_kwargs(optimizer_class(cfg), cfg.implementation, device_type)
    optimizer = build(cfg, parameter_groups(model, cfg.weight_decay), lr, **kwargs)
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
