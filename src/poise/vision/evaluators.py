"""Vision evaluators: accuracy on clean inputs (utility)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from poise.evaluators import MetricSpec, evaluator


class AccuracyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: Literal["test", "val"] = "test"
    batch_size: int = Field(512, gt=0)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
             batch_size: int = 512) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        correct += (model(xb).argmax(1) == yb).sum().item()
    return correct / max(len(x), 1)


@evaluator("vision.clean_accuracy", metrics=[MetricSpec("clean_acc", "utility", "max", "top-1 accuracy on clean inputs")],
           params=AccuracyParams)
def clean_accuracy(model, data, ctx, *, split: str, batch_size: int) -> dict[str, float]:
    """Top-1 accuracy on the clean test (or validation) split."""
    x, y = data.split(split)
    return {"clean_acc": accuracy(model, x, y, ctx.device, batch_size)}
