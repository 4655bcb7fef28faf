"""``poise export``: copy runs to other tools (imported on every ``poise`` call, so everything heavy is
imported inside the commands)."""

from __future__ import annotations

from typing import Annotated

import typer

from poise.registry import command

export_app = typer.Typer(help="Export runs to other tools (MLflow).", no_args_is_help=True, rich_markup_mode=None)
command("export")(export_app)


@export_app.command("mlflow")
def export_mlflow(
    run_ids: Annotated[list[str] | None, typer.Argument(help="Run IDs or unique prefixes.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Export every run in the store.")] = False,
    uri: Annotated[str | None, typer.Option("--uri", help="A folder (MLflow file store) or a tracking URI; default "
                                            "$MLFLOW_TRACKING_URI, else ./mlruns.")] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment name.")] = "poise",
    artifacts: Annotated[bool, typer.Option("--artifacts/--no-artifacts", help="Also copy the runs' artifacts "
                                            "(weights, tables, figures).")] = True,
) -> None:
    """Export runs to MLflow: recipe as parameters, metrics with steps, costs, tags, artifacts (no duplicates)."""
    from rich.table import Table
    from rich.text import Text

    from poise.errors import UserError
    from poise.export.mlflow import export_runs
    from poise.session import open_store
    from poise.ui import get_ui

    if bool(run_ids) == all_:
        raise UserError("expected run IDs or --all (one of the two)", where="poise export mlflow")
    if not experiment.strip():
        raise UserError("expected a non-empty experiment name", where="--experiment")
    done = export_runs(open_store(), None if all_ else list(run_ids or []), uri=uri, experiment=experiment,
                       artifacts=artifacts)
    ui = get_ui()
    if ui.json:
        ui.emit([e.__dict__ for e in done])
        return
    t = Table(title=Text(f"{len(done)} runs exported to MLflow experiment {experiment!r}"), title_justify="left")
    for c in ("run", "mlflow run", "action", "params", "metric points", "artifacts"):
        t.add_column(c, justify="right" if c in ("params", "metric points", "artifacts") else "left")
    for e in done:
        t.add_row(e.run_id, e.mlflow_run_id, "created" if e.created else "updated", str(e.params), str(e.metrics),
                  str(e.artifacts))
    ui.print(t)
