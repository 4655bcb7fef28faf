"""The report's page for ``study.schedules``: final metric vs budget per schedule, lr curves, mean ranks."""

from __future__ import annotations

import math
from typing import Any

from poise.report.blocks import Block, report_section
from poise.store import RunRecord, Store


def _err(iv: dict[str, Any]) -> float:
    lo, hi = iv.get("low"), iv.get("high")
    return (hi - lo) / 2 if isinstance(lo, float) and isinstance(hi, float) and math.isfinite(lo) else 0.0


def metric_figure(study: dict[str, Any], target: dict[str, Any]) -> Any:
    """One line per row: the target's mean test metric at each budget fraction, with its interval."""
    import plotly.graph_objects as go

    from poise.report.figures import PALETTE, esc

    fig = go.Figure()
    for i, row in enumerate(study["rows"]):
        cells = sorted((c for c in target["cells"] if c["row"] == row["label"]), key=lambda c: c["budget"])
        fig.add_trace(go.Scatter(x=[c["budget"] for c in cells], y=[c["interval"]["mean"] for c in cells],
                                 mode="lines+markers", name=esc(row["label"]),
                                 line={"color": PALETTE[i % len(PALETTE)]},
                                 error_y={"type": "data", "array": [_err(c["interval"]) for c in cells]}))
    fig.update_layout(template="plotly_white", height=380, xaxis_title="fraction of the budget",
                      yaxis_title=f"{esc(target['metric'])} ({'higher' if target['direction'] == 'max' else 'lower'}"
                                  " is better)", margin={"l": 60, "r": 20, "t": 30, "b": 50})
    return fig


def lr_curves(study: dict[str, Any], target: dict[str, Any], points: int = 200) -> dict[str, list[float]]:
    """Each row's lr over the budget as a share of its peak (the target recipe's warm-up included)."""
    from poise.recipes import ScheduleCfg
    from poise.schedules import lr_at

    out = {}
    for row in study["rows"]:
        cfg = dict(target.get("schedule") or {})
        cfg["name"] = row["schedule"]
        if row.get("phi") is not None:
            cfg["phi"] = row["phi"]
        if row["schedule"] == "onecycle":
            cfg["warmup_frac"] = 0.0
        sched = ScheduleCfg(**cfg)
        out[row["label"]] = [lr_at(sched, t, points, 1.0) for t in range(points)]
    return out


def lr_figure(study: dict[str, Any], target: dict[str, Any], points: int = 200) -> Any:
    import plotly.graph_objects as go

    from poise.report.figures import PALETTE, esc

    fig = go.Figure()
    for i, (label, ys) in enumerate(lr_curves(study, target, points).items()):
        fig.add_trace(go.Scatter(x=[t / (points - 1) for t in range(points)], y=ys, mode="lines", name=esc(label),
                                 line={"color": PALETTE[i % len(PALETTE)]}))
    fig.update_layout(template="plotly_white", height=380, xaxis_title="fraction of the run",
                      yaxis_title="lr / peak lr", margin={"l": 60, "r": 20, "t": 30, "b": 50})
    return fig


def rank_figure(study: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    from poise.report.figures import esc

    items = sorted(study.get("mean_ranks", {}).items(), key=lambda kv: kv[1]["mean"])
    fig = go.Figure(go.Bar(x=[esc(k) for k, _ in items], y=[v["mean"] for _, v in items],
                           error_y={"type": "data", "array": [_err(v) for _, v in items]}))
    fig.update_layout(template="plotly_white", height=340, yaxis_title="mean rank (1 is best)",
                      margin={"l": 60, "r": 20, "t": 30, "b": 80})
    return fig


@report_section("study.schedules", "Schedules under a fixed budget", per_run=True)
def schedules_section(store: Store, runs: list[RunRecord]) -> list[Block]:
    from poise.study.schedules import load_schedules

    blocks: list[Block] = []
    for run in runs:
        if run.kind != "study.schedules" or run.status != "done":
            continue
        study = load_schedules(store, run)
        if study is None:
            continue
        for t in study["targets"]:
            on = t.get("tuned_on", "the validation split")
            note = (f"{study['name']} [{run.id}]: {t['name']}, mean ± 95 % interval over {len(study['seeds'])} seeds; "
                    f"base lr tuned per row with {study['trials']} runs on {on}. "
                    f"{study.get('command', '')}")
            blocks.append(Block(f"{study['name']} / {t['name']}: {t['metric']} vs budget",
                                figure=metric_figure(study, t), note=note))
        blocks.append(Block(f"{study['name']}: learning rate over the budget",
                            figure=lr_figure(study, study["targets"][0])))
        claim = study.get("claim")
        blocks.append(Block(f"{study['name']}: mean rank over recipes and budgets", figure=rank_figure(study),
                            note=f"Claim: {claim['text']} — {claim['verdict']}." if claim else ""))
        table = [[t["name"], c["row"], c["budget"], c["interval"]["mean"], c["interval"]["low"],
                  c["interval"]["high"], c["interval"]["n"], c["lr"]] for t in study["targets"] for c in t["cells"]]
        blocks.append(Block(f"{study['name']}: cells", table=(["recipe", "schedule", "budget", "mean", "low",
                                                               "high", "seeds", "tuned lr"], table)))
    return blocks
