"""Report section of the control domain: a return-vs-budget plot per agent and a table of all agents.

Reads each run's ``eval_attacks.json`` (written by ``control.attacked_return``): the line is the mean
return over all episodes, the band the inter-quartile range, the dashed line the median; b = 0 is the
nominal return.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from poise.control.evaluation import auc
from poise.report import Block, report_section
from poise.report.blocks import artifact_json, in_focus
from poise.report.figures import PALETTE, esc, png_bytes

COLORS = {"random": PALETTE[7], "mas": PALETTE[1], "las": PALETTE[0]}


def _curves(detail: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    budgets = [0.0, *[float(b) for b in detail["budgets"]]]
    nominal = np.asarray(detail["nominal"], dtype=float)
    out = {}
    for attack, per in detail["attacks"].items():
        rets = [nominal, *[np.asarray(per[str(b)]["returns"], dtype=float) for b in detail["budgets"]]]
        out[attack] = {"b": np.asarray(budgets), "mean": np.array([r.mean() for r in rets]),
                       "median": np.array([np.median(r) for r in rets]),
                       "q1": np.array([np.percentile(r, 25) for r in rets]),
                       "q3": np.array([np.percentile(r, 75) for r in rets])}
    return out


def _figure(title: str, curves: dict[str, dict[str, np.ndarray]]) -> go.Figure:
    fig = go.Figure()
    for attack, c in curves.items():
        color = COLORS.get(attack, PALETTE[4])
        x = list(c["b"])
        fig.add_trace(go.Scatter(x=x + x[::-1], y=list(c["q3"]) + list(c["q1"])[::-1], fill="toself",
                                 fillcolor=color, opacity=0.15, line={"width": 0}, hoverinfo="skip",
                                 showlegend=False))
        fig.add_trace(go.Scatter(x=x, y=c["mean"], mode="lines+markers", name=f"{esc(attack)} mean",
                                 line={"color": color}))
        fig.add_trace(go.Scatter(x=x, y=c["median"], mode="lines", name=f"{esc(attack)} median",
                                 line={"color": color, "dash": "dash"}))
    fig.update_layout(template="plotly_white", height=380, margin={"l": 60, "r": 20, "t": 40, "b": 50},
                      title={"text": esc(title), "font": {"size": 13}},
                      xaxis_title="budget b (fraction of the action range)", yaxis_title="episode return",
                      legend={"orientation": "h", "y": -0.25})
    return fig


def _png(title: str, curves: dict[str, dict[str, np.ndarray]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for attack, c in curves.items():
        color = COLORS.get(attack, PALETTE[4])
        ax.fill_between(c["b"], c["q1"], c["q3"], color=color, alpha=0.15)
        ax.plot(c["b"], c["mean"], "o-", color=color, label=f"{attack} mean")
        ax.plot(c["b"], c["median"], "--", color=color, label=f"{attack} median")
    ax.set_xlabel("budget b (fraction of the action range)")
    ax.set_ylabel("episode return")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


@report_section("control.returns", "Control: return under action attacks")
def control_section(store: Any, runs: list[Any]) -> list[Block]:
    blocks: list[Block] = []
    rows = []
    for run in runs:
        if not run.kind.startswith("control.") or run.status != "done":
            continue
        detail = artifact_json(store, run, "eval_attacks.json")
        if detail is None:  # runs without an attack evaluation have no plot
            continue
        curves = _curves(detail)
        title = f"{run.name} [{run.id[:6]}] on {detail['env']}"
        note = (f"{len(detail['seeds'])} seeds × {detail['episodes']} episodes; l{detail['norm']} budget; "
                f"LAS H = {detail['horizon']}, temporal l{detail['temporal_norm']}")
        if in_focus(run):  # the table has every agent; the curves only the runs in the report's focus
            blocks.append(Block(title=title, figure=_figure(title, curves), png=_png(title, curves), note=note,
                                slug=f"control-{run.id}"))
        nominal = float(np.mean(detail["nominal"]))
        area = {a: auc(list(c["b"][1:]), list(c["mean"][1:]), nominal) for a, c in curves.items()}
        rows.append([run.id, run.name, run.kind, detail["env"], nominal,
                     *[area.get(a) for a in ("random", "mas", "las")]])
    if rows:
        blocks.insert(0, Block(title="Agents under attack",
                               table=(["run", "name", "kind", "env", "nominal return", "AUC random", "AUC MAS",
                                       "AUC LAS"], rows),
                               note="AUC: average mean return over budgets 0..max (higher is more robust)"))
    return blocks
