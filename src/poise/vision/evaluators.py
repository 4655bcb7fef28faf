"""Vision evaluators: clean accuracy (utility) and accuracy under attack (robustness).

``vision.robust_accuracy`` runs one attack (fgsm, pgd, cw, autoattack) with the recipe's threat model
(``[threat]`` norm and eps) unless the entry sets its own, on the first ``n`` examples of the split
(all when unset). The metric is named for the attack — ``fgsm_acc``, ``pgd20_acc``, ``cw20_acc``,
``autoattack_acc`` — or by ``metric``. Attack randomness is seeded by ``seed`` without touching the
training RNG, so a resumed run evaluates identically.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from poise.errors import UserError
from poise.evaluators import MetricSpec, evaluator
from poise.vision.attacks import ATTACKS, Attack, Eps, Norm, StepSize
from poise.vision.data import as_float


class AccuracyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: Literal["test", "val"] = "test"
    batch_size: int = Field(512, gt=0)
    n: int | None = Field(None, gt=0, description="evaluate the first n examples only")


@torch.no_grad()
def accuracy(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int = 512
) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = as_float(x[i : i + batch_size]).to(device), y[i : i + batch_size].to(device)
        correct += (model(xb).argmax(1) == yb).sum().item()
    return correct / max(len(x), 1)


def robust_accuracy(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    device: torch.device,
    batch_size: int = 256,
    seed: int = 0,
) -> float:
    """Share of examples still classified correctly after ``attack`` (examples already wrong count as
    fooled and are not attacked)."""
    model.eval()
    correct = 0
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i in range(0, len(x), batch_size):
            xb, yb = as_float(x[i : i + batch_size]).to(device), y[i : i + batch_size].to(device)
            with torch.no_grad():
                ok = (model(xb).argmax(1) == yb).nonzero().squeeze(1)
            if len(ok) == 0:
                continue
            x_adv = attack(model, xb[ok], yb[ok])
            with torch.no_grad():
                correct += (model(x_adv).argmax(1) == yb[ok]).sum().item()
    return correct / max(len(x), 1)


@evaluator(
    "vision.clean_accuracy",
    metrics=[MetricSpec("clean_acc", "utility", "max", "top-1 accuracy on clean inputs")],
    params=AccuracyParams,
)
def clean_accuracy(model, data, ctx, *, split: str, batch_size: int, n: int | None) -> dict[str, float]:
    """Top-1 accuracy on the clean test (or validation) split."""
    x, y = data.split(split)
    return {"clean_acc": accuracy(model, x[:n], y[:n], ctx.device, batch_size)}


class RobustParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attack: str = "pgd"
    norm: Norm | None = Field(None, description="default: the recipe's threat.norm")
    eps: Eps | None = Field(None, description="default: the recipe's threat.eps")
    steps: int | None = Field(None, gt=0, description="default: fgsm 1, pgd and cw 20, autoattack 100")
    step_size: StepSize | None = Field(None, description="default 2.5·eps/steps")
    random_start: bool | None = None
    restarts: int = Field(1, gt=0)
    n_targets: Annotated[int, Field(gt=0)] | None = Field(
        None, description="autoattack: APGD-T / FAB-T targets"
    )
    square_queries: int = Field(5000, gt=0, description="autoattack: Square's query budget")
    n: int | None = Field(None, gt=0, description="attack the first n examples only")
    split: Literal["test", "val"] = "test"
    batch_size: int = Field(256, gt=0)
    seed: int = 0
    metric: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*_acc$", description="default: <attack>_acc")

    @field_validator("attack")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ATTACKS:
            raise ValueError(f"unknown attack {v!r}; expected one of: {', '.join(ATTACKS)}")
        return v


@evaluator(
    "vision.robust_accuracy",
    metrics=[MetricSpec("*_acc", "robustness", "max", "accuracy under attack")],
    params=RobustParams,
)
def robust_accuracy_eval(
    model,
    data,
    ctx,
    *,
    attack: str,
    norm,
    eps,
    steps,
    step_size,
    random_start,
    restarts,
    n_targets,
    square_queries,
    n,
    split,
    batch_size,
    seed,
    metric,
) -> dict[str, float]:
    """Accuracy under an FGSM, PGD, CW-L∞ or AutoAttack attack in the recipe's threat model."""
    threat = getattr(ctx.cfg, "threat", None)
    if threat is None and eps is None:
        raise UserError("this recipe has no [threat]; expected eps in the evaluator entry", field="eval")
    atk = Attack(
        attack,
        eps=eps if eps is not None else threat.eps,
        norm=norm or (threat.norm if threat is not None else "linf"),
        steps=steps,
        step_size=step_size,
        start=None if random_start is None else ("uniform" if random_start else "none"),
        restarts=restarts,
        n_targets=n_targets,
        square_queries=square_queries,
        seed=seed,
    )
    x, y = data.split(split)
    acc = robust_accuracy(model, x[:n], y[:n], atk, ctx.device, batch_size, seed)
    return {metric or f"{atk.label}_acc": acc}
