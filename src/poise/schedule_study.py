"""``poise study schedules``: which learning-rate schedule gets the most out of a fixed budget.

Rows are schedule × φ (UBA only) and columns budget fractions of each recipe's own budget. The protocol:

1. **Tuning.** Every row gets the same tuning budget: ``tune_trials`` runs of ``poise sweep``
   (:func:`poise.sweep.run_sweep`, TPE) over the base learning rate ``train.lr`` on a log range, at
   the full budget, with seed :data:`TUNE_SEED` (never a test seed), scored on the validation data:
   every evaluator with a ``split`` parameter reads ``val``; evaluators with a ``seed_base`` (RL returns)
   use evaluation seeds shifted by :data:`TUNE_SEED_SHIFT`; a recipe whose evaluators have neither is
   tuned on what they read, and the study says so (``tuned_on``).
2. **Test.** Each row, with its tuned lr, runs every budget fraction with seeds ``0 … seeds−1``;
   a cell is the mean of the test metric over seeds with its 95 % Student-t interval. Finished runs
   with the same config are reused, so a killed study resumes where it stopped.
3. **Ranks.** In each (recipe, budget) cell rows are ranked by their mean (1 is best, ties share);
   a row's mean rank is over all cells, with a 95 % interval over cells.
4. **The claim** "UBA with its recommended φ ranks first or ties on average": UBA's φ is the one with
   the best validation score in tuning (per recipe). For each other schedule, the per-cell rank
   difference (other − UBA) is paired over cells; the claim is *held* when every interval lies above
   −0.5 (UBA no worse by half a rank), *not held* when some interval lies wholly below 0 (that
   schedule ranks better), *inconclusive* otherwise.

The study is written as JSON to ``<store folder>/studies/schedules-<name>.json``; ``poise report``
shows it (final metric vs budget per schedule, the lr curves, mean ranks).

The statistics helpers at the end (:func:`mean_interval`, :func:`difference`, :func:`verdict`,
:func:`mean_ranks`) are the few this study needs; they follow the shared experiment protocol's
definitions so they can be replaced by it.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

from poise.errors import UserError
from poise.recipes import Recipe, ScheduleName, load_recipe

SCHEDULES: tuple[str, ...] = get_args(ScheduleName)
TUNE_SEED = 10_000
TUNE_SEED_SHIFT = 1_000
RANK_MARGIN = 0.5


# --------------------------------------------------------------------------- parsing


def _floats(text: str, field: str) -> list[float]:
    out = []
    for item in (s.strip() for s in str(text).split(",")):
        if not item:
            continue
        try:
            out.append(float(item))
        except ValueError:
            raise UserError(f"expected comma-separated numbers (got {item!r})", field=field) from None
    if not out:
        raise UserError("expected at least one number", field=field)
    return out


def parse_budgets(text: str) -> list[float]:
    """Budget fractions in (0, 1], e.g. ``0.25,0.5,1``."""
    values = _floats(text, "--budgets")
    for v in values:
        if not (math.isfinite(v) and 0 < v <= 1):
            raise UserError(f"budget fraction {v:g} is outside (0, 1]; expected fractions such as 0.25,0.5,1",
                            field="--budgets")
    return sorted(set(values))


def parse_schedules(text: str) -> list[str]:
    names = [s.strip() for s in str(text).split(",") if s.strip()]
    for n in names:
        if n not in SCHEDULES:
            raise UserError(f"unknown schedule {n!r}; expected one of: {', '.join(SCHEDULES)}", field="--schedules")
    if not names:
        raise UserError(f"expected schedules from: {', '.join(SCHEDULES)}", field="--schedules")
    return list(dict.fromkeys(names))


def parse_phis(text: str) -> list[float]:
    values = _floats(text, "--phi")
    for v in values:
        if not (math.isfinite(v) and v > 0):
            raise UserError(f"φ must be > 0 and finite (got {v:g}); expected values such as 0.5,1,2,4", field="--phi")
    return sorted(set(values))


def parse_lr_range(text: str) -> tuple[float, float]:
    m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*\.\.\s*([-+0-9.eE]+)\s*", text)
    if not m:
        raise UserError(f"expected LOW..HIGH such as 1e-4..1e-1 (got {text!r})", field="--lr-range")
    lo, hi = float(m.group(1)), float(m.group(2))
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise UserError(f"expected 0 < LOW < HIGH, finite (got {text!r})", field="--lr-range")
    return lo, hi


# --------------------------------------------------------------------------- rows and overrides


@dataclass(frozen=True)
class Row:
    """One row of the study: a schedule, and φ for UBA."""

    schedule: str
    phi: float | None = None

    @property
    def label(self) -> str:
        return f"uba φ={self.phi:g}" if self.phi is not None else self.schedule

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {"train.schedule.name": self.schedule}
        if self.phi is not None:
            out["train.schedule.phi"] = self.phi
        if self.schedule == "onecycle":
            out["train.schedule.warmup_frac"] = 0.0  # onecycle rises over its own pct_start
        return out


def study_rows(schedules: Sequence[str], phis: Sequence[float]) -> list[Row]:
    rows = []
    for s in schedules:
        rows.extend([Row("uba", p) for p in phis] if s == "uba" else [Row(s)])
    return rows


def budget_override(recipe: Recipe, fraction: float) -> dict[str, Any]:
    """``train.budget`` scaled by ``fraction`` (steps rounded, at least one)."""
    budget = recipe.train.budget
    if budget is None:
        raise UserError("the study scales the recipe's budget; expected an explicit train.budget",
                        where=recipe.source or "recipe", field="train.budget")
    unit, amount = budget.unit, budget.amount * fraction
    value: float | int = max(1, round(amount)) if unit == "steps" else amount
    return {"train.budget": {unit: value, "calibration_steps": budget.calibration_steps}}


def validation_overrides(recipe: Recipe) -> tuple[dict[str, Any], str]:
    """Overrides that make the recipe's evaluators read validation data, and what tuning reads."""
    from poise.evaluators import get_evaluator

    out: dict[str, Any] = {}
    kinds = set()
    for i, entry in enumerate(recipe.eval):
        params = get_evaluator(entry.name).params.model_fields
        if "split" in params:
            out[f"eval.{i}.split"] = "val"
            kinds.add("val")
        elif "seed_base" in params:
            extra = entry.model_extra or {}
            out[f"eval.{i}.seed_base"] = int(extra.get("seed_base", params["seed_base"].default)) + TUNE_SEED_SHIFT
            kinds.add("held-out evaluation seeds")
        else:
            kinds.add("test (no validation split in this evaluator)")
    return out, ", ".join(sorted(kinds)) or "no evaluator"


