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
    from rich.table import Table
    from rich.text import Text

    from poise.study.report import claim_rows, table_rows, tuning_rows
    from poise.ui import get_ui

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
        t = Table(title=Text(title), title_justify="left")
        for h in head:
            t.add_column(Text(h))
        for r in body:
            t.add_row(*[Text(str(c)) for c in r])
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
