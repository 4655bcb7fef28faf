"""What every vision kind shares: recipe sections, building the model, loading teachers, finishing a run."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator

from poise.context import RunContext
from poise.errors import UserError
from poise.recipes import ModelCfg, Recipe
from poise.vision import robustbench_zoo
from poise.vision.attacks import Attack, ThreatCfg
from poise.vision.data import VisionData, VisionDataCfg, load_vision_data
from poise.vision.models import Classifier, build_classifier, model_names


class VisionModelCfg(ModelCfg):
    """An image classifier from the model registry. ``width`` is the model's width knob when set
    (channels for small_cnn / preact_resnet18, hidden units for mlp, widen factor for wrn34_10, width
    multiplier in percent for mobilenetv2)."""

    name: str = "small_cnn"
    width: int | None = Field(None, gt=0)

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in model_names():
            raise ValueError(f"unknown model {v!r}; expected one of: {', '.join(model_names())}")
        return v


def rebuild(cfg: VisionRecipe, tensors: dict[str, torch.Tensor], device: torch.device,
            meta: dict | None = None) -> tuple[Classifier, VisionData]:
    """The classifier of a finished vision run with other weights (a merge), and the data its evaluators read."""
    data = load_vision_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data)
    model.load_state_dict(tensors)
    return model.to(device).eval(), data


class VisionRecipe(Recipe):
    """Fields of every vision recipe: the model, the data and the threat model (eps ball) it is judged by."""

    model: VisionModelCfg = Field(default_factory=VisionModelCfg)
    data: VisionDataCfg = Field(default_factory=VisionDataCfg)
    threat: ThreatCfg = Field(default_factory=ThreatCfg)

    # every vision kind stores a classifier in the same format, so merged weights are scored the same way
    rebuilder: ClassVar[Any] = staticmethod(rebuild)

    def train_attack(self) -> Attack:
        """The attack this recipe trains against: ``[train.attack]`` in the eps ball of ``[threat]``,
        called as ``attack(model, x, y, objective=None)`` like every evaluator's attack."""
        return Attack.from_recipe(self)


def load_data(ctx: RunContext, cfg: VisionRecipe) -> VisionData:
    """The recipe's data. On CPU, digits-sized models run single-threaded: an 8×8 CNN gains nothing from
    intra-op threads, and on a shared, busy machine two threads made each step ~40× slower in our runs."""
    data = load_vision_data(cfg.data, cfg.seed)
    if ctx.device.type == "cpu" and max(data.input_shape[1:]) <= 16:
        torch.set_num_threads(1)
    return data


def build_model(cfg: VisionModelCfg, data: VisionData) -> Classifier:
    return build_classifier(
        cfg.name,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        mean=data.mean,
        std=data.std,
        width=cfg.width,
    )


def model_meta(cfg: VisionModelCfg, data: VisionData) -> dict[str, Any]:
    """What it takes to rebuild the model from its artifact (and to check a student against it)."""
    return {
        "model": {"name": cfg.name, "width": cfg.width},
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "dataset": data.name,
        "mean": list(data.mean),
        "std": list(data.std),
    }


def load_teacher(ctx: RunContext, ref: str, field: str, data: VisionData) -> Classifier:
    """The teacher named by ``ref`` (``run:<id>``, a recipe trained first when missing, or a RobustBench model
    ``robustbench:<dataset>/<threat_model>/<name>`` read from a local checkpoint), frozen in eval mode; its
    class count and input shape must match the student's data."""
    where = ctx.cfg.source or "recipe"
    if robustbench_zoo.is_ref(ref):
        teacher, parsed = robustbench_zoo.load_classifier(ref, where=where, field=field, relative_to=ctx.cfg.source)
        robustbench_zoo.check_fits(parsed, data.num_classes, data.input_shape, data.name, where=where, field=field)
        return teacher.to(ctx.device).eval().requires_grad_(False)
    run = ctx.dependency(ref, field=field)
    tensors, meta = ctx.load_artifact(run, "model")
    if "num_classes" not in meta or "model" not in meta:
        raise UserError(
            f"run {run.id} ({ref}) is not a vision classifier; expected a vision.* run",
            where=where,
            field=field,
        )
    if meta["num_classes"] != data.num_classes:
        raise UserError(
            f"teacher run {run.id} ({ref}) has {meta['num_classes']} classes but the student's data "
            f"({data.name}) has {data.num_classes}",
            where=where,
            field=field,
        )
    if list(meta["input_shape"]) != list(data.input_shape):
        raise UserError(
            f"teacher run {run.id} ({ref}) takes inputs of shape {tuple(meta['input_shape'])} but the "
            f"student's data ({data.name}) has {data.input_shape}",
            where=where,
            field=field,
        )
    teacher = robustbench_zoo.classifier_from_meta(meta) if "robustbench" in meta else build_classifier(
        meta["model"]["name"],
        num_classes=meta["num_classes"],
        input_shape=meta["input_shape"],
        mean=meta["mean"],
        std=meta["std"],
        width=meta["model"].get("width"),
    )
    teacher.load_state_dict(tensors)
    teacher.to(ctx.device).eval().requires_grad_(False)
    return teacher


def finish(ctx: RunContext, cfg: VisionRecipe, model: torch.nn.Module, data: VisionData) -> None:
    """Evaluate the trained model with the recipe's evaluators and store its weights."""
    model.eval()
    ctx.evaluate(model, data)
    ctx.save_artifact("model", model.state_dict(), meta=model_meta(cfg.model, data))