def metric_direction(recipe: Recipe, metric: str | None) -> tuple[str, str]:
    """``(AXIS.METRIC, max|min)``: the asked metric, or the recipe's first utility metric."""
    from poise.evaluators import get_evaluator
    from poise.sweep import objective_direction

    if metric:
        return objective_direction(recipe, metric)
    for entry in recipe.eval:
        for m in get_evaluator(entry.name).metrics:
            if m.axis == "utility" and "*" not in m.name:
                return f"{m.axis}.{m.name}", m.direction
    raise UserError("the recipe has no utility metric; give --metric AXIS.METRIC", where=recipe.source or "recipe")


# --------------------------------------------------------------------------- the study


@dataclass
class Spec:
    """What ``poise study schedules`` runs (see the module docstring)."""

    recipes: list[Path]
    budgets: list[float]
    schedules: list[str]
    phis: list[float] = field(default_factory=lambda: [2.0])
    seeds: int = 3
    metrics: list[str | None] = field(default_factory=list)
    tune_trials: int = 4
    lr_range: tuple[float, float] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    quick: bool = False
    name: str = "schedules"

    def check(self) -> None:
        if self.seeds < 1:
            raise UserError(f"expected --seeds >= 1 (got {self.seeds})", field="--seeds")
        if self.tune_trials < 1:
            raise UserError(f"expected --tune-trials >= 1 (got {self.tune_trials})", field="--tune-trials")
        if not self.recipes:
            raise UserError("expected at least one recipe", where="study schedules")
        if len(self.metrics) not in (0, 1, len(self.recipes)):
            raise UserError(f"expected one --metric for all recipes or one per recipe ({len(self.recipes)})",
                            field="--metric")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise UserError(f"expected a study name of letters, digits, '.', '_' or '-' (got {self.name!r})",
                            field="--name")


