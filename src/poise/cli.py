"""The ``poise`` command line: run, tour, sweep, recipes, runs, frontier, report, carbon, and the commands
domains add (``poise merge``, ``poise data``; see :func:`poise.registry.command`).

Bad input exits with code 2 and one line (``poise: error: FILE: FIELD: what was expected``); other
failures exit 1 with one line. ``--debug`` shows tracebacks. Help texts are plain text (no markup), and
heavy libraries are imported inside the commands that use them, so listing runs or asking for help
starts in a fraction of a second.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from poise import __version__
from poise.errors import RunInterrupted, Terminated, UserError
from poise.registry import commands as domain_commands
from poise.session import SESSION, open_store
from poise.ui import UI, TextTable, get_ui, metrics_table, set_ui

try:  # typer ships its own copy of click
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as _cx  # type: ignore[no-redef]

app = typer.Typer(
    name="poise",
    help="Train models that stay robust and safe without giving up utility, and measure what it costs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts are shown as written: "[quick]" is a recipe table, not markup
    context_settings={"help_option_names": ["-h", "--help"]},
)
runs_app = typer.Typer(help="List, inspect, resume and delete runs.", no_args_is_help=True, rich_markup_mode=None)
carbon_app = typer.Typer(help="Energy and CO2: a job's time, energy and CO2 on other GPUs and grids.",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(runs_app, name="runs")
app.add_typer(carbon_app, name="carbon")

SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a recipe field: KEY=VALUE (repeatable).")
]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="cpu, cuda, cuda:N, mps or auto (overrides the recipe).")
]


def _store() -> Any:
    return open_store()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"poise {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    store: Annotated[
        str | None, typer.Option("--store", help="Store URL (default: .poise/ here, or $POISE_STORE).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or chatter.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    SESSION.store_url = store
    SESSION.debug = debug
    set_ui(UI(quiet=quiet or json_out, json=json_out))


# --------------------------------------------------------------------------- run / tour


def _final_summary(store: Any, run: Any) -> dict[str, float]:
    finals = store.final_metrics([run.id]).get(run.id, {})
    return {k: m.value for k, m in sorted(finals.items()) if not k.startswith("train.")}


def _print_result(store: Any, result: Any) -> None:
    """A finished run's metrics: a table, or one JSON document with --json."""
    ui = get_ui()
    summary = _final_summary(store, result)
    if ui.json:
        ui.emit({"run": result.id, "status": result.status, "metrics": summary})
    else:
        ui.print(metrics_table(f"run {result.id} ({result.kind}) {result.status}", summary))


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file.")],
    set_: SetOpt = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Apply the recipe's [quick] overrides (small and fast).")
    ] = False,
    device: DeviceOpt = None,
) -> None:
    """Run one recipe and print its metrics."""
    from poise.recipes import load_recipe, parse_set_options
    from poise.runner import Runner

    cfg = load_recipe(recipe, parse_set_options(set_ or []), quick=quick)
    store = open_store() if cfg.store is None or SESSION.store_url else open_store(cfg.store)
    ui = get_ui()
    _print_result(store, Runner(store, ui, device=device).run(cfg))


@app.command()
def tour(
    quick: Annotated[bool, typer.Option("--quick", help="Every recipe small (minutes on a laptop CPU).")] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="Report folder.")] = Path("poise-report"),
    only: Annotated[list[str] | None, typer.Option("--only", help="Only recipes whose path matches (glob).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Re-run recipes that already have a finished run.")] = False,
    device: DeviceOpt = None,
) -> None:
    """Run every shipped recipe (reusing finished runs), print the frontiers and write the report."""
    from poise.tour import run_tour

    run_tour(_store(), quick=quick, output=output, only=only or [], fresh=fresh, device=device)


