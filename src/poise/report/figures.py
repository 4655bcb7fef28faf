"""Figures of the report: frontier scatter plots and cost bars, as plotly figures and matplotlib PNGs."""

from __future__ import annotations

import html
import io
from collections import defaultdict
from typing import Any

import numpy as np
import plotly.graph_objects as go

from poise.frontier import Frontier

MAX_CURVE_POINTS = 2000  # a training curve is thinned to about this many points for plotting
MAX_HOVER_POINTS = 2000  # beyond this many points a frontier's hover text is short (name, ID, values)
MAX_SVG_POINTS = 2000  # beyond this many points a frontier's markers are drawn with WebGL (scattergl), not SVG

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f"]


def esc(text: Any) -> str:
    """Escape for HTML and for plotly's pseudo-HTML text (which decodes entities when drawing)."""
    return html.escape(str(text), quote=True)


def run_hover(run: Any, values: dict[str, float]) -> str:
    cfg = run.config
    train = cfg.get("train", {})
    budget = {k: v for k, v in train.get("budget", {}).items() if v is not None and k != "calibration_steps"}
    lines = [f"<b>{esc(run.name)}</b> [{esc(run.id)}]", f"kind: {esc(run.kind)}", f"seed: {esc(run.seed)}"]
    if train:
        lines.append(f"lr: {esc(train.get('lr'))}, schedule: {esc(train.get('schedule', {}).get('name'))}, "
                     f"budget: {esc(budget)}")
    lines += [f"{esc(k)}: {v:.4g}" for k, v in values.items()]
    return "<br>".join(lines)


def kind_colors(kinds: list[str]) -> dict[str, str]:
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(sorted(set(kinds)))}


def frontier_figure(fr: Frontier) -> go.Figure:
    """One marker per run, coloured by kind; the front as a line; the knee as a ring."""
    x_name, y_name = fr.objectives[:2]
    colors = kind_colors([r.kind for r in fr.runs])
    fig = go.Figure()
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(fr.runs):
        by_kind[r.kind].append(i)
    many = len(fr.runs) > MAX_HOVER_POINTS  # a short hover (name and ID; x and y from the data) keeps it small
    # thousands of SVG markers take seconds to draw; WebGL draws them at once
    trace = go.Scattergl if len(fr.runs) > MAX_SVG_POINTS else go.Scatter
    for kind, idx in sorted(by_kind.items()):
        hover = ([f"{esc(fr.runs[i].name)} [{esc(fr.runs[i].id)}]" for i in idx] if many else
                 [run_hover(fr.runs[i], dict(zip(fr.objectives, fr.values[i], strict=True))) for i in idx])
        fig.add_trace(trace(
            x=fr.values[idx, 0], y=fr.values[idx, 1], mode="markers", name=esc(kind),
            marker={"size": 11 if not many else 7, "color": colors[kind], "line": {"width": 1, "color": "#222"},
                    "symbol": [2 if fr.on_front[i] else 0 for i in idx]},  # diamond on the front, else circle
            hovertext=hover, meta="runs",
            **({"hovertemplate": f"%{{hovertext}}<br>{esc(x_name)}: %{{x:.4g}}<br>{esc(y_name)}: %{{y:.4g}}"
                                 "<extra></extra>"} if many else {"hoverinfo": "text"}),
        ))
    front = np.flatnonzero(fr.on_front)
    if len(front) > 1:
        order = front[np.argsort(fr.values[front, 0])]
        fig.add_trace(go.Scatter(x=fr.values[order, 0], y=fr.values[order, 1], mode="lines", name="Pareto front",
                                 line={"color": "#444", "dash": "dot"}, hoverinfo="skip"))
    if fr.knee is not None:
        fig.add_annotation(x=fr.values[fr.knee, 0], y=fr.values[fr.knee, 1], text="knee", showarrow=True,
                           arrowhead=2, ax=30, ay=-30, font={"size": 11})
    fig.update_layout(
        template="plotly_white", height=420, margin={"l": 60, "r": 20, "t": 40, "b": 50},
        xaxis_title=f"{esc(x_name)} ({'higher' if fr.maximise[0] else 'lower'} is better)",
        yaxis_title=f"{esc(y_name)} ({'higher' if fr.maximise[1] else 'lower'} is better)",
        title={"text": f"hypervolume {fr.hypervolume:.4g}", "font": {"size": 13}},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def png_bytes(fig: Any, dpi: int | None = None) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed (reports make many)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def frontier_png(fr: Frontier) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = kind_colors([r.kind for r in fr.runs])
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for kind in sorted(colors):
        idx = [i for i, r in enumerate(fr.runs) if r.kind == kind]
        ax.scatter(fr.values[idx, 0], fr.values[idx, 1], c=colors[kind], label=kind, edgecolors="#222", s=45)
    front = np.flatnonzero(fr.on_front)
    if len(front) > 1:
        order = front[np.argsort(fr.values[front, 0])]
        ax.plot(fr.values[order, 0], fr.values[order, 1], ":", color="#444", label="Pareto front")
    if fr.knee is not None:
        ax.scatter([fr.values[fr.knee, 0]], [fr.values[fr.knee, 1]], s=180, facecolors="none", edgecolors="k",
                   label="knee")
    ax.set_xlabel(fr.objectives[0])
    ax.set_ylabel(fr.objectives[1])
    ax.set_title(f"hypervolume {fr.hypervolume:.4g}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


COST_FIELDS = (("wall_s", "wall time (s)"), ("energy_kwh", "energy (kWh)"), ("co2_g", "CO2 (g)"))


def cost_figure(labels: list[str], costs: list[Any]) -> go.Figure:
    fig = go.Figure()
    for i, (field, title) in enumerate(COST_FIELDS):
        fig.add_trace(go.Bar(x=[esc(label) for label in labels], y=[getattr(c, field) for c in costs], name=title,
                             visible=i == 0, hovertemplate="%{x}: %{y:.4g}<extra>" + title + "</extra>"))
    buttons = [{"label": title, "method": "update",
                "args": [{"visible": [j == i for j in range(len(COST_FIELDS))]}, {"yaxis": {"title": title}}]}
               for i, (_f, title) in enumerate(COST_FIELDS)]
    fig.update_layout(template="plotly_white", height=380, margin={"l": 60, "r": 20, "t": 50, "b": 120},
                      updatemenus=[{"buttons": buttons, "direction": "right", "x": 0, "y": 1.18, "xanchor": "left"}],
                      yaxis_title=COST_FIELDS[0][1], xaxis_tickangle=-40)
    return fig


def cost_png(labels: list[str], costs: list[Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), dpi=100)
    for ax, (field, title) in zip(axes, COST_FIELDS, strict=True):
        ax.bar(range(len(labels)), [getattr(c, field) for c in costs], color="#1f77b4")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=6)
    fig.tight_layout()
    return png_bytes(fig)