def study_path(store: Any, name: str) -> Path:
    return Path(store.root) / "studies" / f"schedules-{name}.json"


def run_study(store: Any, spec: Spec, *, device: str | None = None) -> dict[str, Any]:
    """Tune, run and rank every row on every recipe and budget; write and return the study's JSON."""
    from poise.runner import Runner
    from poise.sweep import Param, run_sweep
    from poise.ui import get_ui

    spec.check()
    rows = study_rows(spec.schedules, spec.phis)
    ui = get_ui()
    runner = Runner(store, ui, device=device)
    recipes_out = []
    for ri, path in enumerate(spec.recipes):
        base = load_recipe(path, dict(spec.overrides), quick=spec.quick)
        metric, direction = metric_direction(base, (spec.metrics or [None])[min(ri, len(spec.metrics) - 1)]
                                             if spec.metrics else None)
        val, tuned_on = validation_overrides(base)
        if spec.lr_range is not None:
            lo, hi = spec.lr_range
        elif base.train.lr is not None:
            lo, hi = base.train.lr / 10, base.train.lr * 10
        else:
            raise UserError("the recipe sets no train.lr; give --lr-range LOW..HIGH", where=path, field="train.lr")
        budget_override(base, 1.0)  # the recipe must have a budget to scale
        label = base.display_name
        tuned: dict[str, dict[str, Any]] = {}
        for row in rows:
            ui.info(f"{label}: tuning lr for {row.label} ({spec.tune_trials} trials on {tuned_on})")
            study = f"{spec.name}:{label}:{row.label}:tune"
            st = run_sweep(store, path, [Param("train.lr", "log", lo, hi)], [f"{metric}:{direction}"],
                           trials=spec.tune_trials, study=study, quick=spec.quick, seed=0, device=device,
                           overrides={**spec.overrides, **row.overrides(), **val, "seed": TUNE_SEED})
            best = st.best_trial
            tuned[row.label] = {"lr": float(best.params["train.lr"]), "val": float(best.value),
                                "trials": len(st.trials), "study": study}
        cells = []
        for fraction in spec.budgets:
            for row in rows:
                values: dict[int, float] = {}
                run_ids = []
                for seed in range(spec.seeds):
                    over = {**spec.overrides, **row.overrides(), **budget_override(base, fraction),
                            "train.lr": tuned[row.label]["lr"], "seed": seed}
                    cfg = load_recipe(path, over, quick=spec.quick)
                    rec = _reuse(store, cfg, metric) or runner.run(cfg)
                    finals = store.final_metrics([rec.id]).get(rec.id, {})
                    if metric not in finals:
                        raise UserError(f"run {rec.id} did not log {metric}", where=path, field="--metric")
                    values[seed] = finals[metric].value
                    run_ids.append(rec.id)
                iv = mean_interval(list(values.values()))
                cells.append({"budget": fraction, "row": row.label, "values": values, "runs": run_ids,
                              "mean": iv.mean, "low": iv.low, "high": iv.high})
        better = max if direction == "max" else min
        uba = [r for r in rows if r.schedule == "uba"]
        recommended = better(uba, key=lambda r: tuned[r.label]["val"]).label if uba else None
        recipes_out.append({"recipe": str(path), "name": label, "kind": base.kind, "metric": metric,
                            "direction": direction, "tuned_on": tuned_on, "lr_range": [lo, hi], "tuned": tuned,
                            "recommended_uba": recommended, "cells": cells,
                            "schedule": base.train.schedule.model_dump(mode="json"),
                            "budget_unit": base.train.budget.unit, "budget_amount": base.train.budget.amount})
    result = {"name": spec.name, "created": time.time(), "spec": _spec_json(spec),
              "rows": [asdict(r) | {"label": r.label} for r in rows], "recipes": recipes_out}
    result.update(summarise(result))
    path = study_path(store, spec.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(path)
    result["path"] = str(path)
    return result


def _reuse(store: Any, cfg: Recipe, metric: str) -> Any | None:
    found = store.find_done(cfg.config_hash())
    if found is not None and metric in store.final_metrics([found.id]).get(found.id, {}):
        return found
    return None


def _spec_json(spec: Spec) -> dict[str, Any]:
    d = asdict(spec)
    d["recipes"] = [str(p) for p in spec.recipes]
    return d


def summarise(study: dict[str, Any]) -> dict[str, Any]:
    """Mean ranks over (recipe, budget) cells and the UBA claim (see the module docstring)."""
    labels = [r["label"] for r in study["rows"]]
    per_cell: dict[str, list[float]] = {lab: [] for lab in labels}
    claim_cells: dict[str, list[float]] = {}
    for rec in study["recipes"]:
        hib = rec["direction"] == "max"
        for b in sorted({c["budget"] for c in rec["cells"]}):
            means = {c["row"]: c["mean"] for c in rec["cells"] if c["budget"] == b}
            ranks = mean_ranks({k: [v] for k, v in means.items()}, hib)
            for k, v in ranks.items():
                per_cell[k].append(v)
            if rec["recommended_uba"]:  # UBA at its validation φ, other schedules as they are
                pool = {k: v for k, v in means.items() if not k.startswith("uba φ=")}
                pool["uba"] = means[rec["recommended_uba"]]
                for k, v in mean_ranks({k: [v] for k, v in pool.items()}, hib).items():
                    claim_cells.setdefault(k, []).append(v)
    ranks = {k: asdict(mean_interval(v)) for k, v in per_cell.items() if v}
    out: dict[str, Any] = {"mean_ranks": ranks}
    if "uba" in claim_cells and len(claim_cells) > 1:
        diffs = {}
        for k, v in claim_cells.items():
            if k == "uba":
                continue
            d = difference(dict(enumerate(v)), dict(enumerate(claim_cells["uba"])))
            diffs[k] = asdict(d) | {"verdict": verdict(d, "noninferior", RANK_MARGIN)}
        lows = [d["low"] for d in diffs.values()]
        highs = [d["high"] for d in diffs.values()]
        if all(math.isfinite(x) and x > -RANK_MARGIN for x in lows):
            held = "held"
        elif any(math.isfinite(x) and x < 0 for x in highs):
            held = "not held"
        else:
            held = "inconclusive"
        out["claim"] = {"text": "UBA with its recommended φ (best on validation) ranks first or ties on average",
                        "mean_ranks": {k: asdict(mean_interval(v)) for k, v in claim_cells.items()},
                        "differences": diffs, "verdict": held, "margin_ranks": RANK_MARGIN}
    return out


def load_studies(store: Any) -> list[dict[str, Any]]:
    """Every schedule study written to this store's folder, oldest first."""
    folder = Path(store.root) / "studies"
    out = []
    for p in sorted(folder.glob("schedules-*.json")) if folder.is_dir() else []:
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda s: s.get("created", 0))


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Interval:
    """A mean and its two-sided Student-t interval (``low``/``high`` NaN with fewer than two values)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float = math.nan
    paired: bool | None = None


def _t(level: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2.0, df))


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of ``values`` with its 95 % Student-t interval."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = math.fsum(xs) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    h = _t(level, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - h, mean + h, n, sd)


def difference(a: Mapping[int, float], b: Mapping[int, float], level: float = 0.95) -> Interval:
    """Interval of mean(a − b) paired over the keys both have (at least two), else NaN bounds."""
    common = sorted(set(a) & set(b))
    d = mean_interval([a[k] - b[k] for k in common], level)
    return Interval(d.mean, d.low, d.high, d.n, d.sd, paired=True)


def verdict(diff: Interval, relation: str, margin: float = 0.0) -> str:
    """held / not held / inconclusive for ``a RELATION b`` from the interval of a − b."""
    lo, hi = diff.low, diff.high
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if relation == "greater":
        return "held" if lo > margin else "not held" if hi < margin else "inconclusive"
    if relation == "noninferior":
        return "held" if lo > -margin else "not held" if hi < -margin else "inconclusive"
    raise ValueError(f"unknown relation {relation!r}")


def mean_ranks(scores: Mapping[str, Sequence[float]], higher_is_better: bool) -> dict[str, float]:
    """Average rank of each entry over the columns of ``scores`` (1 is best; ties share their mean rank)."""
    import numpy as np
    from scipy.stats import rankdata

    names = list(scores)
    if not names:
        return {}
    table = np.asarray([scores[n] for n in names], dtype=float)  # entries × columns
    ranks = rankdata(-table if higher_is_better else table, method="average", axis=0)
    return {n: float(r) for n, r in zip(names, ranks.mean(axis=1), strict=True)}
