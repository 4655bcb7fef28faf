"""``study.compare``: equal tuning for every row, seeds on the test split, intervals and verdicts.

A study recipe lists rows (a recipe, fixed overrides, and the space its own key settings are searched
in) and claims about them. For each row: ``study.trials`` trials of ``poise sweep`` on the validation
split (the recipe's ``eval_split = "val"``, trained with ``study.tune_seed``) pick the settings with the
best ``study.objective``; then every seed in ``study.seeds`` trains those settings and scores the test
split — the only time the test split is read. Rows without a space are run as they are (there is
nothing of theirs to tune; the table says so). A row that starts from another row's model (a fine-tune of
the nominal agent, a student of a teacher row) says so in ``start_from``: the field it names is set to
that row's run of the same seed — with the study's ``set``, the row's own and its chosen settings — so the
start is exactly the other row's model, reused rather than trained again. Seeds are shared by all rows,
so a claim compares two rows seed by seed (same seed, same data order). Every trial and every final run
is an ordinary child run of the study, so a killed study resumes where it stopped: finished runs are
reused, studies continue.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import Field, field_validator, model_validator

from poise.context import RunContext
from poise.errors import UserError
from poise.recipes import Recipe, Section, load_recipe, resolve_recipe_path
from poise.registry import kind
from poise.stats import RELATIONS, Relation, difference, mean_interval, verdict
from poise.sweep import objective_direction, parse_param

AXES_SHOWN = ("utility", "robustness", "safety", "cost")


class StudyRow(Section):
    """One row of a comparison: a recipe, its fixed overrides, and the space of its own key settings."""

    name: str = Field(..., min_length=1, max_length=80, pattern=r"^[^\x00-\x1f]+$", description="row label")
    recipe: str = Field(..., min_length=1, description="recipe file (next to the study, or shipped)")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted overrides of this row's recipe")
    space: dict[str, str] = Field(
        default_factory=dict, description="FIELD = SPACE searched on the validation split, e.g. "
        "'train.lr' = 'log:1e-3..3e-1' (the syntax of poise sweep --param)")
    ablation_of: str | None = Field(None, description="the row this one switches a part of off")
    start_from: dict[str, str] = Field(
        default_factory=dict, description="FIELD = ROW: set this row's recipe FIELD (one that takes a recipe or "
        "run:<id>, e.g. 'model.init_from') to ROW's run of the same seed; ROW comes earlier in the list. Tuning "
        "trials start from ROW's run with the tuning seed and its chosen settings")
    note: str = Field("", max_length=500)


class StudyClaim(Section):
    """A claim of the paper, checked on one metric through the interval of a − b."""

    text: str = Field(..., min_length=1, max_length=500)
    metric: str = Field(..., pattern=r"^[a-z]+\.[A-Za-z0-9_.@*-]+$", description="AXIS.METRIC")
    a: str = Field(..., description="row name")
    b: str = Field(..., description="row name")
    relation: Relation = Field(..., description=f"one of: {', '.join(RELATIONS)}")
    margin: float = Field(0.0, ge=0.0, allow_inf_nan=False, description="margin of noninferior/equivalent/…")


class StudyCfg(Section):
    """The comparison: rows, claims, seeds and the tuning budget every row gets."""

    rows: list[StudyRow] = Field(..., min_length=1)
    claims: list[StudyClaim] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1, max_length=50,
                             description="seeds of the final runs (shared by every row)")
    trials: int = Field(8, ge=0, le=1000, description="tuning trials per row (0: no tuning)")
    objective: str = Field(..., pattern=r"^[a-z]+\.[A-Za-z0-9_.@*-]+(:(max|min))?$",
                           description="AXIS.METRIC[:max|:min] the tuning maximises or minimises on val")
    tune_seed: int = Field(0, ge=0, lt=2**31, description="seed the tuning trials train with")
    sampler_seed: int = Field(0, ge=0, lt=2**31, description="seed of the optuna sampler")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted overrides applied to every row")
    metrics: list[str] = Field(default_factory=list, description="AXIS.METRIC to table (default: all "
                               "utility, robustness and safety metrics, plus wall time and energy)")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("expected distinct seeds")
        if any(not 0 <= s < 2**31 for s in v):
            raise ValueError("expected seeds in [0, 2**31)")
        return v

    @model_validator(mode="after")
    def _names(self) -> StudyCfg:
        names = [r.name for r in self.rows]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"row names must be unique (repeated: {', '.join(dup)})")
        for i, c in enumerate(self.claims):
            for side in (c.a, c.b):
                if side not in names:
                    raise ValueError(f"claims[{i}] names row {side!r}; expected one of: {', '.join(names)}")
        for i, r in enumerate(self.rows):
            if r.ablation_of is not None and r.ablation_of not in names:
                raise ValueError(f"row {r.name!r}: ablation_of names no row ({r.ablation_of!r})")
            for field, src in r.start_from.items():
                if src not in names[:i]:
                    raise ValueError(f"row {r.name!r}: start_from.{field} names {src!r}; expected a row listed "
                                     f"before it ({', '.join(names[:i]) or 'none'})")
                if field in r.space:
                    raise ValueError(f"row {r.name!r}: {field} is both in start_from and in space")
        return self


class CompareRecipe(Recipe):
    """A comparison run as the papers ran it (see :mod:`poise.study.compare`)."""

    study: StudyCfg
    tour: bool = Field(False, description="studies are long: not in poise tour")

    def row_recipe(self, row: StudyRow, overrides: dict[str, Any], *, quick: bool | None = None) -> Recipe:
        where = f"{self.source or 'study'}: row {row.name!r}"
        try:
            path = resolve_recipe_path(row.recipe, self.source)
        except UserError as e:
            raise UserError(e.message, where=where, field="recipe") from None
        try:
            return load_recipe(path, {**self.study.set, **row.set, **overrides},
                               quick=self.is_quick if quick is None else quick)
        except UserError as e:
            raise UserError(f"{e.line()}", where=where) from None

    def preflight(self) -> None:
        """Every row's recipe loads with its overrides and the ends of its space, and the objective is a
        metric the row's evaluators produce — before any run starts."""
        super().preflight()
        for row in self.study.rows:
            where = f"{self.source or 'study'}: row {row.name!r}"
            base = self.row_recipe(row, {})
            for field in row.start_from:
                try:
                    self.row_recipe(row, {field: "run:0000"})
                except UserError as e:
                    raise UserError(f"start_from: {e.message}", where=where, field=f"start_from.{field}") from None
            for field, space in row.space.items():
                try:
                    p = parse_param(f"{field}={space}")
                except UserError as e:
                    raise UserError(e.message, where=where, field=f"space.{field}") from None
                ends = p.choices if p.kind == "choice" else (p.low, p.high)
                for end in ends:
                    self.row_recipe(row, {field: int(end) if p.kind == "int" else end})
            if row.space and self.study.trials > 0:
                try:
                    objective_direction(base, self.study.objective)
                except UserError as e:
                    raise UserError(e.message, where=where, field="study.objective") from None


