from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from clr_dist.errors import ConfigError
from clr_dist.models import build_model, check_model_name, training_loss


@pytest.mark.parametrize("name", ["alexnet", "googlenet"])
def test_registered_in_timm(name: str) -> None:
    assert name in timm.list_models()
    model = timm.create_model(name, num_classes=7)
    model.eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_googlenet_has_aux_heads_in_training_only() -> None:
    torch.manual_seed(0)
    model = build_model("googlenet", 5)
    model.train()
    logits, aux2, aux1 = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == aux2.shape == aux1.shape == (2, 5)
    model.eval()
    assert isinstance(model(torch.randn(2, 3, 64, 64)), torch.Tensor)


def test_aux_losses_are_weighted() -> None:
    torch.manual_seed(0)
    targets = torch.tensor([0, 2, 1])
    logits, aux2, aux1 = (torch.randn(3, 4) for _ in range(3))
    loss, main = training_loss((logits, aux2, aux1), targets, 0.3)
    expected = F.cross_entropy(logits, targets) + 0.3 * (
        F.cross_entropy(aux2, targets) + F.cross_entropy(aux1, targets)
    )
    assert torch.allclose(loss, expected) and main is logits
    plain, _ = training_loss(logits, targets, 0.3)
    assert torch.allclose(plain, F.cross_entropy(logits, targets))


def test_any_timm_model_by_name() -> None:
    model = build_model("resnet18", 3)
    assert model.get_classifier().out_features == 3


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown model.name='resnet5O': not in timm's registry; did you mean: .*resnet50"
    ):
        check_model_name("resnet5O")
    check_model_name("googlenet")  # registered by clr_dist.models


def test_no_pretrained_weights() -> None:
    with pytest.raises(ConfigError, match="pretrained weights are not available"):
        timm.create_model("alexnet", pretrained=True)
