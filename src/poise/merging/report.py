"""Report section for merges: each sweep's metrics against t, and a table of merges with their sources."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from poise.report.blocks import Block, artifact_json, report_section
from poise.report.figures import PALETTE, esc
from poise.store import RunRecord, Store


def _json_artifact(store: Store, run: RunRecord, name: str) -> dict[str, Any] | None:
    return artifact_json(store, run, name)


def sweep_figure(table: dict[str, Any], title: str) -> go.Figure:
    fig = go.Figure()
    points = table["points"]
    ts = [p["t"] for p in points]
    metrics = sorted({k for p in points for k in p["metrics"]})
    for i, k in enumerate(metrics):
        fig.add_trace(
            go.Scatter(
                x=ts,
                y=[p["metrics"].get(k) for p in points],
                mode="lines+markers",
                name=esc(k),
                line={"color": PALETTE[i % len(PALETTE)]},
                hovertext=[f"t={p['t']:g} run {esc(p['run'])}" for p in points],
                hoverinfo="text+y",
            )
        )
    a, b = (esc(m["name"]) for m in table["models"])
    fig.update_layout(
        title=esc(title),
        xaxis_title=f"t ({a} → {b}, {esc(table['method'])})",
        yaxis_title="metric",
        template="plotly_white",
        height=380,
        margin={"l": 50, "r": 20, "t": 50, "b": 50},
    )
    return fig


@report_section("merging", "Merges", per_run=True)
def merges_section(store: Store, runs: list[RunRecord]) -> list[Block]:
    blocks: list[Block] = []
    for r in runs:
        if r.kind != "merging.sweep" or r.status != "done":
            continue
        table = _json_artifact(store, r, "sweep")
        if not table:
            continue
        metrics = sorted({k for p in table["points"] for k in p["metrics"]})
        blocks.append(
            Block(
                f"sweep {r.name} [{r.id[:6]}]",
                figure=sweep_figure(table, r.name),
                note=f"{table['method']} interpolation; each point is a merging.merge run",
            )
        )
        blocks.append(
            Block(
                f"sweep {r.name}: points",
                table=(
                    ["t", "run", *metrics],
                    [[p["t"], p["run"], *[p["metrics"].get(k) for k in metrics]] for p in table["points"]],
                ),
            )
        )
    rows = []
    for r in runs:
        if r.kind != "merging.merge" or r.status != "done":
            continue
        lin = _json_artifact(store, r, "lineage") or {}
        sources = ", ".join(m.get("run") or m.get("label", "?") for m in lin.get("models", []))
        base = (lin.get("base") or {}).get("run") or (lin.get("base") or {}).get("label") or ""
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(lin.get("metrics", {}).items()))
        rows.append([r.id, r.name, lin.get("method", ""), sources, base, lin.get("seconds"), metrics])
    if rows:
        blocks.append(
            Block(
                "merged models",
                table=(["run", "name", "method", "sources", "base", "seconds", "metrics"], rows),
            )
        )
    return blocks
