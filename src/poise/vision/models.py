"""Model registry for image classifiers (by name in recipes, timm-style).

Inputs are always in [0, 1]; the per-channel normalisation of the dataset lives inside the model
(:class:`Classifier`'s ``normalize`` buffers), so attacks, eps balls and clamps work in pixel space and a
stored artifact carries its own normalisation.

* ``small_cnn`` and ``mlp``: the digits workhorses.
* ``resnet18``: CIFAR-style ResNet-18 — torchvision's ResNet with a 3×3 stride-1 stem and no max-pool.
* ``preact_resnet18``: pre-activation ResNet-18 (He et al., 2016), the usual fast-AT model.
* ``mobilenetv2``: torchvision's MobileNetV2 with the CIFAR strides (stride-1 stem, stride-1 second stage).
* ``wrn34_10``: WideResNet-34-10 (Zagoruyko & Komodakis), the TRADES / MTARD robust teacher.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from poise.errors import UserError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS[name] = fn
        return fn

    return register


def model_names() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, *, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """The bare network ``name`` (no normalisation); see :func:`build_classifier` for the full model."""
    if name not in _MODELS:
        raise UserError(
            f"unknown model {name!r}; expected one of: {', '.join(model_names())}", field="model.name"
        )
    return _MODELS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


class Classifier(nn.Module):
    """A network behind a fixed per-channel normalisation: ``net((x − mean) / std)`` for x in [0, 1]."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_classifier(
    name: str,
    *,
    num_classes: int,
    input_shape: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    width: int | None = None,
) -> Classifier:
    """Registry model ``name`` for inputs of ``input_shape`` (C, H, W), wrapped with its normalisation."""
    extra: dict[str, Any] = {"width": width} if width else {}
    if name == "mlp":
        extra["input_size"] = input_shape[-1]
    net = create_model(name, num_classes=num_classes, in_channels=input_shape[0], **extra)
    return Classifier(net, mean, std)


# --------------------------------------------------------------------------- small models (digits)


@register_model("small_cnn")
class SmallCNN(nn.Module):
    """Two conv blocks and a linear head: the digits workhorse (~30k parameters at width 32)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@register_model("mlp")
class MLP(nn.Module):
    """A two-hidden-layer perceptron on flattened pixels."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 128, input_size: int = 8):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * input_size * input_size, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --------------------------------------------------------------------------- 32×32 models (CIFAR, SVHN)


@register_model("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> nn.Module:
    """CIFAR-style ResNet-18 (11.2M parameters): torchvision's ResNet, 3×3 stem, no max-pool."""
    from torchvision.models.resnet import BasicBlock, ResNet

    net = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, width_per_group=64)
    if width != 64:
        raise UserError(f"resnet18 has a fixed width of 64 (got {width})", field="model.width")
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


class _PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


@register_model("preact_resnet18")
class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 for 32×32 inputs (the model of fast FGSM-RS AT, Wong et al. 2020)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        layers, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2**i
            layers += [_PreActBlock(cin, cout, stride), _PreActBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width: int | None = None) -> nn.Module:
    """MobileNetV2 for 32×32 inputs: torchvision's network with a stride-1 stem and stride-1 second stage."""
    from torchvision.models.mobilenetv2 import MobileNetV2

    setting = [
        [1, 16, 1, 1],
        [6, 24, 2, 1],
        [6, 32, 3, 2],
        [6, 64, 4, 2],
        [6, 96, 3, 1],
        [6, 160, 3, 2],
        [6, 320, 1, 1],
    ]
    net = MobileNetV2(
        num_classes=num_classes, width_mult=(width or 100) / 100, inverted_residual_setting=setting
    )
    stem = net.features[0][0]
    net.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, stride=1, padding=1, bias=False)
    return net


class _WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if cin != cout or stride != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        skip = self.shortcut(o) if self.shortcut is not None else x
        return self.conv2(F.relu(self.bn2(self.conv1(o)))) + skip


@register_model("wrn34_10")
class WideResNet(nn.Module):
    """WideResNet-34-10 (46.2M parameters); ``width`` is the widen factor (10)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 10, depth: int = 34):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks, cin = [], widths[0]
        for stage, stride in zip(range(1, 4), (1, 2, 2), strict=True):
            for i in range(n):
                blocks.append(_WideBlock(cin, widths[stage], stride if i == 0 else 1))
                cin = widths[stage]
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))
