"""The AlphaAlign report section: per-step training curves of every ``language.alphaalign`` run.

Reward and its parts (format, refusal, helpfulness), refusal rates on harmful and benign prompts, and KL to
the reference, one line per run (plotly, so the report stays self-contained).
"""

from __future__ import annotations

from poise.report import Block, report_section
from poise.report.figures import MAX_CURVE_POINTS

CURVES = [
    ("reward", "mean reward"),
    ("reward_format", "format V_f"),
    ("reward_refusal", "refusal V_r"),
    ("reward_helpfulness", "helpfulness R_h (benign)"),
    ("refusal_harmful", "refusal rate, harmful prompts"),
    ("refusal_benign", "refusal rate, benign prompts"),
    ("kl", "KL to the reference"),
]


@report_section("language.alphaalign", "AlphaAlign: RL curves", per_run=True)
def alphaalign_curves(store, runs) -> list[Block]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ours = [r for r in runs if r.kind == "language.alphaalign"]
    if not ours:
        return []
    series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for r in ours:  # long logs are thinned for plotting (the store keeps every row)
        for name, _ in CURVES:
            pts = [m for m in store.metric_series(r.id, name, max_points=MAX_CURVE_POINTS) if m.axis == "train"]
            if pts:
                series[(r.id, name)] = ([m.step for m in pts], [m.value for m in pts])
    shown = [(n, t) for n, t in CURVES if any(name == n for _, name in series)]
    if not shown:
        return []
    cols = 2
    nrows = (len(shown) + cols - 1) // cols
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=[t for _, t in shown])
    for i, (name, _) in enumerate(shown):
        for run in ours:
            if (run.id, name) not in series:
                continue
            xs, ys = series[(run.id, name)]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    name=f"{run.name} [{run.id[:6]}]",
                    legendgroup=run.id,
                    showlegend=i == 0,
                ),
                row=i // cols + 1,
                col=i % cols + 1,
            )
    fig.update_layout(height=260 * nrows, margin=dict(l=40, r=20, t=40, b=30))
    return [
        Block(
            "AlphaAlign training curves", figure=fig, note="x: RL step; one line per run", slug="alphaalign"
        )
    ]
