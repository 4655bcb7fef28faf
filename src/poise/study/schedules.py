"""``study.schedules``: which learning-rate schedule gets the most out of a fixed budget.

For each target recipe, a ``study.compare`` (:mod:`poise.study.compare`, the shared protocol) is run
whose rows are schedule × φ (UBA only) × budget fraction of the recipe's own budget:

1. **Tuning.** Every row gets the same tuning budget: ``trials`` ``poise sweep`` runs of the base
   learning rate ``train.lr`` on a log range (default: the recipe's lr ÷10 … ×10), trained with the
   protocol's tuning seed and scored on the validation split (``eval_split = "val"``). Each budget
   fraction is tuned on its own, since the best lr depends on the budget.
2. **Test.** Each row's chosen lr trains every seed and scores the test split once; a cell is the
   mean over seeds with its 95 % Student-t interval (:mod:`poise.stats`).
3. **Ranks.** In each (recipe, budget) cell the rows are ranked by their mean (1 is best, ties
   share); a row's mean rank is over all cells, with a 95 % interval over cells.
4. **The claim** "UBA with its recommended φ ranks first or ties on average": UBA's φ is the one with
   the best mean validation score in tuning (per recipe, over its budgets). Against each other
   schedule, the per-cell rank difference (other − UBA) is paired over cells: *held* when every
   interval lies above −0.5 (UBA at most half a rank worse: ``noninferior`` with margin 0.5), *not
   held* when some interval lies wholly below 0, *inconclusive* otherwise.

The study's JSON (artifact ``schedules``) feeds ``poise study schedules``' tables and the report page
(final metric vs budget per schedule, the lr curves, mean ranks). Child runs are reused by config
hash, so a killed study resumes where it stopped.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, get_args

from pydantic import Field, field_validator

from poise.context import RunContext
from poise.errors import UserError
from poise.recipes import Recipe, ScheduleName, Section, build_recipe, load_recipe, resolve_recipe_path
from poise.registry import kind

SCHEDULES: tuple[str, ...] = get_args(ScheduleName)
RANK_MARGIN = 0.5
Fraction = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
Phi = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class Target(Section):
    """One recipe the schedules are compared on, the metric compared, and its own overrides."""

    recipe: str = Field(..., min_length=1, description="recipe file (next to the study, or shipped)")
    metric: str | None = Field(None, pattern=r"^[a-z]+\.[A-Za-z0-9_.@*-]+(:(max|min))?$",
                               description="AXIS.METRIC[:max|:min] (default: the recipe's first utility metric)")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted overrides of this recipe")
    quick: bool | None = Field(None, description="apply this recipe's [quick] table (default: the study's mode)")


class SchedulesCfg(Section):
    """Rows (schedules, φ), columns (budget fractions), seeds and the tuning budget of every row."""

    targets: list[Target] = Field(..., min_length=1)
    budgets: list[Fraction] = Field(default_factory=lambda: [0.25, 0.5, 1.0], min_length=1,
                                    description="fractions of each recipe's budget, in (0, 1]")
    schedules: list[ScheduleName] = Field(default_factory=lambda: list(SCHEDULES), min_length=1)
    phi: list[Phi] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0], min_length=1,
                           description="UBA's φ values, each a row")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1, max_length=50)
    trials: int = Field(4, ge=1, le=1000, description="tuning runs of the base lr per row")
    lr_range: tuple[float, float] | None = Field(None, description="LOW, HIGH of the lr searched (default: "
                                                 "the recipe's lr ÷10 … ×10)")
    tune_seed: int = Field(10_000, ge=0, lt=2**31, description="seed the tuning trials train with")

    @field_validator("lr_range")
    @classmethod
    def _range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not (math.isfinite(v[0]) and math.isfinite(v[1]) and 0 < v[0] < v[1]):
            raise ValueError(f"expected 0 < LOW < HIGH, finite (got {v[0]:g}..{v[1]:g})")
        return v

    @field_validator("budgets", "phi", "schedules", "seeds")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        if len(set(v)) != len(v):
            raise ValueError("expected distinct values")
        return v


class SchedulesRecipe(Recipe):
    """Learning-rate schedules compared at equal tuning budget (see :mod:`poise.study.schedules`)."""

    schedules: SchedulesCfg
    tour: bool = Field(False, description="studies are long: not in poise tour")

    def preflight(self) -> None:
        for i, t in enumerate(self.schedules.targets):
            _base(self, t, field=f"schedules.targets[{i}]")


# --------------------------------------------------------------------------- rows


def row_label(schedule: str, phi: float | None) -> str:
    return f"uba φ={phi:g}" if phi is not None else schedule


def rows(cfg: SchedulesCfg) -> list[tuple[str, float | None]]:
    """``(schedule, φ)`` of every row, in the order asked (φ only for UBA)."""
    out: list[tuple[str, float | None]] = []
    for s in cfg.schedules:
        out.extend([("uba", p) for p in cfg.phi] if s == "uba" else [(s, None)])
    return out


def schedule_overrides(schedule: str, phi: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"train.schedule.name": schedule}
    if phi is not None:
        out["train.schedule.phi"] = phi
    if schedule == "onecycle":
        out["train.schedule.warmup_frac"] = 0.0  # onecycle rises over its own pct_start
    return out


def budget_override(recipe: Recipe, fraction: float) -> dict[str, Any]:
    """``train.budget`` scaled by ``fraction`` (steps rounded, at least one)."""
    budget = recipe.train.budget
    if budget is None:
        raise UserError("the study scales the recipe's budget; expected an explicit train.budget",
                        where=recipe.source or "recipe", field="train.budget")
    unit, amount = budget.unit, budget.amount * fraction
    value: float | int = max(1, round(amount)) if unit == "steps" else amount
    return {"train.budget": {unit: value, "calibration_steps": budget.calibration_steps}}


def _base(study: SchedulesRecipe, target: Target, *, field: str) -> Recipe:
    try:
        path = resolve_recipe_path(target.recipe, study.source)
    except UserError as e:
        raise UserError(e.message, where=study.source or "study", field=f"{field}.recipe") from None
    quick = study.is_quick if target.quick is None else target.quick
    base = load_recipe(path, dict(target.set), quick=quick)
    budget_override(base, 1.0)
    if study.schedules.lr_range is None and base.train.lr is None:
        raise UserError("the recipe sets no train.lr; give schedules.lr_range", where=path, field="train.lr")
    return base


def metric_of(base: Recipe, metric: str | None) -> tuple[str, str]:
    """``(AXIS.METRIC, max|min)``: the asked metric, or the recipe's first utility metric."""
    from poise.registry import get_evaluator
    from poise.sweep import objective_direction

    if metric:
        return objective_direction(base, metric)
    for entry in base.eval:
        for m in get_evaluator(entry.name).metrics:
            if m.axis == "utility" and "*" not in m.name:
                return f"{m.axis}.{m.name}", m.direction
    raise UserError("the recipe has no utility metric; give the target a metric", where=base.source or "recipe")