@app.command()
def sweep(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file.")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="FIELD=SPACE [if FIELD=VALUE]: "
                                                    "log:1e-4..1e-1, int:8..64, 0..1, choice:a,b, fixed:v "
                                                    "(repeatable).")] = None,
    space: Annotated[Path | None, typer.Option("--space", help="Search space file ([[param]] tables).")] = None,
    objective: Annotated[list[str] | None, typer.Option("--objective", help="AXIS.METRIC[:max|:min] (repeatable; "
                                                        "two or more give a Pareto set).")] = None,
    trials: Annotated[int, typer.Option("--trials", "-n", help="Finished trials the study should reach.")] = 8,
    study: Annotated[str | None, typer.Option("--study", help="Study name (workers join it by name).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Local worker processes (0: only create the study); "
                                      "with --executor ray, trials in flight.")] = 1,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL (default: optuna.db in the "
                                                "store folder, or the store's PostgreSQL).")] = None,
    sampler: Annotated[str, typer.Option("--sampler", help="auto (NSGA-II for several objectives, else TPE), "
                                         "nsga2, tpe, random or grid.")] = "auto",
    pruner: Annotated[str, typer.Option("--pruner", help="auto (median for one objective), median, hyperband "
                                        "or none.")] = "auto",
    executor: Annotated[str, typer.Option("--executor", help="local or ray.")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster HOST:PORT or auto.")] = None,
    gpus_per_trial: Annotated[float, typer.Option("--gpus-per-trial", help="GPUs each Ray trial asks for.")] = 0.0,
    on_worker_death: Annotated[str, typer.Option("--on-worker-death", help="retry (resume the trial's run) or "
                                                 "fail a trial whose worker died.")] = "retry",
    heartbeat: Annotated[int, typer.Option("--heartbeat", help="Seconds between trial heartbeats; a trial "
                                           "silent for 3 of them is stale.")] = 10,
    set_: SetOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="Apply the recipe's [quick] overrides.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed.")] = 0,
    device: DeviceOpt = None,
) -> None:
    """Search recipe fields with optuna; every trial is a run. `poise worker` processes anywhere join by name."""
    from poise.recipes import parse_set_options
    from poise.space import load_space_file
    from poise.sweep import is_database_url, parse_param, run_sweep

    params = [parse_param(p) for p in param or []]
    if space is not None:
        params = load_space_file(space) + params
    store = _sweep_store(storage)
    st = run_sweep(store, recipe, params, objective or [], trials=trials, study=study,
                   overrides=parse_set_options(set_ or []), quick=quick, seed=seed, device=device, storage=storage,
                   sampler=sampler, pruner=pruner, jobs=jobs, executor=executor, address=address,
                   gpus_per_trial=gpus_per_trial, on_worker_death=on_worker_death, heartbeat=heartbeat)
    _print_study(st, [p.field for p in params if p.searched])
    if jobs == 0:
        get_ui().info(f"study {st.study_name} is ready: start `poise worker --study {st.study_name} --storage URL`"
                      + ("" if is_database_url(storage) else " on this machine"))


def _sweep_store(storage: str | None) -> Any:
    """The run store of a sweep: --store (or $POISE_STORE), else a PostgreSQL storage's database."""
    from poise.sweep import check_storage_url, is_database_url

    if storage is not None:
        check_storage_url(storage)
    if SESSION.store_url is None and not os.environ.get("POISE_STORE") and is_database_url(storage):
        return open_store(storage)
    return open_store()


def _print_study(st: Any, fields: list[str]) -> None:
    from optuna.trial import TrialState

    ui = get_ui()
    best = st.best_trials
    states = [t.state for t in st.trials]
    counts = {s.name.lower(): states.count(s) for s in TrialState if states.count(s)}
    objectives = [o for o, _ in st.user_attrs.get("poise", {}).get("objectives", [])] or [
        f"value {i}" for i in range(len(st.directions))]
    if ui.json:
        ui.emit({"study": st.study_name, "trials": len(st.trials), "states": counts,
                 "best": [{"run": t.user_attrs.get("run"), "params": t.params, "values": t.values} for t in best]})
        return
    t = TextTable(title=f"study {st.study_name}: {len(st.trials)} trials "
                        f"({', '.join(f'{n} {k}' for k, n in counts.items())}), "
                        f"{'Pareto set' if len(objectives) > 1 else 'best'}")
    t.add_column("run")
    for f in fields:
        t.add_column(f)
    for o in objectives:
        t.add_column(o, justify="right")
    for tr in best:
        cells = [tr.params.get(f, "") for f in fields]
        t.add_row(str(tr.user_attrs.get("run", "")), *[f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells],
                  *[f"{v:.4g}" for v in tr.values])
    ui.print(t)


