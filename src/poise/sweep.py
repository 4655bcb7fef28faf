"""``poise sweep``: an optuna study over recipe fields, every trial a normal run in the store.

The study lives next to the store (``optuna.db`` in the store folder for SQLite, the same database
for PostgreSQL), so any number of ``poise sweep`` processes on one or many machines started with the
same arguments join one study and stop together when it has ``--trials`` finished trials. With two
or more objectives the sampler is NSGA-II and the answer is the Pareto set; every trial is also a
run, so ``poise frontier`` and ``poise report`` see them like any other.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poise.errors import UserError
from poise.evaluators import get_evaluator
from poise.recipes import load_recipe
from poise.runner import Runner
from poise.store import Store
from poise.ui import get_ui

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class Param:
    """One searched field: ``float``/``log``/``int`` ranges or a ``choice`` list."""

    field: str
    kind: str  # float, log, int, choice
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.field, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.field, int(self.low), int(self.high))
        return trial.suggest_float(self.field, self.low, self.high, log=self.kind == "log")


def parse_param(text: str) -> Param:
    """``train.lr=log:1e-4..1e-1``, ``model.width=int:8..64``, ``t=0..1``, ``train.schedule.name=choice:uba,cosine``."""
    where = f"--param {text}"
    if "=" not in text:
        raise UserError("expected FIELD=SPACE such as train.lr=log:1e-4..1e-1", where=where)
    field, space = (s.strip() for s in text.split("=", 1))
    kind, _, rest = space.partition(":") if ":" in space else ("float", "", space)
    if kind == "choice":
        from poise.recipes import parse_value

        choices = tuple(parse_value(c.strip()) for c in rest.split(",") if c.strip())
        if len(choices) < 2:
            raise UserError("a choice needs at least two values, comma-separated", where=where, field=field)
        return Param(field, "choice", choices=choices)
    if kind not in ("float", "log", "int"):
        raise UserError(f"unknown space {kind!r}; expected float, log, int or choice", where=where, field=field)
    m = re.fullmatch(rf"({_NUM})\.\.({_NUM})", rest.strip())
    if not m:
        raise UserError(f"expected a range LOW..HIGH such as 1e-4..1e-1 (got {rest!r})", where=where, field=field)
    low, high = float(m.group(1)), float(m.group(2))
    if not low < high:
        raise UserError(f"expected LOW < HIGH (got {low:g}..{high:g})", where=where, field=field)
    if kind == "log" and low <= 0:
        raise UserError("a log range needs LOW > 0", where=where, field=field)
    if kind == "int" and (low != math.floor(low) or high != math.floor(high)):
        raise UserError("an int range needs whole numbers", where=where, field=field)
    return Param(field, kind, low, high)


def objective_direction(recipe: Any, objective: str) -> tuple[str, str]:
    """``(metric, "max"|"min")`` from an explicit ``:max``/``:min`` or the recipe's evaluators."""
    name, _, explicit = objective.partition(":")
    if explicit:
        if explicit not in ("max", "min"):
            raise UserError(f"expected :max or :min after the metric (got {explicit!r})", where="--objective")
        return name, explicit
    axis, _, metric = name.partition(".")
    if not metric:
        raise UserError(f"expected AXIS.METRIC such as utility.clean_acc (got {name!r})", where="--objective")
    if axis == "cost":
        return name, "min"
    for entry in recipe.eval:
        spec = get_evaluator(entry.name)
        for m in spec.metrics:
            if m.axis == axis and re.fullmatch(m.name.replace("*", ".*"), metric):
                return name, m.direction
    raise UserError(f"no evaluator of this recipe produces {name!r}; add :max or :min, or evaluate it",
                    where="--objective")


def study_storage(store: Store) -> str:
    if store.url.startswith("sqlite"):
        return f"sqlite:///{Path(store.root) / 'optuna.db'}"
    return store.url


def run_sweep(store: Store, recipe_path: Path, params: list[Param], objectives: list[str], *, trials: int,
              study: str | None = None, quick: bool = False, overrides: dict[str, Any] | None = None,
              seed: int = 0, device: str | None = None, storage: str | None = None, runner: Runner | None = None,
              parent_id: str | None = None) -> Any:
    """Run trials until the study has ``trials`` finished ones; return the optuna study.

    ``runner`` runs the trials (default: a new one on ``store``); ``parent_id`` records them as children
    of a run (a study that tunes its rows)."""
    import optuna

    if trials < 1:
        raise UserError(f"expected at least one trial (got {trials})", where="--trials")
    if not params:
        raise UserError("nothing to search: give at least one --param FIELD=SPACE", where="sweep")
    base = load_recipe(recipe_path, dict(overrides or {}), quick=quick)
    for p in params:  # fail before any trial if a field does not exist or cannot take the value
        ends = p.choices if p.kind == "choice" else (p.low, p.high)
        for end in ends:
            value = int(end) if p.kind == "int" else end
            load_recipe(recipe_path, {**(overrides or {}), p.field: value}, quick=quick)
    directions = [objective_direction(base, o) for o in objectives]
    name = study or f"{base.display_name}:" + ",".join(p.field for p in params)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.NSGAIISampler(seed=seed) if len(directions) > 1
               else optuna.samplers.TPESampler(seed=seed))
    st = optuna.create_study(study_name=name, storage=storage or study_storage(store), sampler=sampler,
                             load_if_exists=True,
                             directions=["maximize" if d == "max" else "minimize" for _, d in directions])
    runner = runner or Runner(store, get_ui(), device=device)

    def objective(trial: Any) -> Any:
        values = {p.field: p.suggest(trial) for p in params}
        cfg = load_recipe(recipe_path, {**(overrides or {}), **values}, quick=quick)
        rec = runner.run(cfg, parent_id=parent_id)
        trial.set_user_attr("run", rec.id)
        if rec.status != "done":
            raise optuna.TrialPruned(f"run {rec.id} {rec.status}")
        finals = store.final_metrics([rec.id]).get(rec.id, {})
        missing = [m for m, _ in directions if m not in finals]
        if missing:
            raise UserError(f"run {rec.id} did not log {', '.join(missing)}", where="--objective")
        out = [finals[m].value for m, _ in directions]
        return out[0] if len(out) == 1 else out

    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    done = [t for t in st.trials if t.state == TrialState.COMPLETE]
    if len(done) < trials:
        st.optimize(objective, callbacks=[MaxTrialsCallback(trials, states=(TrialState.COMPLETE,))],
                    n_trials=trials - len(done))
    return st
