"""``merging.sweep``: interpolate two models at several points and score each, tracing a frontier.

Each point t is its own ``merging.merge`` run (linear, nuslerp: weights (1 − t, t); slerp: t — any method
the method table marks as interpolating), a child of the
sweep, scored with the evaluators of the two source runs on the first source's data. The points are
ordinary runs, so they take their place on any frontier next to trained models (for example clean vs
robust accuracy between a clean and an adversarially trained classifier); the sweep keeps a ``sweep``
JSON table of t against every metric for the report. A point already in the store (same sources and
parameters) is reused, so a killed sweep resumes where it stopped.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import Field, model_validator

from poise.context import RunContext
from poise.errors import UserError
from poise.merging.merge import MergeModelCfg, child_merge, resolve
from poise.merging.spec import INTERPOLATING, interpolation_point
from poise.recipes import Recipe, kind


class SweepModelCfg(MergeModelCfg):
    """Two models, interpolated at each of ``points`` (0 is the first model, 1 the second)."""

    method: Literal[INTERPOLATING] = "linear"  # type: ignore[valid-type]
    points: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], min_length=2
    )

    @model_validator(mode="after")
    def _two_models(self) -> SweepModelCfg:
        if len(self.models) != 2:
            raise ValueError(f"models: a sweep interpolates exactly 2 models (got {len(self.models)})")
        if self.base is not None or self.weights is not None or self.output is not None:
            raise ValueError(
                "a sweep sets the weights of each point itself; expected no base, weights or output"
            )
        return self


class SweepRecipe(Recipe):
    model: SweepModelCfg


def parse_sweep(text: str, points: int = 5) -> tuple[str, list[float]]:
    """``t=0..1`` (``points`` evenly spaced values) or ``t=0,0.3,1`` → ("t", values)."""
    name, sep, spec = text.partition("=")
    if not sep or name.strip() != "t":
        raise UserError(f"expected t=START..STOP or t=V1,V2,... (got {text!r})", where="--sweep")
    try:
        if ".." in spec:
            lo, hi = (float(v) for v in spec.split("..", 1))
            if points < 2:
                raise UserError(f"expected at least 2 points (got {points})", where="--points")
            values = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
        else:
            values = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise UserError(
            f"expected numbers in t=START..STOP or t=V1,V2,... (got {text!r})", where="--sweep"
        ) from None
    if len(values) < 2 or not all(0.0 <= v <= 1.0 for v in values):
        raise UserError(f"expected at least 2 values of t, each in [0, 1] (got {values})", where="--sweep")
    return "t", [round(v, 10) for v in values]


@kind("merging.sweep", SweepRecipe)
def run(cfg: SweepRecipe, ctx: RunContext) -> None:
    """Interpolate two trained models (linear, SLERP, NuSLERP) and score each point with their evaluators."""
    m = cfg.model
    sources = [resolve(ctx, r, f"model.models[{i}]") for i, r in enumerate(m.models)]
    for s in sources:
        if s.run is None:
            raise UserError(
                f"{s.label} is a file; a sweep scores every point, so it needs runs from the store "
                "(run:ID or a recipe file)",
                where=cfg.source or "sweep",
                field="model.models",
            )
    refs = [f"run:{s.run.id}" for s in sources if s.run is not None]
    shared = m.model_dump(mode="json", include={"rules", "exclude", "dtype", "dot_threshold", "name"})
    rows = []
    for t in m.points:
        model = {
            **shared,
            "method": m.method,
            "models": refs,
            "evaluate": True,
            **interpolation_point(m.method, t),
        }
        point = child_merge(ctx, cfg, f"{cfg.display_name} t={t:g}", model, f"{cfg.source or 'sweep'} (t={t:g})")
        finals = ctx.final_metrics(point)
        metrics = {k: v.value for k, v in sorted(finals.items()) if k.split(".")[0] not in ("cost", "train")}
        directions = {k: v.direction for k, v in finals.items() if k in metrics}
        rows.append({"t": t, "run": point.id, "metrics": metrics, "directions": directions})
        ctx.info(f"t={t:g}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    table = {
        "method": m.method,
        "models": [
            {"label": s.label, "run": s.run.id, "name": s.run.name} for s in sources if s.run is not None
        ],
        "points": rows,
    }
    ctx.save_file(
        "sweep",
        json.dumps(table, indent=2, sort_keys=True).encode(),
        "application/json",
        {"method": m.method},
    )