@app.command()
def worker(
    study: Annotated[str, typer.Option("--study", help="Name of a study made by `poise sweep`.")],
    storage: Annotated[str, typer.Option("--storage", envvar="POISE_STORAGE",
                                         help="Its optuna storage URL (or $POISE_STORAGE).")],
    device: DeviceOpt = None,
) -> None:
    """Pull trials from a sweep's study until it has its trial count (run any number, on any machines)."""
    from poise.sweep import run_worker, worker_store

    store = open_store() if SESSION.store_url or os.environ.get("POISE_STORE") else worker_store(storage)
    st = run_worker(storage, study, store, device=device)
    spec = st.user_attrs.get("poise", {})
    _print_study(st, [p["field"] for p in spec.get("params", []) if p["kind"] != "fixed"])


# --------------------------------------------------------------------------- recipes


@app.command()
def recipes() -> None:
    """List the registered recipe kinds, evaluators and the shipped recipe files."""
    import tomllib

    from rich.text import Text

    from poise.recipes import shipped_recipes, shipped_recipes_root
    from poise.registry import catalog

    ui = get_ui()
    cat = catalog()
    root = shipped_recipes_root()
    files = []
    for p in shipped_recipes():
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise UserError(f"cannot read recipe: {e}", where=p) from None
        files.append({"path": str(p.relative_to(root)), "kind": data.get("kind", "?"),
                      "description": data.get("description", ""), "tour": data.get("tour", True)})
    if ui.json:
        ui.emit({"kinds": {k: v["summary"] for k, v in cat["kinds"].items()},
                 "evaluators": cat["evaluators"], "recipes": files})
        return
    t = TextTable(title="recipe kinds")
    t.add_column("kind")
    t.add_column("what it trains")
    for k, v in cat["kinds"].items():
        t.add_row(Text(k), Text(v["summary"]))
    ui.print(t)
    t = TextTable(title="evaluators")
    t.add_column("evaluator")
    t.add_column("metrics (axis, direction)")
    for k, e in cat["evaluators"].items():
        t.add_row(Text(k), Text(", ".join(f"{m['name']} ({m['axis']}, {m['direction']})" for m in e["metrics"])))
    ui.print(t)
    t = TextTable(title=Text(f"shipped recipes ({root})"))
    t.add_column("file")
    t.add_column("kind")
    t.add_column("tour")
    t.add_column("description")
    for f in files:
        t.add_row(Text(f["path"]), Text(str(f["kind"])), "yes" if f["tour"] else "no", Text(str(f["description"])))
    ui.print(t)


# --------------------------------------------------------------------------- runs


def parse_since(text: str | None, *, where: str = "--since") -> float | None:
    """``--since``: an ISO date or time (``2026-05-01``, ``2026-05-01T12:00``) or a duration back from now
    (``90s``, ``30m``, ``2h``, ``3d``, ``1w``) as epoch seconds."""
    import re
    import time
    from datetime import datetime

    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if m:
        return time.time() - float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m[2]]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise UserError(f"expected an ISO date such as 2026-05-01 or a duration such as 2h or 3d (got {text!r})",
                        where=where) from None