def compare_recipe(study: SchedulesRecipe, index: int) -> tuple[Recipe, dict[str, Any]]:
    """The ``study.compare`` recipe of target ``index`` and what the summary needs to read it."""
    cfg = study.schedules
    target = cfg.targets[index]
    base = _base(study, target, field=f"schedules.targets[{index}]")
    metric, direction = metric_of(base, target.metric)
    lo, hi = cfg.lr_range or (base.train.lr / 10, base.train.lr * 10)  # type: ignore[operator]
    path = str(resolve_recipe_path(target.recipe, study.source).resolve())
    quick = study.is_quick if target.quick is None else target.quick
    study_rows = []
    for schedule, phi in rows(cfg):
        for f in cfg.budgets:
            study_rows.append({"name": f"{row_label(schedule, phi)} @ {f:g}", "recipe": path,
                               "set": {**schedule_overrides(schedule, phi), **budget_override(base, f)},
                               "space": {"train.lr": f"log:{lo:.6g}..{hi:.6g}"}})
    data = {"kind": "study.compare", "name": f"{study.display_name}: {base.display_name}", "seed": study.seed,
            "study": {"rows": study_rows, "seeds": list(cfg.seeds), "trials": cfg.trials,
                      "objective": f"{metric}:{direction}", "tune_seed": cfg.tune_seed, "set": dict(target.set),
                      "metrics": [metric, "cost.wall_s", "cost.energy_kwh"]}}
    recipe = build_recipe(data, where=f"{study.source or 'study'}: target {index}", quick=quick)
    from poise.registry import get_evaluator

    has_val = any("split" in get_evaluator(e.name).params.model_fields for e in base.eval)
    meta = {"recipe": target.recipe, "name": base.display_name, "kind": base.kind, "metric": metric,
            "tuned_on": "the validation split" if has_val else "the test evaluation (its evaluators have no "
            "validation split)",
            "direction": direction, "lr_range": [lo, hi], "quick": quick,
            "schedule": base.train.schedule.model_dump(mode="json"),
            "budget": {"unit": base.train.budget.unit, "amount": base.train.budget.amount}}  # type: ignore[union-attr]
    return recipe, meta


