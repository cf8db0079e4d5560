"""Models come from timm's registry; AlexNet and GoogLeNet (which timm lacks) are registered here.

Both are torchvision's architectures. GoogLeNet keeps its two auxiliary classifiers in training
(each loss weighted 0.3, as in Szegedy et al.) and returns only the main logits in eval mode.
No pretrained weights: nothing is downloaded at run time.
"""

from __future__ import annotations

import difflib
import warnings
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


def _caffe_pool_size(size: int) -> int:
    """The side after a 3x3, stride-2 pooling as Caffe computes it: rounded up, ceil((n - 3) / 2) + 1."""
    return -(-(size - 3) // 2) + 1


class CaffeAveragePool(torch.nn.Module):
    """Caffe's average pooling (no padding), rounded up: a window that hangs over the bottom or
    right edge averages only the values inside it. The numbers of ``AvgPool2d(kernel, stride,
    ceil_mode=True)``, computed as sums over a zero-padded input divided by each window's count:
    torch.compile's inductor (torch 2.14) gets the gradient of ``ceil_mode`` average pooling
    wrong at those windows (it divides by kernel^2, pytorch/pytorch#198119), and this form
    compiles to the right one."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def _counts(self, size: int, device: torch.device) -> torch.Tensor:
        starts = torch.arange(-(-(size - self.kernel) // self.stride) + 1, device=device) * self.stride
        return (starts + self.kernel).clamp(max=size) - starts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        rows, cols = self._counts(height, x.device), self._counts(width, x.device)
        overhang_h = (len(rows) - 1) * self.stride + self.kernel - height
        overhang_w = (len(cols) - 1) * self.stride + self.kernel - width
        sums = F.avg_pool2d(F.pad(x, (0, overhang_w, 0, overhang_h)), self.kernel, self.stride, divisor_override=1)
        return sums / (rows[:, None] * cols[None, :]).to(sums.dtype)


class WithinChannelLRN(torch.nn.Module):
    """Caffe's LRN with ``norm_region: WITHIN_CHANNEL``: each value is divided by
    (1 + alpha / n * sum of squares over its ``local_size`` x ``local_size`` neighbourhood)^beta,
    n = local_size^2. Caffe averages the squares with a zero-padded average pooling that counts the
    padding, so the sum is always over n places."""

    def __init__(self, local_size: int, alpha: float, beta: float) -> None:
        super().__init__()
        self.local_size, self.alpha, self.beta = local_size, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = F.avg_pool2d(
            x * x, self.local_size, stride=1, padding=self.local_size // 2, count_include_pad=True
        )
        return x / (1 + self.alpha * mean_square).pow(self.beta)


class Cifar10Full(torch.nn.Module):
    """Caffe's CIFAR-10 "full" network, the CLR paper's CIFAR-10 model (§4.1.1), as BVLC Caffe's
    ``examples/cifar10/cifar10_full_train_test.prototxt`` defines it:

        conv1 32 5x5 pad 2 -> max pool 3/2 -> ReLU -> LRN within channel (3, 5e-5, 0.75)
        conv2 32 5x5 pad 2 -> ReLU -> average pool 3/2 -> LRN
        conv3 64 5x5 pad 2 -> ReLU -> average pool 3/2 -> ip1 (fully connected, num_classes)

    Pooling rounds up as Caffe's does (32 -> 16 -> 8 -> 4; 28 -> 14 -> 7 -> 3). Weights start gaussian (std 1e-4 for conv1, 0.01 elsewhere), biases at 0.

    ``sigmoid_bn``: the variant of the paper's Figure 6 (``cifar10_full_sigmoid_train_test_bn``):
    convolutions without bias, each followed by a batch norm without scale and shift (Caffe's
    BatchNorm layer) and a sigmoid in place of ReLU, no LRN. Caffe keeps its running statistics as
    a bias-corrected average with factor 0.999; this uses PyTorch's exponential average (0.1).

    ``caffe_multipliers`` holds the prototxt's per-parameter ``lr_mult`` and ``decay_mult``;
    ``clr_dist.optim.build_optimizer`` turns them into parameter groups.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, sigmoid_bn: bool = False) -> None:
        super().__init__()
        self.sigmoid_bn = sigmoid_bn
        bias = not sigmoid_bn
        self.conv1 = torch.nn.Conv2d(in_chans, 32, 5, padding=2, bias=bias)
        self.conv2 = torch.nn.Conv2d(32, 32, 5, padding=2, bias=bias)
        self.conv3 = torch.nn.Conv2d(32, 64, 5, padding=2, bias=bias)
        self.pool1 = torch.nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.pool2 = CaffeAveragePool(3, stride=2)
        self.pool3 = CaffeAveragePool(3, stride=2)
        if sigmoid_bn:
            self.bn1, self.bn2, self.bn3 = (torch.nn.BatchNorm2d(c, affine=False) for c in (32, 32, 64))
        else:
            self.norm1 = WithinChannelLRN(3, alpha=5e-5, beta=0.75)
            self.norm2 = WithinChannelLRN(3, alpha=5e-5, beta=0.75)
        side = _caffe_pool_size(_caffe_pool_size(_caffe_pool_size(img_size)))
        self.ip1 = torch.nn.Linear(64 * side * side, num_classes)
        for conv, std in ((self.conv1, 1e-4), (self.conv2, 0.01), (self.conv3, 0.01)):
            torch.nn.init.normal_(conv.weight, std=std)
        torch.nn.init.normal_(self.ip1.weight, std=0.01)
        for layer in (self.conv1, self.conv2, self.conv3, self.ip1):
            if layer.bias is not None:
                torch.nn.init.zeros_(layer.bias)
        if sigmoid_bn:  # cifar10_full_sigmoid_train_test_bn: lr_mult 1 everywhere
            self.caffe_multipliers = {"ip1.weight": (1.0, 1.0), "ip1.bias": (1.0, 0.0)}
        else:  # cifar10_full_train_test: conv3 sets none (1, 1); decay_mult defaults to 1
            self.caffe_multipliers = {
                "conv1.bias": (2.0, 1.0),
                "conv2.bias": (2.0, 1.0),
                "ip1.weight": (1.0, 250.0),
                "ip1.bias": (2.0, 0.0),
            }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sigmoid_bn:
            x = self.pool2(torch.sigmoid(self.bn2(self.conv2(torch.sigmoid(self.bn1(self.pool1(self.conv1(x))))))))
            x = self.pool3(torch.sigmoid(self.bn3(self.conv3(x))))
        else:
            x = self.norm1(F.relu(self.pool1(self.conv1(x))))
            x = self.norm2(self.pool2(F.relu(self.conv2(x))))
            x = self.pool3(F.relu(self.conv3(x)))
        return self.ip1(x.flatten(1))