@runs_app.command("ls")
def runs_ls(
    kind: Annotated[str | None, typer.Option(help="Only this kind (glob).")] = None,
    name: Annotated[str | None, typer.Option(help="Only runs whose name matches (glob).")] = None,
    status: Annotated[str | None, typer.Option(help="running, done, failed, interrupted or pruned.")] = None,
    study: Annotated[str | None, typer.Option(help="Only the trials of this sweep study.")] = None,
    since: Annotated[str | None, typer.Option(help="Only runs started since an ISO date or a duration ago "
                                              "(2h, 3d).")] = None,
    filter_: Annotated[list[str] | None, typer.Option("--filter", help="kind=vision.*, name!=x, "
                                                      "config.train.lr>0.01 (repeatable).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="Show the newest N runs (default 50; "
                                              "with --json every run).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every matching run (streamed).")] = False,
) -> None:
    """List the newest runs (oldest of them first) with a total count; --all or --json stream every run."""
    import json
    import time

    from poise.filters import config_paths, match_run, needs_config, parse_filters
    from poise.store import STATUSES

    if status is not None and status not in STATUSES:
        raise UserError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}", where="--status")
    if limit is not None and limit < 1:
        raise UserError(f"expected a positive number of runs (got {limit})", where="--limit")
    parsed = parse_filters(filter_ or [])
    if name is not None and "[" in name:  # a character class: SQL's LIKE has none, match it here
        parsed.append(("name", "=", name))
        name = None
    sql = {"kind": kind, "name": name, "status": status, "study": study, "since": parse_since(since)}
    store = _store()
    ui = get_ui()
    with_config, keys = needs_config(parsed), config_paths(parsed)
    every = all_ or (ui.json and limit is None)
    n = None if every else (limit or 50)

    def rows() -> Any:
        if n is None:  # stream in start order
            yield from (r for r in store.iter_runs(with_config=with_config, config_keys=keys, **sql)
                        if match_run(r, parsed))
            return
        newest = []
        for r in store.iter_runs(newest_first=True, with_config=with_config, config_keys=keys, batch=max(n, 200),
                                 **sql):
            if match_run(r, parsed):
                newest.append(r)
                if len(newest) == n:
                    break
        yield from reversed(newest)

    if ui.json:
        out = sys.stdout
        out.write("[")
        count = 0
        for r in rows():  # one JSON array, written row by row
            out.write(("," if count else "") + "\n  " + json.dumps(
                {"id": r.id, "name": r.name, "kind": r.kind, "status": r.status, "seed": r.seed, "quick": r.quick,
                 "started": r.started, "ended": r.ended, "study": r.study}))
            count += 1
        out.write("\n]\n" if count else "]\n")
        out.flush()
        return

    def cells(r: Any) -> list[str]:
        return [r.id, r.name, r.kind, r.status, str(r.seed), time.strftime("%m-%d %H:%M", time.localtime(r.started)),
                f"{r.duration:.1f}" if r.duration is not None else ""]

    headers = ["id", "name", "kind", "status", "seed", "started", "wall s"]
    shown = 0
    if n is None:  # plain aligned lines, printed as they are read
        widths = [12, 28, 24, 11, 5, 11, 8]
        line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
        ui.print(line.rstrip())
        for r in rows():
            ui.print("  ".join(c.ljust(w) for c, w in zip(cells(r), widths, strict=True)).rstrip())
            shown += 1
    else:
        t = TextTable(title=f"runs in {store.url}")
        for c in headers:
            t.add_column(c)
        for r in rows():
            t.add_row(*cells(r))
            shown += 1
        ui.print(t)
    total = shown if n is None and not parsed else None
    if total is None:
        total = store.count_runs(**sql) if not parsed else sum(
            1 for r in store.iter_runs(with_config=with_config, config_keys=keys, **sql) if match_run(r, parsed))
    more = "" if shown == total else " (the newest; --all or -n N for more)"
    ui.print(f"{shown} of {total} runs shown{more}")


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="Run ID or unique prefix.")]) -> None:
    """Show a run: config, final metrics, costs and artifacts."""
    import json

    store = _store()
    ui = get_ui()
    r = store.get_run(run_id)
    cost = store.cost(r.id)
    finals = _final_summary(store, r)
    arts = store.artifacts(r.id)
    phases = store.phase_costs(r.id)
    if ui.json:
        ui.emit({"run": r.__dict__, "metrics": finals, "cost": cost.__dict__,
                 "phases": [{**p.__dict__, "energy_kwh": p.energy_kwh} for p in phases],
                 "artifacts": [{"name": a.name, "sha256": a.sha256, "path": str(a.path), "media": a.media}
                               for a in arts]})
        return
    ui.print(Text.assemble((f"run {r.id}", "bold"), f"  {r.name}  ({r.kind})  status: {r.status}  seed: {r.seed}"
                           + (f"  parent: {r.parent_id}" if r.parent_id else "")))
    if r.error:
        ui.print(Text.assemble(("error: ", "red"), r.error.splitlines()[0]))
    ui.print(metrics_table("final metrics", finals))
    ui.print(f"cost: {cost.wall_s:.1f} s wall, {cost.cpu_s:.1f} s CPU, {cost.peak_rss_mb:.0f} MB peak, "
             f"{cost.energy_kwh:.3g} kWh, {cost.co2_g:.3g} g CO2 ({cost.country}; {cost.method})")
    if len(phases) > 1:
        ui.print(Text("phases: " + ", ".join(f"{p.phase} {p.wall_s:.1f} s {p.energy_kwh * 3.6e6:.3g} J"
                                             for p in phases) + f" ({phases[0].label}: {phases[0].method})"))
    for a in arts:
        ui.print(f"artifact {a.name}: {a.media} sha256:{a.sha256[:16]}…")
    ui.print("config: " + json.dumps(r.config, sort_keys=True))


