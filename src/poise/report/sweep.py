"""The report's Sweeps section: for each study in the store's optuna storage, every trial, the Pareto
front, hypervolume as trials accrue, and parameter importances (optuna's fANOVA evaluator).

Studies are read with ``optuna.load_study`` from the plain optuna storage that ``poise sweep`` writes
(``optuna.db`` next to a SQLite store, the store's own PostgreSQL database), which optuna-dashboard
opens as well. Hypervolume follows :mod:`poise.frontier`: in the metrics' own units, against the worst
value of each objective over the study's complete trials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from poise.frontier import hypervolume, pareto_mask
from poise.report.blocks import Block, report_section
from poise.report.figures import esc, png_bytes
from poise.store import Store, display_url

MAX_STUDIES = 20


def study_storage_if_any(store: Store) -> str | None:
    """The store's optuna storage URL when it holds studies (never creates one)."""
    import sqlalchemy as sa

    if store.url.startswith("sqlite"):
        db = (Path(store.root) / "optuna.db").resolve()
        return f"sqlite:///{db}" if db.is_file() else None
    return store.url if sa.inspect(store.engine).has_table("studies") else None


def objectives_of(study: Any) -> list[tuple[str, bool]]:
    """``(name, maximise)`` per objective: poise's names when the study records them."""
    import optuna

    named = study.user_attrs.get("poise", {}).get("objectives") or []
    maxi = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    names = [o[0] for o in named] if len(named) == len(maxi) else [f"objective {i}" for i in range(len(maxi))]
    return list(zip(names, maxi, strict=True))


def complete_trials(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return sorted(done, key=lambda t: (t.datetime_complete or t.datetime_start, t.number))


def hypervolume_history(study: Any) -> list[tuple[int, float]]:
    """``(trial number, hypervolume of the complete trials so far)`` in order of completion; one
    objective gives the best-so-far improvement over the worst value (its 1-D hypervolume)."""
    trials = complete_trials(study)
    if not trials:
        return []
    maximise = [m for _, m in objectives_of(study)]
    values = np.array([t.values for t in trials], dtype=float)
    ref = np.where(np.asarray(maximise), values.min(axis=0), values.max(axis=0))
    out = []
    for k in range(1, len(trials) + 1):
        pts = values[:k]
        if len(maximise) == 1:
            best = pts.max() if maximise[0] else pts.min()
            hv = float(abs(best - ref[0]))
        else:
            hv = hypervolume(pts, maximise, ref)
        out.append((trials[k - 1].number, hv))
    return out


def importances(study: Any) -> dict[str, dict[str, float]]:
    """fANOVA importance of each searched param (those every complete trial has) per objective."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    out: dict[str, dict[str, float]] = {}
    for i, (name, _) in enumerate(objectives_of(study)):
        try:
            out[name] = dict(get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                                   target=lambda t, i=i: t.values[i]))
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # too few trials, or no param varies yet
    return out


def _hover(t: Any, objectives: list[tuple[str, bool]]) -> str:
    lines = [f"<b>trial {t.number}</b> run {esc(t.user_attrs.get('run', ''))}"]
    lines += [f"{esc(k)} = {esc(v if not isinstance(v, float) else f'{v:.4g}')}" for k, v in sorted(t.params.items())]
    lines += [f"{esc(n)} = {v:.4g}" for (n, _), v in zip(objectives, t.values, strict=True)]
    return "<br>".join(lines)


def front_figure(study: Any) -> tuple[go.Figure, bytes]:
    """Complete trials on the first two objectives (or value by trial for one), the front as diamonds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = objectives_of(study)
    trials = complete_trials(study)
    values = np.array([t.values for t in trials], dtype=float)
    front = pareto_mask(values, [m for _, m in objectives]) if len(trials) else np.zeros(0, bool)
    fig = go.Figure()
    mfig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    if len(objectives) == 1:
        xs, ys = [t.number for t in trials], values[:, 0] if len(trials) else []
        xlabel, ylabel = "trial", objectives[0][0]
    else:
        xs, ys = values[:, 0], values[:, 1]
        xlabel, ylabel = objectives[0][0], objectives[1][0]
    for on, label, symbol, color in ((False, "trials", "circle", "#9aa5b1"), (True, "Pareto front", "diamond",
                                                                                "#d62728")):
        idx = [i for i in range(len(trials)) if bool(front[i]) == on]
        fig.add_trace(go.Scatter(x=[xs[i] for i in idx], y=[ys[i] for i in idx], mode="markers", name=label,
                                 marker={"size": 10, "symbol": symbol, "color": color,
                                         "line": {"width": 1, "color": "#222"}},
                                 hovertext=[_hover(trials[i], objectives) for i in idx], hoverinfo="text"))
        ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], c=color, marker="D" if on else "o", label=label,
                   edgecolors="#222", s=40)
    fig.update_layout(template="plotly_white", height=400, margin={"l": 60, "r": 20, "t": 30, "b": 50},
                      xaxis_title=esc(xlabel), yaxis_title=esc(ylabel), legend={"orientation": "h", "y": -0.25})
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    mfig.tight_layout()
    return fig, png_bytes(mfig)