# --------------------------------------------------------------------------- the kind


@kind("study.schedules", SchedulesRecipe)
def run(cfg: SchedulesRecipe, ctx: RunContext) -> None:
    """Learning-rate schedules at equal tuning budget: per target a study.compare of schedule × φ × budget."""
    s = cfg.schedules
    targets = []
    for i in range(len(s.targets)):
        recipe, meta = compare_recipe(cfg, i)
        ctx.info(f"{cfg.display_name}: {meta['name']} ({len(rows(s)) * len(s.budgets)} rows)")
        rec = ctx.child_run(recipe, field=f"schedules.targets[{i}]")
        if rec.status != "done":
            raise UserError(f"target {meta['name']}: study run {rec.id} ended {rec.status}",
                            where=cfg.source or "study")
        comparison = json.loads(ctx.artifact(rec, "comparison").path.read_text())
        targets.append(_target_summary(s, meta, comparison, rec.id))
    result = {"name": cfg.display_name, "budgets": list(s.budgets), "seeds": list(s.seeds), "trials": s.trials,
              "rows": [{"label": row_label(sc, p), "schedule": sc, "phi": p} for sc, p in rows(s)],
              "targets": targets, "quick": ctx.quick,
              "command": cfg.command() if cfg.source else ""}
    result.update(summarise(result))
    ctx.log_metrics({f"mean_rank:{k}": v["mean"] for k, v in result["mean_ranks"].items()}, axis="train")
    ctx.save_file("schedules", json.dumps(result, indent=1, sort_keys=True).encode(), "application/json")


def _target_summary(s: SchedulesCfg, meta: dict[str, Any], comparison: dict[str, Any], run_id: str
                    ) -> dict[str, Any]:
    by_name = {r["name"]: r for r in comparison["rows"]}
    cells, tuned = [], {}
    for schedule, phi in rows(s):
        label = row_label(schedule, phi)
        vals = []
        for f in s.budgets:
            r = by_name[f"{label} @ {f:g}"]
            cell = r["metrics"].get(meta["metric"])
            if cell is None:
                raise UserError(f"row {r['name']!r} logged no {meta['metric']}", where="study.schedules")
            best = r["tuning"].get("best_value")
            vals.append(best if isinstance(best, float) and math.isfinite(best) else math.nan)
            cells.append({"row": label, "budget": f, "values": cell["values"], "interval": cell["interval"],
                          "lr": r["chosen"].get("train.lr"), "val": best, "runs": r["runs"],
                          "energy_kwh": (r["metrics"].get("cost.energy_kwh") or {}).get("interval")})
        finite = [v for v in vals if math.isfinite(v)]
        tuned[label] = sum(finite) / len(finite) if finite else math.nan
    uba = [row_label("uba", p) for p in s.phi] if "uba" in s.schedules else []
    better = max if meta["direction"] == "max" else min
    scored = [u for u in uba if math.isfinite(tuned[u])]
    recommended = better(scored, key=lambda u: tuned[u]) if scored else (uba[0] if uba else None)
    return {**meta, "study_run": run_id, "cells": cells, "mean_val": tuned, "recommended_uba": recommended}


