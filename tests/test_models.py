from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models import register_model

from clr_dist.errors import ConfigError
from clr_dist.models import (
    CaffeAveragePool,
    WithinChannelLRN,
    build_model,
    check_model_fits,
    check_model_name,
    training_loss,
)


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


def caffe_pooled(size: int) -> int:
    """Caffe's pooled side for kernel 3, stride 2 (it rounds up): ceil((n - 3) / 2) + 1."""
    return math.ceil((size - 3) / 2) + 1


@pytest.mark.parametrize(("size", "sides"), [(32, (16, 8, 4)), (28, (14, 7, 3))])
def test_cifar10_full_layer_shapes_follow_caffes_pooling(size: int, sides: tuple[int, int, int]) -> None:
    assert tuple(caffe_pooled(n) for n in (size, sides[0], sides[1])) == sides
    model = timm.create_model("cifar10_full", num_classes=10, img_size=size)
    shapes = {}
    for name in ("conv1", "pool1", "conv2", "pool2", "conv3", "pool3"):
        getattr(model, name).register_forward_hook(lambda m, i, out, name=name: shapes.__setitem__(name, out.shape[1:]))
    assert model(torch.zeros(2, 3, size, size)).shape == (2, 10)
    assert shapes == {
        "conv1": (32, size, size),
        "pool1": (32, sides[0], sides[0]),
        "conv2": (32, sides[0], sides[0]),
        "pool2": (32, sides[1], sides[1]),
        "conv3": (64, sides[1], sides[1]),
        "pool3": (64, sides[2], sides[2]),
    }
    # conv1 3*32*25 + 32, conv2 32*32*25 + 32, conv3 32*64*25 + 64, ip1 64*side^2*10 + 10.
    expected = 2432 + 25632 + 51264 + 64 * sides[2] ** 2 * 10 + 10
    assert sum(p.numel() for p in model.parameters()) == expected
    assert expected == {32: 89578, 28: 85098}[size]


def test_cifar10_full_starts_as_caffes_fillers() -> None:
    torch.manual_seed(0)
    model = timm.create_model("cifar10_full", num_classes=10)
    for layer, std in (("conv1", 1e-4), ("conv2", 0.01), ("conv3", 0.01), ("ip1", 0.01)):
        weight = getattr(model, layer).weight
        assert weight.mean().abs() < 0.1 * std and weight.std().item() == pytest.approx(std, rel=0.1), layer
        assert torch.count_nonzero(getattr(model, layer).bias) == 0, layer


def test_within_channel_lrn_is_caffes_formula() -> None:
    """x / (1 + alpha / 9 * sum of x^2 over the 3x3 neighbourhood, zeros outside)^beta, by loops."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 5) * 30  # large enough for the normalisation to matter
    alpha, beta = 5e-5, 0.75
    expected = torch.empty_like(x)
    for c in range(2):
        for i in range(4):
            for j in range(5):
                window = x[0, c, max(0, i - 1) : i + 2, max(0, j - 1) : j + 2]
                expected[0, c, i, j] = x[0, c, i, j] / (1 + alpha / 9 * (window**2).sum()) ** beta
    assert torch.allclose(WithinChannelLRN(3, alpha, beta)(x), expected, rtol=1e-6)


@pytest.mark.parametrize("size", [5, 6, 7, 8, 14, 16, 28, 32])
def test_caffe_average_pool_is_ceil_mode_pooling_exactly(size: int) -> None:
    """The same values and gradients, bit for bit, as PyTorch's ceil_mode average pooling, which
    divides a window hanging over the edge by the values inside it (Caffe's AVE pooling)."""
    torch.manual_seed(size)
    x = torch.randn(2, 3, size, size, requires_grad=True)
    reference = torch.nn.AvgPool2d(3, 2, ceil_mode=True)
    out = {}
    for name, pool in (("reference", reference), ("caffe", CaffeAveragePool(3, 2))):
        y = pool(x)
        (grad,) = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(), x)
        out[name] = (y, grad)
    assert torch.equal(out["caffe"][0], out["reference"][0]) and torch.equal(out["caffe"][1], out["reference"][1])
    if size % 2:  # an odd side has no overhanging window; an even one has, and it averages fewer values
        return
    assert torch.allclose(out["caffe"][0][0, 0, -1, -1], x[0, 0, -2:, -2:].mean())


def test_cifar10_full_sigmoid_bn_variant() -> None:
    model = timm.create_model("cifar10_full", num_classes=10, sigmoid_bn=True)
    assert [model.conv1.bias, model.conv2.bias, model.conv3.bias] == [None, None, None]
    assert not model.bn1.affine and not hasattr(model, "norm1")  # Caffe's BatchNorm: no scale, no LRN
    model.eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert model.caffe_multipliers == {"ip1.weight": (1.0, 1.0), "ip1.bias": (1.0, 0.0)}


def test_a_model_that_does_not_fit_the_image_size_is_refused() -> None:
    check_model_fits("cifar10_full", {"img_size": 32}, 32)
    with pytest.raises(
        ConfigError, match=r"^model.name=alexnet \(model.kwargs=\{\}\) does not fit data.image_size=32: "
    ):
        check_model_fits("alexnet", {}, 32)
    with pytest.raises(ConfigError, match="does not fit data.image_size=28: .*give a data.image_size the model takes"):
        check_model_fits("cifar10_full", {"img_size": 32}, 28)  # its classifier is sized for 32


class _ItemInConstructor(torch.nn.Module):
    """A model that reads a tensor's value while it is built, as some timm models do (drop-path
    rates): the meta device cannot, which says nothing about the image size."""

    def __init__(self, num_classes: int = 10, **kwargs) -> None:
        super().__init__()
        self.rate = torch.linspace(0, 0.1, 3)[1].item()
        self.head = torch.nn.Linear(3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)))


@register_model
def clr_dist_test_item_in_constructor(pretrained: bool = False, **kwargs) -> torch.nn.Module:
    return _ItemInConstructor(**kwargs)


def test_a_model_the_meta_device_cannot_build_is_not_refused() -> None:
    check_model_fits("clr_dist_test_item_in_constructor", {}, 32)