def history_figure(study: Any, history: list[tuple[int, float]]) -> go.Figure:
    title = "hypervolume" if len(study.directions) > 1 else "improvement of the best value over the worst"
    fig = go.Figure(go.Scatter(x=list(range(1, len(history) + 1)), y=[h for _, h in history], mode="lines+markers",
                               hovertext=[f"after trial {n}: {h:.4g}" for n, h in history], hoverinfo="text"))
    fig.update_layout(template="plotly_white", height=320, margin={"l": 60, "r": 20, "t": 30, "b": 50},
                      xaxis_title="complete trials", yaxis_title=title)
    return fig


def importance_figure(imp: dict[str, dict[str, float]]) -> go.Figure:
    fig = go.Figure()
    for name, values in imp.items():
        keys = sorted(values, key=values.get)
        fig.add_trace(go.Bar(x=[values[k] for k in keys], y=[esc(k) for k in keys], orientation="h", name=esc(name)))
    fig.update_layout(template="plotly_white", height=320, margin={"l": 140, "r": 20, "t": 30, "b": 50},
                      xaxis_title="fANOVA importance", barmode="group", legend={"orientation": "h", "y": -0.3})
    return fig


def study_blocks(study: Any, storage_label: str) -> list[Block]:
    objectives = objectives_of(study)
    searched = [p["field"] for p in study.user_attrs.get("poise", {}).get("params", []) if p["kind"] != "fixed"]
    searched += sorted({k for t in study.trials for k in t.params} - set(searched))
    rows = []
    for t in study.trials:
        took = ((t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start else None)
        values = list(t.values) if t.values is not None else [None] * len(objectives)
        rows.append([t.number, t.state.name.lower(), t.user_attrs.get("run", ""),
                     *[t.params.get(f) for f in searched], *values, took])
    name = study.study_name
    blocks = [Block(f"study {name}: trials", table=(["trial", "state", "run", *searched,
                                                     *[o for o, _ in objectives], "seconds"], rows),
                    note=f"{len(study.trials)} trials in {storage_label}; open them live with "
                         f"optuna-dashboard on the same storage.")]
    if not complete_trials(study):
        return blocks
    fig, png = front_figure(study)
    blocks.append(Block(f"study {name}: {'Pareto front' if len(objectives) > 1 else 'values by trial'}", figure=fig,
                        png=png, note="diamonds: trials no other trial dominates"))
    history = hypervolume_history(study)
    blocks.append(Block(f"study {name}: {'hypervolume' if len(objectives) > 1 else 'best value'} as trials accrue",
                        figure=history_figure(study, history),
                        note=f"final {history[-1][1]:.4g} after {len(history)} complete trials (reference: the "
                             f"worst value of each objective)"))
    imp = importances(study)
    if imp:
        blocks.append(Block(f"study {name}: parameter importances", figure=importance_figure(imp),
                            note="optuna's fANOVA evaluator over the params every complete trial has"))
    return blocks


@report_section("sweeps", "Sweeps")
def sweeps_section(store: Store, runs: list[Any]) -> list[Block]:
    """One group of blocks per study made by ``poise sweep`` in this store's storage."""
    try:
        from poise.sweep import open_storage, quiet_optuna
    except ImportError:  # optuna is the sweep extra
        return []
    url = study_storage_if_any(store)
    if url is None:
        return []
    optuna = quiet_optuna()
    storage = open_storage(url)
    try:
        blocks: list[Block] = []
        for name in sorted(optuna.get_all_study_names(storage))[:MAX_STUDIES]:
            blocks += study_blocks(optuna.load_study(study_name=name, storage=storage), display_url(url))
        return blocks
    finally:
        storage.remove_session()
        storage.engine.dispose()
