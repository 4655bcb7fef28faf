"""``poise study``: run a comparison and show the claims of a stored one (imported on every ``poise`` call,
so everything heavy is imported inside the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from poise.registry import command

study_app = typer.Typer(help="Studies: comparisons run as the papers ran them (equal tuning, seeds, "
                        "intervals, verdicts).", no_args_is_help=True, rich_markup_mode=None)
command("study")(study_app)


def _print(result: dict, run_id: str) -> None:
    from poise.study.report import claim_rows, table_rows, tuning_rows
    from poise.ui import TextTable, get_ui

    ui = get_ui()
    if ui.json:
        ui.emit({"run": run_id, **result})
        return
    headers, rows = table_rows(result)
    for title, head, body in (
        (f"study {result['name']} [{run_id}]: {len(result['seeds'])} seeds, mean ± 95 % interval", headers, rows),
        ("tuned settings (validation split)", ["row", "space", "trials", "chosen", "best val"], tuning_rows(result)),
        ("claims", ["claim", "metric", "rows", "relation", "a − b", "verdict", "command"], claim_rows(result)),
    ):
        if not body:
            continue
        t = TextTable(title=title)
        for h in head:
            t.add_column(h)
        for r in body:
            t.add_row(*[str(c) for c in r])
        ui.print(t)


@study_app.command("compare")
def compare(
    recipe: Annotated[Path, typer.Argument(help="Study recipe (kind = study.compare).")],
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a field: KEY=VALUE.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Apply the study's [quick] overrides.")] = False,
) -> None:
    """Tune every row equally on val, train the seeds, score test once; print the table and the verdicts."""
    from poise.errors import UserError
    from poise.recipes import load_recipe, parse_set_options
    from poise.runner import Runner
    from poise.session import open_store
    from poise.study.report import load_comparison
    from poise.ui import get_ui

    cfg = load_recipe(recipe, parse_set_options(set_ or []), quick=quick)
    if cfg.kind != "study.compare":
        raise UserError(f"expected a study.compare recipe (got kind {cfg.kind})", where=recipe, field="kind")
    store = open_store()
    rec = Runner(store, get_ui()).run(cfg)
    result = load_comparison(store, rec)
    if result is None:
        raise UserError(f"study run {rec.id} has no comparison", where="study")
    _print(result, rec.id)


@study_app.command("show")
def show(run_id: Annotated[str, typer.Argument(help="Run ID (or prefix) of a study.")]) -> None:
    """Print a stored study's table, tuned settings and claims."""
    from poise.errors import UserError
    from poise.session import open_store
    from poise.study.report import load_comparison

    store = open_store()
    rec = store.get_run(run_id)
    result = load_comparison(store, rec) if rec.kind == "study.compare" else None
    if result is None:
        raise UserError(f"run {rec.id} is not a finished study (kind {rec.kind}, status {rec.status})", where="run")
    _print(result, rec.id)


def _cell(iv: dict) -> str:
    import math

    lo, hi = iv.get("low"), iv.get("high")
    if not (isinstance(lo, float) and math.isfinite(lo)):
        return f"{iv['mean']:.4g}"
    return f"{iv['mean']:.4g} ± {(hi - lo) / 2:.2g}"