@register_model
def cifar10_full(pretrained: bool = False, num_classes: int = 10, **kwargs: Any) -> torch.nn.Module:
    """Caffe's CIFAR-10 "full" network (the CLR paper's); ``img_size`` and ``in_chans`` fit it to
    the data (32 px CIFAR-10, 28 px Fashion-MNIST), ``sigmoid_bn`` gives Figure 6's variant."""
    _no_pretrained("cifar10_full", pretrained, kwargs)
    return Cifar10Full(num_classes=num_classes, **kwargs)


def check_model_name(name: str) -> None:
    """Raise ConfigError, with the closest valid names, when timm does not know ``name``
    (alexnet and googlenet included: this module registered them)."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"did you mean: {', '.join(close)}?" if close else "see timm.list_models() for all names"
        raise ConfigError(f"unknown model.name={name!r}: not in timm's registry; {hint}")


def check_model_fits(name: str, kwargs: dict[str, Any], image_size: int) -> None:
    """Raise ConfigError when model ``name`` cannot take RGB images of ``image_size`` pixels (a
    pooling left with nothing to pool, a classifier of another width, a keyword it does not take).
    Checked with a forward pass on PyTorch's meta device: shapes only, no memory, no arithmetic."""
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # e.g. "Initializing zero-element tensors is a no-op"
            model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
            model.eval()
            model(torch.empty(1, 3, image_size, image_size))
    except NotImplementedError:
        return  # an operation the meta device lacks: the first real batch will tell
    except (RuntimeError, ValueError, TypeError) as exc:
        if "meta" in str(exc):
            return  # e.g. .item() in a constructor: not a question of image size
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"model.name={name} (model.kwargs={kwargs}) does not fit data.image_size={image_size}: {reason}; "
            f"give a data.image_size the model takes, or another model"
        ) from exc


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


def compiled(module: torch.nn.Module, mode: str) -> torch.nn.Module:
    """``module`` under ``torch.compile`` in ``mode``, or ``module`` itself for ``"off"``. The
    compiled wrapper shares the module's parameters: keep saving and loading the module's own
    state dict, which has no ``_orig_mod.`` prefixes."""
    return module if mode == "off" else torch.compile(module, mode=mode)
