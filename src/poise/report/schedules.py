"""The report's page for ``poise study schedules``: final metric vs budget per schedule, lr curves, mean ranks."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

from poise.report.blocks import Block, report_section
from poise.report.figures import PALETTE, esc


def _err(c: dict[str, Any]) -> float:
    return (c["high"] - c["low"]) / 2 if math.isfinite(c.get("low", math.nan)) else 0.0


def metric_figure(study: dict[str, Any], rec: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    for i, row in enumerate(study["rows"]):
        cells = sorted((c for c in rec["cells"] if c["row"] == row["label"]), key=lambda c: c["budget"])
        fig.add_trace(go.Scatter(x=[c["budget"] for c in cells], y=[c["mean"] for c in cells], mode="lines+markers",
                                 name=esc(row["label"]), line={"color": PALETTE[i % len(PALETTE)]},
                                 error_y={"type": "data", "array": [_err(c) for c in cells], "visible": True}))
    fig.update_layout(template="plotly_white", height=380, xaxis_title="fraction of the budget",
                      yaxis_title=f"{esc(rec['metric'])} ({'higher' if rec['direction'] == 'max' else 'lower'} "
                                  "is better)", margin={"l": 60, "r": 20, "t": 30, "b": 50})
    return fig


def lr_figure(study: dict[str, Any], rec: dict[str, Any], points: int = 200) -> go.Figure:
    """Each row's lr over the budget, as a share of its peak (the recipe's warm-up included)."""
    from poise.recipes import ScheduleCfg
    from poise.schedules import lr_at

    fig = go.Figure()
    for i, row in enumerate(study["rows"]):
        cfg = dict(rec.get("schedule") or {})
        cfg.update(name=row["schedule"])
        if row.get("phi") is not None:
            cfg["phi"] = row["phi"]
        if row["schedule"] == "onecycle":
            cfg["warmup_frac"] = 0.0
        sched = ScheduleCfg(**cfg)
        fig.add_trace(go.Scatter(x=[t / (points - 1) for t in range(points)],
                                 y=[lr_at(sched, t, points, 1.0) for t in range(points)], mode="lines",
                                 name=esc(row["label"]), line={"color": PALETTE[i % len(PALETTE)]}))
    fig.update_layout(template="plotly_white", height=380, xaxis_title="fraction of the run",
                      yaxis_title="lr / peak lr", margin={"l": 60, "r": 20, "t": 30, "b": 50})
    return fig


def rank_figure(study: dict[str, Any]) -> go.Figure:
    items = sorted(study.get("mean_ranks", {}).items(), key=lambda kv: kv[1]["mean"])
    fig = go.Figure(go.Bar(x=[esc(k) for k, _ in items], y=[v["mean"] for _, v in items],
                           error_y={"type": "data", "array": [_err(v) for _, v in items], "visible": True}))
    fig.update_layout(template="plotly_white", height=340, yaxis_title="mean rank (1 is best)",
                      margin={"l": 60, "r": 20, "t": 30, "b": 80})
    return fig


@report_section("study.schedules", "Schedules under a fixed budget")
def schedules_section(store: Any, runs: list[Any]) -> list[Block]:
    from poise.schedule_study import load_studies

    blocks: list[Block] = []
    for study in load_studies(store):
        spec = study.get("spec", {})
        for rec in study["recipes"]:
            note = (f"study {study['name']}: {rec['name']}, mean ± 95 % interval over {spec.get('seeds')} seeds; "
                    f"base lr tuned per row with {spec.get('tune_trials')} runs on {rec['tuned_on']}")
            blocks.append(Block(f"{study['name']} / {rec['name']}: {rec['metric']} vs budget",
                                figure=metric_figure(study, rec), note=note))
        blocks.append(Block(f"{study['name']}: learning rate over the budget",
                            figure=lr_figure(study, study["recipes"][0])))
        claim = study.get("claim")
        blocks.append(Block(f"{study['name']}: mean rank over recipes and budgets", figure=rank_figure(study),
                            note=(f"Claim: {claim['text']} — {claim['verdict']}." if claim else "")))
        table = [[rec["name"], c["row"], c["budget"], c["mean"], c["low"], c["high"], len(c["values"]),
                  rec["tuned"][c["row"]]["lr"]] for rec in study["recipes"] for c in rec["cells"]]
        blocks.append(Block(f"{study['name']}: cells", table=(["recipe", "schedule", "budget", "mean", "low", "high",
                                                               "seeds", "tuned lr"], table)))
    return blocks