@study_app.command("schedules")
def schedules(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe TOML file(s) to compare the schedules on.")],
    budgets: Annotated[str, typer.Option("--budgets", help="Fractions of each recipe's budget, in (0, 1].")
                       ] = "0.25,0.5,1",
    schedules: Annotated[str, typer.Option("--schedules", help="Schedules to compare.")
                         ] = "uba,cosine,linear,rex,wsd,step,onecycle,constant",
    phi: Annotated[str, typer.Option("--phi", help="UBA's φ values (each a row).")] = "0.5,1,2,4",
    seeds: Annotated[int, typer.Option("--seeds", help="Test seeds per cell.")] = 3,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="AXIS.METRIC[:max|:min] compared (one, or "
                                                     "one per recipe; default: the first utility metric).")] = None,
    tune_trials: Annotated[int, typer.Option("--tune-trials", help="Tuning runs of the base lr per row.")] = 4,
    lr_range: Annotated[str | None, typer.Option("--lr-range", help="LOW..HIGH searched for the base lr (default: "
                                                 "the recipe's lr divided and multiplied by 10).")] = None,
    name: Annotated[str, typer.Option("--name", help="Study name.")] = "schedules",
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a field of every recipe: "
                                                   "KEY=VALUE.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Apply the recipes' [quick] overrides.")] = False,
) -> None:
    """Tune the base lr of every schedule × φ × budget row equally on val, run the seeds on test, rank them."""
    import re

    from rich.table import Table
    from rich.text import Text

    from poise.errors import UserError
    from poise.recipes import build_recipe, parse_set_options
    from poise.runner import Runner
    from poise.session import open_store
    from poise.study.schedules import check_budgets, check_phis, check_schedules, load_schedules, parse_list
    from poise.ui import get_ui

    if seeds < 1:
        raise UserError(f"expected --seeds >= 1 (got {seeds})", where="--seeds")
    if tune_trials < 1:
        raise UserError(f"expected --tune-trials >= 1 (got {tune_trials})", where="--tune-trials")
    metrics = list(metric or [])
    if len(metrics) not in (0, 1, len(recipes)):
        raise UserError(f"expected one --metric, or one per recipe ({len(recipes)})", where="--metric")
    bounds = None
    if lr_range is not None:
        m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*\.\.\s*([-+0-9.eE]+)\s*", lr_range)
        if not m:
            raise UserError(f"expected LOW..HIGH such as 1e-4..1e-1 (got {lr_range!r})", where="--lr-range")
        bounds = [float(m.group(1)), float(m.group(2))]
    overrides = parse_set_options(set_ or [])
    targets = [{"recipe": str(p.resolve()), "set": dict(overrides),
                "metric": (metrics[i] if len(metrics) > 1 else metrics[0]) if metrics else None}
               for i, p in enumerate(recipes)]
    data = {"kind": "study.schedules", "name": name, "schedules": {
        "targets": targets, "budgets": check_budgets(parse_list(budgets, "--budgets", float)),
        "schedules": check_schedules(parse_list(schedules, "--schedules", str)),
        "phi": check_phis(parse_list(phi, "--phi", float)), "seeds": list(range(seeds)), "trials": tune_trials,
        "lr_range": bounds}}
    cfg = build_recipe(data, where="poise study schedules", quick=quick)
    store = open_store()
    ui = get_ui()
    rec = store.find_done(cfg.config_hash()) or Runner(store, ui).run(cfg)
    result = load_schedules(store, rec)
    if result is None:
        raise UserError(f"study run {rec.id} has no schedules result", where="study")
    if ui.json:
        ui.emit({"run": rec.id, **result})
        return
    for t in result["targets"]:
        on = t.get("tuned_on", "the validation split")
        table = Table(title=Text(f"{t['name']}: {t['metric']} ({t['direction']}), mean ± 95 % interval over "
                                 f"{len(result['seeds'])} seeds; lr tuned on {on}"),
                      title_justify="left")
        table.add_column("schedule")
        for b in result["budgets"]:
            table.add_column(f"budget {b:g}", justify="right")
            table.add_column("lr", justify="right")
        for row in result["rows"]:
            cells = {c["budget"]: c for c in t["cells"] if c["row"] == row["label"]}
            star = " *" if row["label"] == t["recommended_uba"] else ""
            table.add_row(Text(row["label"] + star),
                          *[x for b in result["budgets"] for x in (_cell(cells[b]["interval"]),
                                                                   f"{cells[b]['lr']:.3g}")])
        ui.print(table)
    table = Table(title=Text("mean rank over recipes and budgets (1 is best)"), title_justify="left")
    table.add_column("schedule")
    table.add_column("mean rank", justify="right")
    for label, r in sorted(result["mean_ranks"].items(), key=lambda kv: kv[1]["mean"]):
        table.add_row(Text(label), _cell(r))
    ui.print(table)
    if "claim" in result:
        c = result["claim"]
        ui.print(Text(f"claim: {c['text']} — {c['verdict']} (* = UBA's φ chosen on validation)"))
    ui.print(Text(f"study run {rec.id} (poise report shows it)"))
