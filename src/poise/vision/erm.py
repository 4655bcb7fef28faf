"""ERM: standard training of an image classifier (the clean baseline and the clean teacher)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from poise.batching import batch_indices, steps_per_epoch
from poise.context import RunContext
from poise.evaluators import rebuilder
from poise.recipes import ModelCfg, Recipe, kind
from poise.vision.data import VisionData, VisionDataCfg, load_vision_data
from poise.vision.models import create_model, model_names


class VisionModelCfg(ModelCfg):
    """An image classifier from the model registry; ``width`` is passed on when set."""

    name: str = "small_cnn"
    width: int | None = Field(None, gt=0)

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in model_names():
            raise ValueError(f"unknown model {v!r}; expected one of: {', '.join(model_names())}")
        return v


class ErmRecipe(Recipe):
    model: VisionModelCfg = Field(default_factory=VisionModelCfg)
    data: VisionDataCfg = Field(default_factory=VisionDataCfg)


def build_model(cfg: VisionModelCfg, data: VisionData) -> torch.nn.Module:
    extra = {"width": cfg.width} if cfg.width else {}
    if cfg.name == "mlp":
        extra["input_size"] = data.input_shape[-1]
    return create_model(cfg.name, num_classes=data.num_classes, in_channels=data.input_shape[0], **extra)


def model_meta(cfg: VisionModelCfg, data: VisionData) -> dict[str, object]:
    return {"model": cfg.model_dump(), "num_classes": data.num_classes, "input_shape": list(data.input_shape),
            "dataset": data.name}


@kind("vision.erm", ErmRecipe)
def run(cfg: ErmRecipe, ctx: RunContext) -> None:
    """Standard training (empirical risk minimisation) of an image classifier."""
    data = load_vision_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data).to(ctx.device)
    x, y = data.train
    n, bs = len(x), cfg.train.batch_size
    meter = ctx.meter(steps_per_epoch(n, bs))
    opt = ctx.optimizer(model.parameters())
    sched = ctx.scheduler(opt, meter)
    ctx.track(model=model, optimizer=opt, scheduler=sched)
    for step in ctx.steps(meter):
        idx = batch_indices(step, n, bs, cfg.seed)
        xb, yb = x[idx].to(ctx.device), y[idx].to(ctx.device)
        model.train()
        with ctx.count_flops(), ctx.autocast():
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        sched.step()
        if step % 10 == 0:
            ctx.log_metrics({"loss": loss.item(), "lr": sched.get_last_lr()[0]}, step=step)
    model.eval()
    ctx.evaluate(model, data)
    ctx.save_artifact("model", model.state_dict(), meta=model_meta(cfg.model, data))


@rebuilder("vision.erm")
def rebuild(
    cfg: ErmRecipe, tensors: dict[str, torch.Tensor], device: torch.device
) -> tuple[torch.nn.Module, VisionData]:
    """The classifier of a vision.erm run with other weights (a merge), and the data its evaluators read."""
    data = load_vision_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data)
    model.load_state_dict(tensors)
    return model.to(device).eval(), data