def _trial_values(trial: Any) -> float:
    return float(trial.values[0]) if trial.values else math.nan


def _starts(cfg: CompareRecipe, ctx: RunContext, row: StudyRow, chosen: dict[str, dict[str, Any]],
            seed: int, split: str) -> dict[str, str]:
    """``{field: "run:<id>"}``: the run of each ``start_from`` row with this seed and split and that row's
    chosen settings (reused from the store: the row's own final run, or its best tuning trial)."""
    out = {}
    for field, src in row.start_from.items():
        source = next(r for r in cfg.study.rows if r.name == src)
        recipe = cfg.row_recipe(source, {**chosen[src], "seed": seed, "eval_split": split})
        rec = ctx.child_run(recipe, field=f"row {row.name} start_from.{field} (row {src}, seed {seed})")
        if rec.status != "done":
            raise UserError(f"row {src!r} seed {seed}: run {rec.id} ended {rec.status}", where=cfg.source or "study")
        out[field] = f"run:{rec.id}"
    return out


def _tune(cfg: CompareRecipe, ctx: RunContext, row: StudyRow,
          chosen_by_row: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(chosen settings, tuning record)`` of one row: its study's best trial on the validation split."""
    s = cfg.study
    if not row.space or s.trials == 0:
        return {}, {"trials": 0, "note": "nothing tuned" if not row.space else "tuning switched off"}
    params = [parse_param(f"{k}={v}") for k, v in row.space.items()]
    # named by what the study is (its config hash), not by its run: running the same study again continues
    # its tuning where it stopped, as its finished child runs are reused
    name = f"{cfg.display_name}:{cfg.config_hash()[:12]}:{row.name}"
    starts = _starts(cfg, ctx, row, chosen_by_row, s.tune_seed, "val")
    fixed = {**s.set, **row.set, **starts, "eval_split": "val", "seed": s.tune_seed}
    st = ctx.sweep(row.recipe, params, [s.objective], trials=s.trials, study=name, overrides=fixed,
                   seed=s.sampler_seed, field=f"study.rows[{row.name}]")
    from optuna.trial import TrialState

    done = [t for t in st.trials if t.state == TrialState.COMPLETE]
    if not done:
        raise UserError(f"no tuning trial of row {row.name!r} finished; see its runs", where=cfg.source or "study")
    best = st.best_trial
    return dict(best.params), {
        "study": name, "trials": len(done), "best_value": _trial_values(best),
        "best_run": best.user_attrs.get("run"), "space": dict(row.space), "starts": starts,
        "all": [{"params": t.params, "value": _trial_values(t), "run": t.user_attrs.get("run")} for t in done],
    }


def _shown(metric: str, wanted: list[str]) -> bool:
    if wanted:
        return metric in wanted
    axis = metric.split(".", 1)[0]
    return axis in AXES_SHOWN[:3] or metric in ("cost.wall_s", "cost.energy_kwh", "cost.co2_g")


@kind("study.compare", CompareRecipe)
def run(cfg: CompareRecipe, ctx: RunContext) -> None:
    """A comparison as the papers ran it: equal tuning on val, seeds on test, intervals and verdicts."""
    s = cfg.study
    rows: list[dict[str, Any]] = []
    chosen_by_row: dict[str, dict[str, Any]] = {}
    for row in s.rows:
        chosen, tuning = _tune(cfg, ctx, row, chosen_by_row)
        chosen_by_row[row.name] = chosen
        ctx.info(f"study {cfg.display_name}: row {row.name} settings {chosen or 'as given'}")
        runs: dict[int, str] = {}
        values: dict[str, dict[int, float]] = {}
        directions: dict[str, str] = {}
        kind_name = ""
        for seed in s.seeds:
            starts = _starts(cfg, ctx, row, chosen_by_row, seed, "test")
            recipe = cfg.row_recipe(row, {**starts, **chosen, "seed": seed, "eval_split": "test"})
            kind_name = recipe.kind
            rec = ctx.child_run(recipe, field=f"row {row.name} seed {seed}")
            if rec.status != "done":
                raise UserError(f"row {row.name!r} seed {seed}: run {rec.id} ended {rec.status}",
                                where=cfg.source or "study")
            runs[seed] = rec.id
            for key, m in ctx.final_metrics(rec).items():
                if _shown(key, s.metrics) and math.isfinite(m.value):
                    values.setdefault(key, {})[seed] = m.value
                    directions[key] = m.direction
        rows.append({
            "name": row.name, "recipe": row.recipe, "kind": kind_name, "set": row.set, "chosen": chosen,
            "tuning": tuning, "ablation_of": row.ablation_of, "note": row.note, "start_from": row.start_from,
            "runs": {str(k): v for k, v in runs.items()},
            "metrics": {k: {"values": {str(seed): v for seed, v in vals.items()},
                            "interval": mean_interval(list(vals.values())).as_dict(),
                            "direction": directions[k]} for k, vals in sorted(values.items())},
        })
    by_name = {r["name"]: r for r in rows}
    claims = []
    for c in s.claims:
        va = {int(k): v for k, v in by_name[c.a]["metrics"].get(c.metric, {}).get("values", {}).items()}
        vb = {int(k): v for k, v in by_name[c.b]["metrics"].get(c.metric, {}).get("values", {}).items()}
        if not va or not vb:
            missing = c.a if not va else c.b
            raise UserError(f"row {missing!r} has no metric {c.metric!r} for the claim {c.text!r}",
                            where=cfg.source or "study", field="study.claims")
        diff = difference(va, vb)
        claims.append({**c.model_dump(), "difference": diff.as_dict(), "verdict": verdict(diff, c.relation, c.margin)})
    held = sum(c["verdict"] == "held" for c in claims)
    ctx.log_metrics({"claims_held": float(held), "claims": float(len(claims)),
                     "claims_not_held": float(sum(c["verdict"] == "not held" for c in claims))},
                    axis="train", direction="max")
    result = {
        "name": cfg.display_name, "description": cfg.description, "objective": s.objective, "trials": s.trials,
        "seeds": s.seeds, "tune_seed": s.tune_seed, "quick": ctx.quick,
        "command": cfg.command() if cfg.source else "",
        "rows": rows, "claims": claims,
    }
    ctx.save_file("comparison", json.dumps(result, indent=1, sort_keys=True).encode(), "application/json")
