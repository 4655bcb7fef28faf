"""Evaluators turn a trained model into named metrics, each with an axis and a direction.

An evaluator is ``fn(model, data, ctx, **params) -> dict[str, float]`` registered with
:func:`evaluator`, the metrics it produces (names or fnmatch patterns, each with its axis and
direction) and a pydantic model of its parameters. Recipes list evaluators by name in ``[[eval]]``.
The registry itself lives in :mod:`poise.registry`; this module runs a recipe's evaluators.
"""

from __future__ import annotations

from typing import Any

from poise.registry import (  # noqa: F401 - the evaluator API domains use
    AXES,
    Axis,
    Direction,
    EvaluatorSpec,
    MetricSpec,
    all_evaluators,
    evaluator,
    get_evaluator,
    no_params,
)

NoParams = no_params()  # the parameters of an evaluator that takes none


def run_evaluators(entries: list[Any], model: Any, data: Any, ctx: Any, *, step: int | None = None) -> dict[str, float]:
    """Run the recipe's ``[[eval]]`` entries on ``model``; log and return ``{"axis.metric": value}``.

    An evaluator with a ``split`` parameter scores the recipe's ``eval_split`` unless the entry names a split.
    """
    results: dict[str, float] = {}
    split = getattr(getattr(ctx, "cfg", None), "eval_split", None)
    for entry in entries:
        spec = get_evaluator(entry.name)
        given = dict(entry.model_extra or {})
        if split is not None and "split" in spec.params.model_fields and "split" not in given:
            given["split"] = split
        params = spec.params.model_validate(given)
        values = spec.fn(model, data, ctx, **params.model_dump())
        for metric, value in values.items():
            m = spec.spec_for(metric)
            ctx.log_metric(metric, float(value), axis=m.axis, direction=m.direction, step=step)
            results[f"{m.axis}.{metric}"] = float(value)
    return results