@runs_app.command("resume")
def runs_resume(
    run_id: Annotated[str, typer.Argument(help="Run ID or unique prefix.")], device: DeviceOpt = None
) -> None:
    """Continue a killed or failed run from its last checkpoint."""
    from poise.runner import Runner

    store = _store()
    ui = get_ui()
    _print_result(store, Runner(store, ui, device=device).resume(run_id))


@runs_app.command("rm")
def runs_rm(
    run_ids: Annotated[list[str], typer.Argument(help="Run IDs or unique prefixes.")],
    force: Annotated[bool, typer.Option("--force", help="Stop a run that is still running (SIGTERM, on this host) "
                                        "before deleting it.")] = False,
) -> None:
    """Delete runs with their metrics, costs, checkpoints and unshared artifacts (never a live run)."""
    import socket
    import time

    from poise.runner import is_alive

    store = _store()
    records = [store.get_run(rid) for rid in run_ids]
    for rec in records:  # check them all before deleting any
        if is_alive(rec) and not force:
            raise UserError(f"run {rec.id} is running (pid {rec.pid} on {rec.host}); stop it first, or use --force",
                            where="runs rm")
        if is_alive(rec) and rec.host != socket.gethostname():
            raise UserError(f"run {rec.id} is running on another host ({rec.host}); stop it there first",
                            where="runs rm")
    for rec in records:
        if is_alive(rec):
            os.kill(rec.pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while is_alive(store.get_run(rec.id)) and time.monotonic() < deadline:
                time.sleep(0.2)
            if is_alive(store.get_run(rec.id)):
                raise UserError(f"run {rec.id} (pid {rec.pid}) did not stop within 60 s; not deleted", where="runs rm")
            get_ui().info(f"stopped run {rec.id}")
        store.delete_run(rec.id)
        get_ui().info(f"deleted run {rec.id}")


# --------------------------------------------------------------------------- frontier / report


@app.command()
def frontier(
    x: Annotated[str, typer.Option("--x", help="First objective, AXIS.METRIC (e.g. utility.clean_acc).")],
    y: Annotated[str, typer.Option("--y", help="Second objective, AXIS.METRIC.")],
    z: Annotated[list[str] | None, typer.Option("--z", help="More objectives (repeatable).")] = None,
    filter_: Annotated[
        list[str] | None, typer.Option("--filter", help="kind=vision.*, name!=x, config.train.lr>0.01")
    ] = None,
) -> None:
    """Pareto frontier of finished runs on two or more metrics, with hypervolume and knee."""
    from poise.frontier import print_frontier

    print_frontier(_store(), [x, y, *(z or [])], filters=filter_ or [])


@app.command()
def report(
    output: Annotated[Path, typer.Option("--output", "-o", help="Report folder.")] = Path("poise-report"),
    filter_: Annotated[list[str] | None, typer.Option("--filter", help="Only runs matching (repeatable).")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind (glob).")] = None,
    study: Annotated[str | None, typer.Option(help="Only the trials of this sweep study.")] = None,
    since: Annotated[str | None, typer.Option(help="Only runs started since an ISO date or a duration ago "
                                              "(2h, 3d).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="The newest N matching runs.")] = 500,
    all_: Annotated[bool, typer.Option("--all", help="Every matching run (no --limit).")] = False,
    run_ids: Annotated[list[str] | None, typer.Option("--run", help="Also draw this run's own figures (ID or "
                                                      "prefix, repeatable).")] = None,
) -> None:
    """Write the self-contained HTML report (plus PNG copies of its plots) of the newest runs.

    Frontiers plot every run in scope; per-run figures are drawn for the runs on a front, those given
    with --run and the newest of each kind."""
    from poise.report import write_report

    if limit < 1:
        raise UserError(f"expected a positive number of runs (got {limit})", where="--limit")
    from poise.filters import parse_filters

    parse_filters(filter_ or [])  # bad input before the store is read
    when = parse_since(since)
    path = write_report(_store(), output, filters=filter_ or [], kind=kind, study=study, since=when,
                        limit=None if all_ else limit, select=run_ids or [])
    ui = get_ui()
    if ui.json:
        ui.emit({"report": str(path)})
    else:
        ui.print(f"report: {path}")


# --------------------------------------------------------------------------- carbon


GpuOpt = Annotated[str, typer.Option("--gpu", help="GPU types separated by commas (see the GPU data file).")]
CountryOpt = Annotated[str | None, typer.Option("--country", help="Grid country, ISO alpha-3 (default "
                                                "$POISE_COUNTRY or USA).")]
ThroughputOpt = Annotated[str | None, typer.Option("--throughput", help="Override achieved TFLOP/s: GPU=TFLOPS, "
                                                   "several separated by commas.")]
MfuOpt = Annotated[str | None, typer.Option("--mfu", help="Override with a fraction of peak: GPU=F, "
                                            "several separated by commas, or F for every GPU.")]


def _estimate_table(title: str, rows: list[Any]) -> TextTable:
    t = TextTable(title=title)
    for c in ("GPU", "TFLOP/s", "throughput", "power W", "hours", "energy kWh", "CO2 kg"):
        t.add_column(c, justify="left" if c in ("GPU", "throughput") else "right")
    for r in sorted(rows, key=lambda r: r.co2_kg):
        t.add_row(r.gpu, f"{r.achieved_tflops:.3g}", r.throughput_status, f"{r.power_w:.0f}", f"{r.hours:.3g}",
                  f"{r.energy_kwh:.3g}", f"{r.co2_kg:.3g}")
    return t


def _print_sources(ui: UI, rows: list[Any]) -> None:
    for r in rows:
        ui.print(Text(f"{r.gpu}: {r.throughput_source}; power {r.power_source}", style="dim"))


@carbon_app.command("estimate")
def carbon_estimate(
    flops: Annotated[float | None, typer.Option("--flops", help="Total training FLOPs.")] = None,
    params: Annotated[
        float | None, typer.Option("--params", help="Model parameters (with --tokens: 6·P·T FLOPs).")
    ] = None,
    tokens: Annotated[float | None, typer.Option("--tokens", help="Training tokens.")] = None,
    gpu: GpuOpt = "A100-SXM,H100-SXM,V100,T4,L4",
    country: CountryOpt = None,
    intensity: Annotated[float | None, typer.Option("--intensity", help="Grid intensity, g CO2/kWh.")] = None,
    pue: Annotated[float, typer.Option("--pue", help="Data-centre power usage effectiveness.")] = 1.2,
    workload: Annotated[str | None, typer.Option("--workload", help="Measured workload class of the GPU "
                                                 "data file (default: the one nearest to --params, else the largest "
                                                 "transformer).")] = None,
    throughput: ThroughputOpt = None,
    mfu: MfuOpt = None,
    power_fraction: Annotated[float, typer.Option("--power-fraction", help="Average draw as a share of rated "
                                                  "power.")] = 1.0,
    precision: Annotated[str, typer.Option("--precision", help="fp32, tf32, bf16, fp16 or fp8.")] = "fp16",
    n_gpus: Annotated[int, typer.Option("--n-gpus", help="GPUs in the job.")] = 1,
    calibrate: Annotated[str | None, typer.Option("--calibrate", help="Run ID measured on a GPU: its FLOPs, time "
                                                  "and energy replace that GPU's figures.")] = None,
) -> None:
    """Time, energy and CO2 of a planned job on each GPU type, from measured throughput (sources listed)."""
    from poise.carbon import grid_intensity
    from poise.projection import (
        calibrate_from_run,
        estimate,
        overrides_from_options,
        training_flops,
        workload_for_params,
    )

    ui = get_ui()
    for option, value in (("--flops", flops), ("--params", params), ("--tokens", tokens), ("--intensity", intensity),
                          ("--pue", pue), ("--power-fraction", power_fraction)):
        if value is not None and not math.isfinite(value):
            raise UserError(f"expected a finite number (got {value})", where=option)
    if not 1.0 <= pue <= 10.0:
        raise UserError(f"expected a PUE between 1 and 10 (got {pue:g})", where="--pue")
    if flops is not None and flops <= 0:
        raise UserError(f"expected --flops > 0 (got {flops:g})", where="--flops")
    if flops is None:
        if params is None or tokens is None:
            raise UserError("expected --flops F, or --params P with --tokens T", where="carbon estimate")
        if not (params > 0 and tokens > 0) or not all(map(math.isfinite, (params, tokens))):
            raise UserError("expected --params and --tokens > 0 and finite", where="carbon estimate")
        flops = training_flops(params, tokens)
    if intensity is not None and not (math.isfinite(intensity) and intensity >= 0):
        raise UserError(f"expected --intensity >= 0 and finite (got {intensity})", where="carbon estimate")
    overrides = overrides_from_options(throughput, mfu)
    if calibrate:
        key, measured = calibrate_from_run(_store(), calibrate)
        overrides.setdefault(key, measured)
    grid = intensity if intensity is not None else grid_intensity(country or os.environ.get("POISE_COUNTRY", "USA"))
    wl = workload or (workload_for_params(params) if params else "transformer-large")
    rows = estimate(flops, [g.strip() for g in gpu.split(",") if g.strip()], precision=precision, workload=wl,
                    pue=pue, intensity=grid, power_fraction=power_fraction, n_gpus=n_gpus, overrides=overrides)
    if ui.json:
        ui.emit({"flops": flops, "intensity_g_per_kwh": grid, "pue": pue, "precision": precision, "workload": wl,
                 "estimates": [r.__dict__ for r in rows]})
        return
    ui.print(_estimate_table(f"{flops:.3g} FLOPs, {precision}, workload {wl}, PUE {pue}, {grid:.0f} g CO2/kWh", rows))
    _print_sources(ui, rows)


@carbon_app.command("compare")
def carbon_compare(
    recipe: Annotated[Path | None, typer.Argument(help="Recipe whose finished run to use (trained first if the "
                                                  "store has none).")] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="A finished run (ID or prefix) instead of a "
                                               "recipe.")] = None,
    gpu: GpuOpt = "A100,H100,V100,T4,L4,RTX3090",
    country: Annotated[str | None, typer.Option("--country", help="Grid countries, ISO alpha-3, separated by "
                                                "commas (default $POISE_COUNTRY or USA).")] = None,
    pue: Annotated[float, typer.Option("--pue", help="Data-centre power usage effectiveness.")] = 1.2,
    precision: Annotated[str, typer.Option("--precision", help="fp32, tf32, bf16, fp16 or fp8.")] = "fp16",
    workload: Annotated[str | None, typer.Option("--workload", help="Measured workload class (default: from the "
                                                 "run's domain and size).")] = None,
    throughput: ThroughputOpt = None,
    mfu: MfuOpt = None,
    set_: SetOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="Apply the recipe's [quick] overrides.")] = False,
) -> None:
    """Time, energy and CO2 of a measured run's job on each GPU and grid, each with its assumptions."""
    from poise.projection import compare, overrides_from_options

    ui = get_ui()
    if (recipe is None) == (run_id is None):
        raise UserError("expected a RECIPE or --run ID (one of them)", where="carbon compare")
    countries = [c.strip() for c in (country or os.environ.get("POISE_COUNTRY", "USA")).split(",") if c.strip()]
    from poise.carbon import grid_intensity

    for c in countries:  # bad input before any training
        grid_intensity(c)
    overrides = overrides_from_options(throughput, mfu)
    store = _store()
    if run_id is None:
        from poise.recipes import load_recipe, parse_set_options
        from poise.runner import Runner

        cfg = load_recipe(recipe, parse_set_options(set_ or []), quick=quick)  # type: ignore[arg-type]
        found = store.find_done(cfg.config_hash())
        run_id = found.id if found is not None else Runner(store, ui).run(cfg).id
    measured, rows = compare(store, run_id, [g.strip() for g in gpu.split(",") if g.strip()], countries,
                             precision=precision, pue=pue, workload=workload, overrides=overrides)
    if ui.json:
        ui.emit({"measured": measured.__dict__, "precision": precision, "pue": pue,
                 "rows": [{"country": c, **e.__dict__} for c, e in rows]})
        return
    ui.print(Text(f"run {measured.run_id} ({measured.kind}) measured on {measured.device}: {measured.wall_s:.3g} s, "
                  f"{measured.energy_kwh * 3.6e6:.3g} J, {measured.co2_g:.3g} g CO2 ({measured.country}, PUE "
                  f"{measured.pue:g}); {measured.flops:.3g} FLOPs"))
    t = TextTable(title=f"the same job on other GPUs ({precision}, PUE {pue:g})")
    for c in ("GPU", "grid", "g CO2/kWh", "TFLOP/s", "throughput", "power W", "seconds", "energy J", "CO2 g"):
        t.add_column(c, justify="left" if c in ("GPU", "grid", "throughput") else "right")
    for c, e in sorted(rows, key=lambda r: (r[0], r[1].co2_kg)):
        t.add_row(e.gpu, c, f"{e.intensity:.0f}", f"{e.achieved_tflops:.3g}", e.throughput_status, f"{e.power_w:.0f}",
                  f"{e.hours * 3600:.3g}", f"{e.energy_kwh * 3.6e6:.3g}", f"{e.co2_kg * 1000:.3g}")
    ui.print(t)
    ui.print(Text(f"{rows[0][1].assumptions[0]}; PUE {pue:g}; grids: "
                  + ", ".join(f"{c} {e.intensity:.0f} g CO2/kWh" for c, e in rows if e.gpu == rows[0][1].gpu),
                  style="dim"))
    for _c, e in rows[: len(rows) // len(countries)]:
        ui.print(Text(f"{e.gpu}: {e.assumptions[1]}; power {e.power_source}", style="dim"))


# --------------------------------------------------------------------------- commands the domains add

for _spec in domain_commands().values():
    if isinstance(_spec.target, typer.Typer):
        app.add_typer(_spec.target, name=_spec.name, **_spec.options)
    else:
        app.command(_spec.name, **_spec.options)(_spec.target)


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one line on bad input (exit 2), tracebacks only with --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    SESSION.argv = args
    if not debug:  # a third-party import's deprecation notice, not the user's concern (shown with --debug)
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    command = typer.main.get_command(app)
    previous = _on_sigterm_raise()
    try:
        rv = command.main(args=args, prog_name="poise", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        if code == 130:  # typer turns Ctrl-C outside a run into a silent exit code
            print("poise: interrupted", file=sys.stderr)
    except RunInterrupted as e:
        print(f"poise: {e.message}", file=sys.stderr)
        code = e.exit_code
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"poise: error: {e.line()}", file=sys.stderr)
        code = e.exit_code
    except _cx.NoArgsIsHelpError:
        code = 0  # the help was shown
    except typer.Exit as e:
        code = e.exit_code
    except _cx.ClickException as e:
        if debug:
            traceback.print_exc()
        print(f"poise: error: {' '.join(e.format_message().split())}", file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, typer.Abort):
        print("poise: interrupted", file=sys.stderr)
        code = 130
    except OSError as e:  # the machine, not poise: a full disk, a folder we may not write
        if debug:
            traceback.print_exc()
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        if e.errno == errno.ENOSPC:
            print(f"poise: error: no space left on the device{where}; free some space and retry (an interrupted "
                  "run continues with poise runs resume ID)", file=sys.stderr)
            code = 1
        elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            print(f"poise: error: {e.strerror}{where}; expected a path poise may write", file=sys.stderr)
            code = 2
        else:
            print(f"poise: error: {type(e).__name__}: {e.strerror or e}{where}", file=sys.stderr)
            code = 1
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line unless --debug
        if debug:
            traceback.print_exc()
        msg = " ".join(str(e).split())[:300]
        print(f"poise: internal error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)",
              file=sys.stderr)
        code = 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        sys.stdout.flush()
    return code


def _on_sigterm_raise() -> Any:
    """SIGTERM ends a run the way Ctrl-C does (marked interrupted, resumable); returns the old handler."""

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        return None
