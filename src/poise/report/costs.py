"""The report's cost sections: time and energy per phase of each run, and the cost of robustness.

**Cost of robustness.** For every point on a frontier whose second objective is a robustness or
safety metric, the table gives the run's energy and CO2 and the grams of CO2 it spent per point of
that metric gained over the *non-robust baseline of its domain*. The baseline rule:

* the baseline is the newest finished run of the domain's baseline kind (:data:`BASELINES`) whose
  config matches the point's at the listed paths (e.g. the same data), with the same quick flag,
  preferring the same seed — vision: ``vision.erm`` with the same ``data``; restoration:
  ``restoration.sr`` trained on clean inputs only (``mix.high = 0``) with the same ``data``;
  control: the nominal ``control.agent`` on the same ``data.env``; language: the base chat model
  (``language.base``) with the same ``data.world``;
* gain = the point's value minus the baseline's for a metric to maximise (robust accuracy), the
  baseline's minus the point's for one to minimise (harmful compliance: harm reduction); values in
  [0, 1] count in percentage points, others in the metric's own unit;
* g CO2 per point = the run's own CO2 / gain (only where gain > 0). The run's own cost leaves out
  runs it depends on (teachers, base models), which the run table lists with theirs; the extra CO2
  over the baseline's own run is shown beside it.

Domains may replace their rule with :func:`register_baseline`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go

from poise.errors import UserError
from poise.filters import _config_value
from poise.frontier import build_frontier, frontier_pairs
from poise.phases import OTHER
from poise.report.blocks import Block, focus, report_section
from poise.report.figures import PALETTE, esc, png_bytes


@dataclass(frozen=True)
class Baseline:
    """The non-robust baseline kind of a domain and the config paths a baseline run must share."""

    kind: str
    match: tuple[str, ...] = ()
    where: dict[str, Any] = field(default_factory=dict)


BASELINES: dict[str, Baseline] = {
    "vision": Baseline("vision.erm", ("data",)),
    "restoration": Baseline("restoration.sr", ("data",), {"mix.high": 0.0}),
    "control": Baseline("control.agent", ("data.env",)),
    "language": Baseline("language.base", ("data.world",)),
}


def register_baseline(domain: str, baseline: Baseline) -> None:
    """Set the non-robust baseline of ``domain`` for the cost-of-robustness table."""
    BASELINES[domain] = baseline


def find_baseline(store: Any, run: Any) -> Any | None:
    """The baseline run of ``run`` by the rule in the module docstring, or None."""
    rule = BASELINES.get(run.kind.split(".")[0])
    if rule is None:
        return None
    if run.kind == rule.kind and all(_config_value(run.config, k) == v for k, v in rule.where.items()):
        return run
    found = []
    for cand in store.list_runs(kind=rule.kind, status="done"):
        if cand.quick != run.quick:
            continue
        if any(_config_value(cand.config, k) != v for k, v in rule.where.items()):
            continue
        if any(_config_value(cand.config, p) != _config_value(run.config, p) for p in rule.match):
            continue
        found.append(cand)
    if not found:
        return None
    same_seed = [c for c in found if c.seed == run.seed]
    return max(same_seed or found, key=lambda c: c.ended or 0.0)


@dataclass
class RobustnessCost:
    frontier: str
    run: Any
    metric: str
    value: float
    baseline: Any | None
    baseline_value: float | None
    gain: float | None
    unit: str
    energy_kwh: float
    co2_g: float
    baseline_co2_g: float | None

    @property
    def g_per_point(self) -> float | None:
        return self.co2_g / self.gain if self.gain is not None and self.gain > 0 else None


def robustness_costs(store: Any, runs: list[Any]) -> list[RobustnessCost]:
    """One row per (frontier, point on its front) for frontiers of utility against robustness or safety."""
    done = [r for r in runs if r.status == "done"]
    out: list[RobustnessCost] = []
    for x, y in frontier_pairs(sorted({r.kind.split(".", 1)[0] for r in done})):
        if y.split(".")[0] not in ("robustness", "safety"):
            continue
        try:
            fr = build_frontier(store, [x, y], runs=done)
        except UserError:
            continue
        maximise = fr.maximise[1]
        for i, r in enumerate(fr.runs):
            if not fr.on_front[i]:
                continue
            value = float(fr.values[i, 1])
            base = find_baseline(store, r)
            base_value = None
            if base is not None:
                m = store.final_metrics([base.id]).get(base.id, {})
                base_value = m[y].value if y in m else None
            gain, unit = None, "unit"
            if base_value is not None:
                diff = value - base_value if maximise else base_value - value
                rate = 0.0 <= value <= 1.0 and 0.0 <= base_value <= 1.0
                gain, unit = (100 * diff, "pt") if rate else (diff, "unit")
            cost = store.cost(r.id)
            base_co2 = store.cost(base.id).co2_g if base is not None else None
            out.append(RobustnessCost(f"{x} vs {y}", r, y, value, base, base_value, gain, unit, cost.energy_kwh,
                                      cost.co2_g, base_co2))
    return out


def _fmt(v: float | None, spec: str = ".4g") -> str:
    return "" if v is None else format(v, spec)


@report_section("cost.robustness", "Cost of robustness")
def robustness_section(store: Any, runs: list[Any]) -> list[Block]:
    rows = robustness_costs(store, runs)
    if not rows:
        return []
    table = [[r.frontier, f"{r.run.name} [{r.run.id[:6]}]", r.run.kind, r.metric.split(".", 1)[1], r.value,
              f"{r.baseline.name} [{r.baseline.id[:6]}]" if r.baseline is not None else "none found",
              r.baseline_value, _fmt(r.gain, ".3g") + (f" {r.unit}" if r.gain is not None else ""), r.energy_kwh,
              r.co2_g, None if r.baseline_co2_g is None else r.co2_g - r.baseline_co2_g,
              _fmt(r.g_per_point, ".3g")] for r in rows]
    headers = ["frontier", "run", "kind", "metric", "value", "baseline", "baseline value", "gain", "energy kWh",
               "CO2 g", "extra CO2 g", "g CO2 / point"]
    note = ("Points on each utility-vs-robustness/safety front. Gain over the domain's non-robust baseline "
            "(vision: ERM on the same data; restoration: SR trained on clean inputs; control: the nominal agent; "
            "language: the base model); g CO2 / point = the run's own CO2 / gain (pt = percentage points).")
    return [Block("grams of CO2 per point of robustness", table=(headers, table), note=note)]


# --------------------------------------------------------------------------- phases


def phase_figure(labels: list[str], phases: list[list[Any]]) -> go.Figure:
    """Stacked bars: per run, time or energy per phase (a button switches between them)."""
    names = sorted({p.phase for rows in phases for p in rows if p.phase != OTHER}) + [OTHER]
    fig = go.Figure()
    for field_i, attr in enumerate(("wall_s", "energy_j")):
        for j, name in enumerate(names):
            ys = []
            for rows in phases:
                row = next((p for p in rows if p.phase == name), None)
                ys.append(0.0 if row is None else (row.wall_s if attr == "wall_s" else row.energy_kwh * 3.6e6))
            fig.add_trace(go.Bar(x=[esc(label) for label in labels], y=ys, name=esc(name),
                                 marker_color="#bbbbbb" if name == OTHER else PALETTE[j % len(PALETTE)],
                                 visible=field_i == 0, legendgroup=esc(name),
                                 hovertemplate="%{x}: %{y:.4g}<extra>" + esc(name) + "</extra>"))
    n = len(names)
    buttons = [{"label": title, "method": "update",
                "args": [{"visible": [k // n == i for k in range(2 * n)]}, {"yaxis": {"title": title}}]}
               for i, title in enumerate(("wall time (s)", "energy (J)"))]
    fig.update_layout(barmode="stack", template="plotly_white", height=380, yaxis_title="wall time (s)",
                      margin={"l": 60, "r": 20, "t": 50, "b": 120}, xaxis_tickangle=-40,
                      updatemenus=[{"buttons": buttons, "direction": "right", "x": 0, "y": 1.18, "xanchor": "left"}])
    return fig


def phase_png(labels: list[str], phases: list[list[Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({p.phase for rows in phases for p in rows if p.phase != OTHER}) + [OTHER]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), dpi=100)
    for ax, (attr, title) in zip(axes, (("wall_s", "wall time (s)"), ("energy", "energy (J)")), strict=True):
        bottom = [0.0] * len(labels)
        for j, name in enumerate(names):
            ys = []
            for rows in phases:
                row = next((p for p in rows if p.phase == name), None)
                ys.append(0.0 if row is None else (row.wall_s if attr == "wall_s" else row.energy_kwh * 3.6e6))
            ax.bar(range(len(labels)), ys, bottom=bottom, label=name,
                   color="#bbbbbb" if name == OTHER else PALETTE[j % len(PALETTE)])
            bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=6)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


@report_section("cost.phases", "Time and energy per phase")
def phases_section(store: Any, runs: list[Any]) -> list[Block]:
    """A stacked bar per run that split its time into phases (``ctx.phase``), with the labels of its energy."""
    shown, labels, phases = [], [], []
    for r in (runs if len(runs) <= 40 else focus(runs)):  # one bar per run: the runs in focus
        rows = store.phase_costs(r.id)
        if any(p.phase != OTHER for p in rows):
            shown.append(r)
            labels.append(f"{r.name} [{r.id[:6]}]")
            phases.append(rows)
    if not shown:
        return []
    methods = sorted({f"{p.label}: {p.method}" for rows in phases for p in rows})
    note = ("Energy per phase is each run's measured total split by share: CPU energy by the phase's CPU time, "
            "RAM and GPU energy by its wall time. " + " | ".join(methods))
    table = [[label, p.phase, p.wall_s, p.cpu_s, p.energy_kwh * 3.6e6, p.co2_g, p.label]
             for label, rows in zip(labels, phases, strict=True) for p in rows]
    return [Block("phases per run", figure=phase_figure(labels, phases), png=phase_png(labels, phases), note=note),
            Block("phases per run (table)", table=(["run", "phase", "wall s", "CPU s", "energy J", "CO2 g", "label"],
                                                   table))]