def summarise(study: dict[str, Any]) -> dict[str, Any]:
    """Mean ranks over (target, budget) cells and the UBA claim (see the module docstring)."""
    from poise.stats import difference, mean_interval, mean_ranks, verdict

    labels = [r["label"] for r in study["rows"]]
    per_cell: dict[str, list[float]] = {lab: [] for lab in labels}
    claim_cells: dict[str, list[float]] = {}
    for t in study["targets"]:
        higher = t["direction"] == "max"
        for b in study["budgets"]:
            means = {c["row"]: c["interval"]["mean"] for c in t["cells"] if c["budget"] == b}
            for k, v in mean_ranks({k: [v] for k, v in means.items()}, higher).items():
                per_cell[k].append(v)
            if t["recommended_uba"]:  # UBA at its validation φ against the other schedules
                pool = {k: v for k, v in means.items() if not k.startswith("uba φ=")}
                pool["uba"] = means[t["recommended_uba"]]
                for k, v in mean_ranks({k: [v] for k, v in pool.items()}, higher).items():
                    claim_cells.setdefault(k, []).append(v)
    out: dict[str, Any] = {"mean_ranks": {k: mean_interval(v).as_dict() for k, v in per_cell.items() if v}}
    if "uba" in claim_cells and len(claim_cells) > 1:
        diffs = {}
        for k, v in claim_cells.items():
            if k != "uba":
                d = difference(dict(enumerate(v)), dict(enumerate(claim_cells["uba"])))
                diffs[k] = {**d.as_dict(), "verdict": verdict(d, "noninferior", RANK_MARGIN)}
        lows = [d["low"] for d in diffs.values()]
        highs = [d["high"] for d in diffs.values()]
        if all(math.isfinite(x) and x > -RANK_MARGIN for x in lows):
            held = "held"
        elif any(math.isfinite(x) and x < 0 for x in highs):
            held = "not held"
        else:
            held = "inconclusive"
        out["claim"] = {"text": "UBA with its recommended φ (best on validation) ranks first or ties on average",
                        "mean_ranks": {k: mean_interval(v).as_dict() for k, v in claim_cells.items()},
                        "differences": diffs, "verdict": held, "margin_ranks": RANK_MARGIN}
    return out


def load_schedules(store: Any, run: Any) -> dict[str, Any] | None:
    """The ``schedules`` artifact of a study.schedules run (None when missing or unreadable)."""
    for a in store.artifacts(run.id):
        if a.name == "schedules" and a.path.is_file():
            try:
                return json.loads(a.path.read_text())
            except ValueError:
                return None
    return None


# --------------------------------------------------------------------------- the command's input


def parse_list(text: str, field: str, cast: Any) -> list[Any]:
    out = []
    for item in (x.strip() for x in str(text).split(",")):
        if item:
            try:
                out.append(cast(item))
            except ValueError:
                raise UserError(f"expected values separated by commas (got {item!r})", field=field) from None
    if not out:
        raise UserError("expected at least one value", field=field)
    return out


def check_budgets(values: list[float]) -> list[float]:
    for v in values:
        if not (math.isfinite(v) and 0 < v <= 1):
            raise UserError(f"budget fraction {v:g} is outside (0, 1]; expected fractions such as 0.25,0.5,1",
                            field="--budgets")
    return sorted(set(values))


def check_schedules(names: list[str]) -> list[str]:
    for n in names:
        if n not in SCHEDULES:
            raise UserError(f"unknown schedule {n!r}; expected one of: {', '.join(SCHEDULES)}", field="--schedules")
    return list(dict.fromkeys(names))


def check_phis(values: list[float]) -> list[float]:
    for v in values:
        if not (math.isfinite(v) and v > 0):
            raise UserError(f"φ must be > 0 and finite (got {v:g}); expected values such as 0.5,1,2,4", field="--phi")
    return sorted(set(values))
