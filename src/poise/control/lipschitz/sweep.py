"""``control.lipschitz_sweep``: one BC recipe trained for every α (and without constraint), as one table.

Each policy is a run of its own (a dependency of the sweep run, reused by config hash); the sweep
collects their final metrics into the JSON artifact ``tradeoff`` that the report draws: nominal
regret against degradation under attack, with the certified action bound α·ε per policy.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field

from poise.context import RunContext
from poise.recipes import Recipe, Section, kind


class SweepCfg(Section):
    """Which BC recipe to train, and for which Lipschitz bounds."""

    policy: str = Field(description="a control.lipschitz_bc recipe file")
    alphas: list[Annotated[float, Field(gt=0.0)]] = Field(
        min_length=1, description="Lipschitz bounds α to train"
    )
    baseline: bool = Field(True, description="also train the unconstrained MLP")
    constraint: str = Field("spectral", pattern="^(spectral|laplacian)$", description="how α is enforced")


class SweepRecipe(Recipe):
    sweep: SweepCfg


TABLE_KEYS = (
    "train.train_error",
    "utility.nominal_cost",
    "utility.regret",
    "robustness.worst_degradation",
    "robustness.lip_upper",
    "robustness.lip_lower",
    "robustness.bound_ratio",
)


@kind("control.lipschitz_sweep", SweepRecipe)
def run(cfg: SweepRecipe, ctx: RunContext) -> None:
    """Train a BC policy for every α (plus the unconstrained baseline) and tabulate the trade-off."""
    variants: list[tuple[str, dict]] = []
    if cfg.sweep.baseline:
        variants.append(("unconstrained", {"model.constraint": "none", "model.alpha": None}))
    for a in sorted(cfg.sweep.alphas):
        variants.append((f"α={a:g}", {"model.constraint": cfg.sweep.constraint, "model.alpha": float(a)}))
    rows = []
    for label, overrides in variants:
        rec = ctx.dependency(cfg.sweep.policy, field="sweep.policy", overrides=overrides)
        final = ctx.final_metrics(rec)
        values = {k: v.value for k, v in final.items()}
        rows.append({"label": label, "alpha": overrides["model.alpha"], "run": rec.id, "metrics": values})
    ctx.log_metrics({"policies": float(len(rows))}, axis="train", direction="max")
    ctx.save_file(
        "tradeoff",
        json.dumps({"rows": rows}, indent=1).encode(),
        "application/json",
        meta={"policy": cfg.sweep.policy},
    )
