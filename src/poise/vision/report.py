"""The vision section of the report: every vision run's clean and robust accuracy, and MTARD's balance."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from poise.report import Block, report_section
from poise.report.blocks import focus
from poise.report.figures import MAX_CURVE_POINTS, esc

MAX_BARS = 40

_ORDER = (
    "utility.clean_acc",
    "robustness.fgsm_acc",
    "robustness.pgd20_acc",
    "robustness.cw20_acc",
    "robustness.autoattack_acc",
)


_STAGES = ("_apgd_ce_acc", "_apgd_t_acc", "_fab_t_acc", "_square_acc", "_apgd_dlr_acc", "_fab_acc")


def _headline(key: str) -> bool:
    """Robustness metrics the table shows: not each corruption cell, nor each AutoAttack stage (their own
    sections show those)."""
    name = key.split(".", 1)[1]
    return not (name.startswith("corruption_acc_") or name.endswith(_STAGES))


def _columns(finals: dict[str, dict[str, Any]]) -> list[str]:
    present = {
        k for m in finals.values() for k in m
        if (k.startswith("robustness.") and _headline(k)) or k == "utility.clean_acc"
    }
    return [c for c in _ORDER if c in present] + sorted(present - set(_ORDER))


@report_section("vision.defences", "Vision: defences under attack")
def defences(store: Any, runs: list[Any]) -> list[Block]:
    """A table and a grouped bar chart of clean and robust accuracy of every finished vision run."""
    vision = [r for r in runs if r.kind.startswith("vision.") and r.status == "done"]
    if not vision:
        return []
    finals = store.final_metrics([r.id for r in vision])
    cols = _columns(finals)
    if not cols:
        return []
    rows = []
    for r in vision:
        m = finals.get(r.id, {})
        threat = r.config.get("threat", {})
        wall = m.get("cost.wall_s")
        rows.append(
            [
                r.name,
                r.kind,
                r.id,
                r.seed,
                f"{threat.get('norm', '')} {threat.get('eps', 0):.4g}",
                *[f"{m[c].value:.3f}" if c in m else "" for c in cols],
                f"{wall.value:.1f}" if wall else "",
            ]
        )
    headers = ["run", "kind", "id", "seed", "threat", *[c.split(".", 1)[1] for c in cols], "wall s"]
    fig = go.Figure()
    bars = vision if len(vision) <= MAX_BARS else focus(vision)  # many runs: the table has them all
    labels = [esc(f"{r.name} [{r.id[:6]}]") for r in bars]
    for c in cols:
        fig.add_trace(
            go.Bar(
                x=labels,
                y=[finals.get(r.id, {}).get(c).value if c in finals.get(r.id, {}) else None for r in bars],
                name=esc(c.split(".", 1)[1]),
            )
        )
    fig.update_layout(
        template="plotly_white",
        barmode="group",
        height=400,
        yaxis_title="accuracy",
        yaxis_range=[0, 1],
        xaxis_tickangle=-30,
        margin={"l": 60, "r": 20, "t": 30, "b": 120},
    )
    blocks = [
        Block(
            "accuracy of every vision run",
            table=(headers, rows),
            note="Robust accuracy is measured in each run's own threat model with the attack budget of "
            "its recipe (quick runs use a reduced AutoAttack).",
        ),
        Block("clean and robust accuracy", figure=fig,
              note="" if bars is vision else f"{len(bars)} of {len(vision)} runs: those on a front or newest"),
    ]
    mtard = [r for r in focus(vision) if r.kind == "vision.mtard"]
    if mtard:
        fig2 = go.Figure()
        for r in mtard:
            for name in ("w_nat", "tau_adv", "tau_nat"):
                pts = store.metric_series(r.id, name, max_points=MAX_CURVE_POINTS)
                if pts:
                    fig2.add_trace(
                        go.Scatter(
                            x=[p.step for p in pts],
                            y=[p.value for p in pts],
                            mode="lines",
                            name=esc(f"{r.name} [{r.id[:6]}] {name}"),
                        )
                    )
        fig2.update_layout(
            template="plotly_white",
            height=360,
            xaxis_title="step",
            yaxis_title="value",
            margin={"l": 60, "r": 20, "t": 30, "b": 50},
        )
        blocks.append(
            Block(
                "MTARD: clean-teacher weight w_nat and teacher temperatures",
                figure=fig2,
                note="Normalization Loss Balance moves w_nat; Entropy-Based Balance (B-MTARD) moves "
                "the temperatures.",
            )
        )
    return blocks
