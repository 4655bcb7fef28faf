"""Model registry for image classifiers (by name in recipes, timm-style). Inputs are in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable

import torch
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


def create_model(name: str, *, num_classes: int, in_channels: int, **kwargs: object) -> nn.Module:
    if name not in _MODELS:
        raise UserError(f"unknown model {name!r}; expected one of: {', '.join(model_names())}", field="model.name")
    return _MODELS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model("small_cnn")
class SmallCNN(nn.Module):
    """Two conv blocks and a linear head: the digits workhorse (~30k parameters at width 32)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
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
            nn.Flatten(), nn.Linear(in_channels * input_size * input_size, width), nn.ReLU(),
            nn.Linear(width, width), nn.ReLU(), nn.Linear(width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
