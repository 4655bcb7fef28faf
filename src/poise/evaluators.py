"""Evaluators turn a trained model into named metrics, each with an axis and a direction.

An evaluator is ``fn(model, data, ctx, **params) -> dict[str, float]`` registered with
:func:`evaluator`, the metrics it produces (names or fnmatch patterns, each with its axis and
direction) and a pydantic model of its parameters. Recipes list evaluators by name in ``[[eval]]``.

A kind may also register a :func:`rebuilder`: how to turn weights back into the model and data its
evaluators take. That lets poise evaluate weights the kind did not train itself (merged models).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from poise.errors import UserError

Axis = Literal["utility", "robustness", "safety", "cost", "train"]
Direction = Literal["max", "min"]
AXES: tuple[str, ...] = ("utility", "robustness", "safety", "cost", "train")


@dataclass(frozen=True)
class MetricSpec:
    """A metric's name (or fnmatch pattern), its axis and whether higher (max) or lower (min) is better."""

    name: str
    axis: Axis
    direction: Direction
    description: str = ""


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class EvaluatorSpec:
    name: str
    fn: Callable[..., dict[str, float]]
    metrics: tuple[MetricSpec, ...]
    params: type[BaseModel]
    summary: str

    def spec_for(self, metric: str) -> MetricSpec:
        for m in self.metrics:
            if fnmatch.fnmatchcase(metric, m.name):
                return m
        raise KeyError(f"evaluator {self.name} produced undeclared metric {metric!r}")


_EVALUATORS: dict[str, EvaluatorSpec] = {}


def evaluator(
    name: str, *, metrics: list[MetricSpec], params: type[BaseModel] = NoParams
) -> Callable[[Callable[..., dict[str, float]]], Callable[..., dict[str, float]]]:
    """Register an evaluator under ``domain.name`` with the metrics it produces."""

    def register(fn: Callable[..., dict[str, float]]) -> Callable[..., dict[str, float]]:
        summary = (fn.__doc__ or "").strip().splitlines()
        _EVALUATORS[name] = EvaluatorSpec(name, fn, tuple(metrics), params, summary[0] if summary else "")
        return fn

    return register


def get_evaluator(name: str, *, where: str | None = None, field: str | None = None) -> EvaluatorSpec:
    from poise.recipes import load_all_kinds, load_domain

    if name not in _EVALUATORS:
        load_domain(name.split(".", 1)[0])
    if name not in _EVALUATORS:
        load_all_kinds()
    if name not in _EVALUATORS:
        known = ", ".join(sorted(_EVALUATORS)) or "none registered"
        raise UserError(f"unknown evaluator {name!r}; expected one of: {known}", where=where, field=field)
    return _EVALUATORS[name]


def all_evaluators() -> dict[str, EvaluatorSpec]:
    from poise.recipes import load_all_kinds

    load_all_kinds()
    return dict(sorted(_EVALUATORS.items()))


def run_evaluators(entries: list[Any], model: Any, data: Any, ctx: Any, *, step: int | None = None) -> dict[str, float]:
    """Run the recipe's ``[[eval]]`` entries on ``model``; log and return ``{"axis.metric": value}``."""
    results: dict[str, float] = {}
    for entry in entries:
        spec = get_evaluator(entry.name)
        params = spec.params.model_validate(entry.model_extra or {})
        values = spec.fn(model, data, ctx, **params.model_dump())
        for metric, value in values.items():
            m = spec.spec_for(metric)
            ctx.log_metric(metric, float(value), axis=m.axis, direction=m.direction, step=step)
            results[f"{m.axis}.{metric}"] = float(value)
    return results


# --------------------------------------------------------------------------- rebuilding models from weights

Rebuilder = Callable[..., tuple[Any, Any]]
_REBUILDERS: dict[str, Rebuilder] = {}


def rebuilder(kind_name: str) -> Callable[[Rebuilder], Rebuilder]:
    """Register ``fn(cfg, tensors, device, meta) -> (model, data)`` for kind ``kind_name``.

    ``cfg`` is the validated recipe of a finished run of that kind, ``tensors`` a state dict shaped
    like its ``model`` artifact and ``meta`` that artifact's metadata (architecture, tokenizer);
    ``model`` and ``data`` are what the kind's evaluators take.
    """

    def register(fn: Rebuilder) -> Rebuilder:
        _REBUILDERS[kind_name] = fn
        return fn

    return register


def get_rebuilder(kind_name: str, *, where: str | None = None) -> Rebuilder:
    from poise.recipes import get_kind

    get_kind(kind_name, where=where)  # imports the kind's domain, which registers its rebuilder
    if kind_name not in _REBUILDERS:
        known = ", ".join(sorted(_REBUILDERS)) or "none"
        raise UserError(f"kind {kind_name} cannot rebuild its model from weights, so its evaluators cannot "
                        f"score them; expected a run of a kind with a rebuilder ({known})", where=where)
    return _REBUILDERS[kind_name]
