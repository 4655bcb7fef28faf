"""Pareto frontiers over runs: non-dominated set, hypervolume (moocore) and knee point.

Objectives are metrics named ``axis.metric`` with the direction they were logged with. Conventions:

* the frontier keeps *weakly* non-dominated points (ties stay together on the front);
* hypervolume is in the metrics' own units, against a reference point that defaults to the worst
  observed value of each objective (so it measures how far the front improves on the worst run);
* the knee is the front point nearest the ideal point after min-max normalising each objective over
  the front (so no objective dominates through its scale).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import moocore
import numpy as np

from poise.errors import UserError
from poise.filters import config_paths, match_run, parse_filters
from poise.store import RunRecord, Store
from poise.ui import TextTable, get_ui

_FRONTIER_PAIRS: list[tuple[str, str]] = []


def register_frontier(x: str, y: str) -> None:
    """Declare a headline pair of objectives that reports and the tour show (domains call this)."""
    if (x, y) not in _FRONTIER_PAIRS:
        _FRONTIER_PAIRS.append((x, y))


def frontier_pairs(domains: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The registered headline pairs, after loading every domain (or only ``domains``)."""
    from poise.registry import load_domains

    load_domains(domains)
    return list(_FRONTIER_PAIRS)


def pareto_mask(points: np.ndarray, maximise: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the weakly non-dominated rows of ``points``."""
    points = np.asarray(points, dtype=float)
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(moocore.is_nondominated(points, maximise=list(maximise), keep_weakly=True), dtype=bool)


def dominates(a: np.ndarray, b: np.ndarray, maximise: Sequence[bool]) -> bool:
    """True when ``a`` is at least as good as ``b`` everywhere and strictly better somewhere."""
    sign = np.where(np.asarray(maximise), 1.0, -1.0)
    a, b = np.asarray(a) * sign, np.asarray(b) * sign
    return bool(np.all(a >= b) and np.any(a > b))


def hypervolume(points: np.ndarray, maximise: Sequence[bool], ref: Sequence[float] | None = None) -> float:
    points = np.asarray(points, dtype=float)
    if len(points) == 0:
        return 0.0
    if ref is None:
        ref = np.where(np.asarray(maximise), points.min(axis=0), points.max(axis=0))
    return float(moocore.hypervolume(points, ref=np.asarray(ref, dtype=float), maximise=list(maximise)))


def knee_index(points: np.ndarray, maximise: Sequence[bool]) -> int:
    """Index (into ``points``) of the point nearest the ideal after min-max normalisation."""
    points = np.asarray(points, dtype=float)
    sign = np.where(np.asarray(maximise), 1.0, -1.0)
    p = points * sign
    lo, hi = p.min(axis=0), p.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    norm = (p - lo) / span  # 1 is best in every column
    return int(np.argmin(np.linalg.norm(1.0 - norm, axis=1)))


@dataclass
class Frontier:
    objectives: list[str]
    maximise: list[bool]
    runs: list[RunRecord]
    values: np.ndarray
    on_front: np.ndarray
    hypervolume: float
    knee: int | None  # index into runs

    def as_dict(self) -> dict[str, object]:
        return {
            "objectives": [{"name": o, "direction": "max" if m else "min"} for o, m in
                           zip(self.objectives, self.maximise, strict=True)],
            "hypervolume": self.hypervolume,
            "runs": [
                {"id": r.id, "name": r.name, "kind": r.kind,
                 "values": dict(zip(self.objectives, map(float, v), strict=True)),
                 "on_front": bool(f), "knee": i == self.knee}
                for i, (r, v, f) in enumerate(zip(self.runs, self.values, self.on_front, strict=True))
            ],
        }


def build_frontier(store: Store, objectives: Sequence[str], *, filters: Sequence[str] = (),
                   runs: Sequence[RunRecord] | None = None, ref: Sequence[float] | None = None) -> Frontier:
    """Frontier of the finished runs that have every objective (``axis.metric``)."""
    if len(objectives) < 2:
        raise UserError("expected at least two objectives", where="frontier")
    for o in objectives:
        if "." not in o:
            raise UserError(f"expected AXIS.METRIC such as utility.clean_acc (got {o!r})", where="frontier")
    parsed = parse_filters(filters)
    if not any(key == "config.eval_split" for key, _, _ in parsed):  # tuning runs scored val, not test
        parsed.append(("config.eval_split", "!=", "val"))
    if runs is None:  # only the objectives' final values, then only the runs that have them all
        finals = store.final_metrics(names=objectives)
        ids = [rid for rid, m in finals.items() if all(o in m for o in objectives)]
        keys = config_paths(parsed)
        pool: list = [r for r in store.runs_by_id(ids, status="done", with_config=bool(keys), config_keys=keys)
                      if match_run(r, parsed)]
    else:
        pool = [r for r in runs if match_run(r, parsed)]
        finals = store.final_metrics([r.id for r in pool], names=objectives)
    kept, rows, directions = [], [], {}
    for r in pool:
        m = finals.get(r.id, {})
        if all(o in m for o in objectives):
            kept.append(r)
            rows.append([m[o].value for o in objectives])
            for o in objectives:
                directions[o] = m[o].direction
    if not kept:
        known = store.metric_keys()
        raise UserError(f"no finished run has all of {', '.join(objectives)}; metrics present: "
                        f"{', '.join(known[:30]) or 'none'}", where="frontier")
    maximise = [directions[o] == "max" for o in objectives]
    values = np.asarray(rows, dtype=float)
    mask = pareto_mask(values, maximise)
    front_idx = np.flatnonzero(mask)
    knee = int(front_idx[knee_index(values[mask], maximise)]) if len(front_idx) else None
    return Frontier(list(objectives), maximise, kept, values, mask,
                    hypervolume(values[mask], maximise, ref if ref is not None else
                                np.where(np.asarray(maximise), values.min(axis=0), values.max(axis=0))), knee)


FRONTIER_ROWS = 40  # rows of the terminal table beyond which only the front is listed


def print_frontier(store: Store, objectives: list[str], *, filters: Sequence[str] = (),
                   runs: list[RunRecord] | None = None) -> None:
    ui = get_ui()
    fr = build_frontier(store, objectives, filters=filters, runs=runs)
    if ui.json:
        ui.emit(fr.as_dict())
        return
    order = sorted(range(len(fr.runs)), key=lambda i: (not fr.on_front[i], -fr.values[i, 0] if fr.maximise[0]
                                                       else fr.values[i, 0]))
    t = TextTable(title=f"frontier {' × '.join(objectives)} — hypervolume {fr.hypervolume:.4g}")
    t.add_column("run")
    t.add_column("name")
    t.add_column("kind")
    for o, m in zip(fr.objectives, fr.maximise, strict=True):
        t.add_column(f"{o} {'↑' if m else '↓'}", justify="right")
    t.add_column("front")
    shown = order[:max(FRONTIER_ROWS, int(fr.on_front.sum()))]  # the front always, then the best of the rest
    for i in shown:
        r = fr.runs[i]
        mark = ("★ knee" if i == fr.knee else "●") if fr.on_front[i] else ""
        t.add_row(r.id, r.name, r.kind, *[f"{v:.4g}" for v in fr.values[i]], mark)
    ui.print(t)
    if len(order) > len(shown):
        ui.print(f"{len(fr.runs)} runs, {int(fr.on_front.sum())} on the front; {len(order) - len(shown)} more behind "
                 "it not shown (--json lists every run)")
