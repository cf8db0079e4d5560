"""Models come from timm's registry; AlexNet and GoogLeNet (which timm lacks) are registered here.

Both are torchvision's architectures. GoogLeNet keeps its two auxiliary classifiers in training
(each loss weighted 0.3, as in Szegedy et al.) and returns only the main logits in eval mode.
No pretrained weights: nothing is downloaded at run time.
"""

from __future__ import annotations

import difflib
from typing import Any

import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.models import register_model

from clr_dist.errors import ConfigError


def _no_pretrained(name: str, pretrained: bool, kwargs: dict[str, Any]) -> None:
    # timm.create_model passes its weight-loading arguments to every entry point.
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    if pretrained:
        raise ConfigError(f"{name}: pretrained weights are not available (clr_dist trains from scratch)")


@register_model
def alexnet(
    pretrained: bool = False, num_classes: int = 1000, drop_rate: float = 0.5, **kwargs: Any
) -> torch.nn.Module:
    """AlexNet (Krizhevsky et al., 2012), torchvision's single-tower variant."""
    _no_pretrained("alexnet", pretrained, kwargs)
    return torchvision.models.AlexNet(num_classes=num_classes, dropout=drop_rate, **kwargs)


@register_model
def googlenet(
    pretrained: bool = False, num_classes: int = 1000, drop_rate: float = 0.2, **kwargs: Any
) -> torch.nn.Module:
    """GoogLeNet / Inception v1 (Szegedy et al., 2015) with both auxiliary classifiers."""
    _no_pretrained("googlenet", pretrained, kwargs)
    kwargs.setdefault("aux_logits", True)
    kwargs.setdefault("init_weights", True)
    return torchvision.models.GoogLeNet(num_classes=num_classes, dropout=drop_rate, **kwargs)


def check_model_name(name: str) -> None:
    """Raise ConfigError, with the closest valid names, when timm does not know ``name``
    (alexnet and googlenet included: this module registered them)."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"did you mean: {', '.join(close)}?" if close else "see timm.list_models() for all names"
        raise ConfigError(f"unknown model.name={name!r}: not in timm's registry; {hint}")


def build_model(name: str, num_classes: int, kwargs: dict[str, Any] | None = None) -> torch.nn.Module:
    """Any timm model by name (``clr_dist.checks`` has checked it), with a fresh ``num_classes`` head."""
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **(kwargs or {}))


def training_loss(outputs: Any, targets: torch.Tensor, aux_loss_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to optimise, main logits). Models with auxiliary heads (GoogLeNet in training)
    return a tuple (logits, aux2, aux1); each auxiliary loss is added with ``aux_loss_weight``."""
    if isinstance(outputs, tuple):
        logits, *aux = outputs
        loss = F.cross_entropy(logits, targets)
        for aux_logits in aux:
            if aux_logits is not None:
                loss = loss + aux_loss_weight * F.cross_entropy(aux_logits, targets)
        return loss, logits
    return F.cross_entropy(outputs, targets), outputs
