"""Report section: the α trade-off of every Lipschitz sweep — nominal regret vs degradation under attack."""

from __future__ import annotations

import plotly.graph_objects as go

from poise.report.blocks import Block, artifact_json, report_section
from poise.report.figures import esc


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, int | float) else "—"


@report_section(
    "control.lipschitz", "Lipschitz feedback policies: nominal regret vs degradation under attack", per_run=True
)
def lipschitz_section(store, runs) -> list[Block]:
    blocks: list[Block] = []
    for run in runs:
        if run.kind != "control.lipschitz_sweep":
            continue
        table = artifact_json(store, run, "tradeoff")
        if table is None:
            continue
        rows = table["rows"]
        deg_keys = sorted(
            {k for r in rows for k in r["metrics"] if k.startswith("robustness.degradation_eps")}
        )
        fig = go.Figure()
        for key in deg_keys:
            eps = key.removeprefix("robustness.degradation_eps")
            pts = [r for r in rows if key in r["metrics"] and "utility.regret" in r["metrics"]]
            fig.add_trace(
                go.Scatter(
                    x=[r["metrics"]["utility.regret"] for r in pts],
                    y=[r["metrics"][key] for r in pts],
                    mode="lines+markers+text",
                    name=f"ε = {esc(eps)}",
                    text=[esc(r["label"]) for r in pts],
                    textposition="top center",
                    hovertext=[
                        esc(
                            f"{r['label']} [{r['run']}] certified α·ε bound "
                            f"{_fmt(r['metrics'].get('robustness.lip_upper', float('nan')) * float(eps))}"
                        )
                        for r in pts
                    ],
                )
            )
        fig.update_layout(
            xaxis_title="nominal regret J(π) − J(expert) ↓",
            yaxis_title="degradation under attack ↓",
            height=420,
            margin=dict(l=40, r=20, t=30, b=40),
        )
        cols = [
            "policy",
            "train error",
            "regret",
            *[k.removeprefix("robustness.") for k in deg_keys],
            "certified lip ≤",
            "empirical lip ≥",
            "measured / certified deviation",
        ]
        table = [
            [
                r["label"],
                *[_fmt(r["metrics"].get(k)) for k in ("train.train_error", "utility.regret")],
                *[_fmt(r["metrics"].get(k)) for k in deg_keys],
                *[
                    _fmt(r["metrics"].get(k))
                    for k in ("robustness.lip_upper", "robustness.lip_lower", "robustness.bound_ratio")
                ],
            ]
            for r in rows
        ]
        blocks.append(
            Block(
                f"{run.name} [{run.id}]",
                figure=fig,
                slug=f"lipschitz-{run.id}",
                note="each point is one policy; larger α should lower regret and raise degradation",
            )
        )
        blocks.append(Block(f"{run.name}: per-policy figures", table=(cols, table)))
    return blocks
