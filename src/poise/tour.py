"""``poise tour``: every shipped recipe (small with ``--quick``), then frontier tables and the report.

Recipes whose finished run is already in the store with the same resolved config are reused, so a
second tour only reports; shared artifacts (teachers, base models) are trained once because
dependencies are looked up by config hash.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text

from poise.errors import UserError
from poise.frontier import frontier_pairs, print_frontier
from poise.recipes import load_recipe, shipped_recipes, shipped_recipes_root
from poise.runner import Runner
from poise.store import RunRecord, Store
from poise.ui import TextTable, get_ui


@dataclass
class TourItem:
    recipe: str
    kind: str
    status: str  # ran, reused, skipped, failed
    seconds: float
    run: RunRecord | None = None
    note: str = ""


def _same_config(run: RunRecord, resolved: dict) -> bool:
    strip = lambda d: {k: v for k, v in d.items() if k not in ("store", "quick_note")}  # noqa: E731
    return strip(run.config) == strip(resolved)


def run_tour(store: Store, *, quick: bool, output: Path, only: Sequence[str] = (), fresh: bool = False,
             device: str | None = None) -> list[TourItem]:
    ui = get_ui()
    root = shipped_recipes_root()
    paths = [p for p in shipped_recipes()
             if not only or any(fnmatch.fnmatch(str(p.relative_to(root)), pat) for pat in only)]
    if not paths:
        raise UserError(f"no shipped recipe matches {list(only)}", where="--only")
    runner = Runner(store, ui, device=device)
    items: list[TourItem] = []
    t_start = time.perf_counter()
    for p in paths:
        rel = str(p.relative_to(root))
        cfg = load_recipe(p, quick=quick)
        if not cfg.tour:
            items.append(TourItem(rel, cfg.kind, "skipped", 0.0, note="tour = false"))
            continue
        if not fresh:
            found = store.find_done(cfg.config_hash())
            if found is not None and _same_config(found, cfg.resolved()):
                items.append(TourItem(rel, cfg.kind, "reused", 0.0, found, note=cfg.quick_note if quick else ""))
                continue
        ui.info(Text.assemble(("tour", "bold"), f": {rel}"))
        t0 = time.perf_counter()
        try:
            rec = runner.run(cfg)
            items.append(TourItem(rel, cfg.kind, "ran", time.perf_counter() - t0, rec,
                                  note=cfg.quick_note if quick else ""))
        except UserError as e:
            items.append(TourItem(rel, cfg.kind, "failed", time.perf_counter() - t0, note=e.line()))
        except Exception as e:  # noqa: BLE001 - one broken recipe must not hide the others
            items.append(TourItem(rel, cfg.kind, "failed", time.perf_counter() - t0, note=f"{type(e).__name__}: {e}"))
    total = time.perf_counter() - t_start

    tour_runs = [i.run for i in items if i.run is not None and i.run.status == "done"]
    from poise.report import write_report

    # the report shows the tour's runs and the runs they were built on (teachers, base models)
    report_path = write_report(store, output, runs=_with_dependencies(store, tour_runs), title="poise tour")

    if ui.json:
        ui.emit({"seconds": total, "report": str(report_path),
                 "recipes": [{"recipe": i.recipe, "kind": i.kind, "status": i.status, "seconds": i.seconds,
                              "run": i.run.id if i.run else None, "note": i.note} for i in items]})
    else:
        t = TextTable(title=f"tour{' --quick' if quick else ''}: {len(items)} recipes in {total:.1f} s",
                  title_justify="left")
        for c in ("recipe", "kind", "run", "status", "seconds", "note"):
            t.add_column(c, justify="right" if c == "seconds" else "left", overflow="fold")
        skipped = [i for i in items if i.status == "skipped"]
        for i in items:
            if i.status == "skipped":
                continue
            color = {"failed": "red", "skipped": "dim", "reused": "cyan"}.get(i.status, "green")
            t.add_row(i.recipe, i.kind, i.run.id if i.run else "", Text(i.status, style=color),
                      f"{i.seconds:.1f}", i.note)
        ui.print(t)
        if skipped:
            ui.print(Text(f"{len(skipped)} recipe(s) not in the tour (tour = false: local data, a GPU or a long run"
                          f"): {', '.join(i.recipe for i in skipped)}", style="dim"))
        for x, y in frontier_pairs():
            try:
                print_frontier(store, [x, y], runs=tour_runs)
            except UserError:
                continue
        ui.print(f"report: {report_path}")
    failed = [i for i in items if i.status == "failed"]
    if failed:
        raise UserError(f"{len(failed)} recipe(s) failed: {', '.join(i.recipe for i in failed)}", where="tour")
    return items


def _with_dependencies(store: Store, runs: list[RunRecord]) -> list[RunRecord]:
    """The runs plus the runs they were trained from (children whose parent is in the set)."""
    ids = {r.id for r in runs}
    extra = [r for r in store.list_runs(status="done") if r.id not in ids and r.parent_id in ids]
    return runs + extra


