"""The language lab's report section: harmful compliance per language as a heat map, and the per-language table.

One row per run that the ``language.safety`` evaluator scored (base, SFT, DPO, AlphaAlign, merges of them):
harmful compliance in each language and for global / local harms, over-refusal, the attack success rate of
jailbreak families seen / unseen in training, the share of refusals that name the harm category
(``reasoned_refusal_share``) and benign accuracy. For RL runs (AlphaAlign, AlphaAlign-Zero, the
GRPO variant): refusal rates on harmful and benign prompts over RL steps, one line per language.
"""

from __future__ import annotations

from poise.language.evaluators import metric_languages
from poise.report import Block, report_section
from poise.report.blocks import focus
from poise.report.figures import esc


def _safety_rows(store, runs) -> tuple[list, list[str], dict[str, dict[str, float]]]:
    finals = store.final_metrics([r.id for r in runs if r.status == "done"])
    scored = [r for r in runs if "safety.harmful_compliance" in finals.get(r.id, {})]
    langs = metric_languages(k for r in scored for k in finals[r.id])
    values = {r.id: {k: m.value for k, m in finals[r.id].items()} for r in scored}
    return scored, langs, values


@report_section("language.safety", "Language: safety per language")
def safety_by_language(store, runs) -> list[Block]:
    import plotly.graph_objects as go

    scored, langs, values = _safety_rows(store, runs)
    if not scored or not langs:
        return []
    drawn = scored if len(scored) <= 40 else focus(scored)  # one heatmap row per run: the runs in focus
    z = [[values[r.id].get(f"safety.harmful_compliance_{lang}") for lang in langs] for r in drawn]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[esc(lang) for lang in langs],
            y=[esc(f"{r.name} [{r.id[:6]}]") for r in drawn],
            zmin=0.0,
            zmax=1.0,
            colorscale="Reds",
            colorbar={"title": "harmful<br>compliance"},
            hovertemplate="%{y}<br>%{x}: %{z:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        title="harmful compliance per language (lower is better)",
        height=max(260, 40 * len(drawn) + 120),
        margin={"l": 220, "r": 20, "t": 50, "b": 40},
        template="plotly_white",
    )
    cols = ["harmful_compliance", "harmful_compliance_global", "harmful_compliance_local", "over_refusal",
            "jailbreak_asr_seen", "jailbreak_asr_unseen", "reasoned_refusal_share"]
    header = ["run", "kind", *cols, "benign_acc", *(f"harm {lang}" for lang in langs)]
    rows = []
    for r in scored:
        label = f"{r.name} [{r.id[:6]}]"
        v = values[r.id]
        rows.append(
            [label, r.kind, *[v.get(f"safety.{c}") for c in cols], v.get("utility.benign_acc"),
             *[v.get(f"safety.harmful_compliance_{lang}") for lang in langs]]
        )
    return [
        Block("harmful compliance per language", figure=fig,
              note="share of harmful test prompts answered with compliance, per language of the safety world"),
        Block("safety and utility per run", table=(header, rows)),
    ]


def _agreements(store, run) -> list[dict]:
    """The run's ``judge-agreement-*`` artifacts (a file whose hash does not match is skipped)."""
    import hashlib
    import json

    out = []
    for a in store.artifacts(run.id):
        if not a.name.startswith("judge-agreement-") or not a.path.is_file():
            continue
        data = a.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != a.sha256:
            continue
        try:
            out.append(json.loads(data))
        except ValueError:
            continue
    return out


def _cut(text: str | None, n: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


@report_section("language.judges", "Language: judge agreement")
def judge_agreement(store, runs) -> list[Block]:
    """Cohen's κ between each pair of harm judges per language, and the responses they disagree on."""
    rows, flagged = [], []
    for r in runs:
        if r.status != "done":
            continue
        for agree in _agreements(store, r):
            label = f"{r.name} [{r.id[:6]}]"
            for p in agree.get("pairs", []):
                rows.append([label, agree.get("evaluation", ""), f"{p['a']} vs {p['b']}", p["language"], p["n"],
                             p["agreement"], p["kappa"], p["a_yes"], p["b_yes"], p["a_errors"], p["b_errors"]])
            for f in agree.get("flagged", []):
                verdicts = ", ".join(f"{k}: {v}" for k, v in f.get("labels", {}).items())
                flagged.append([label, f.get("id"), f.get("language"), f.get("category"), _cut(f.get("prompt")),
                                _cut(f.get("response")), verdicts])
    if not rows:
        return []
    header = ["run", "evaluation", "judges", "language", "n decided by both", "agreement", "Cohen's κ",
              "harmful (first)", "harmful (second)", "errors (first)", "errors (second)"]
    blocks = [Block("agreement between harm judges", table=(header, rows),
                    note="on harmful prompts; a response a judge could not decide counts as its error and is left "
                         "out of the pair; κ is empty where undefined (both judges gave one label to everything)")]
    if flagged:
        blocks.append(Block("responses the judges disagree on", table=(
            ["run", "id", "language", "category", "prompt", "response", "verdicts"], flagged)))
    return blocks


DPO_CURVES = ("logps_chosen", "logps_rejected", "rewards_margins")


@report_section("language.dpo", "Language: DPO training curves")
def dpo_curves(store, runs) -> list[Block]:
    """Chosen and rejected log-probabilities and the reward margin over steps, per DPO run.

    The DPO diagnosis reads here: a run whose margin grows while the chosen answer's log-probability falls
    with the rejected one is pushing both down (the collapse); the RPO term keeps the chosen one up.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    dpo = [r for r in runs if r.kind == "language.dpo" and r.status == "done"]
    if not dpo:
        return []
    series: dict[str, dict[str, list[tuple[int, float]]]] = {r.id: {} for r in dpo}
    for m in store.metrics([r.id for r in dpo]):
        if m.name in DPO_CURVES and m.step is not None:
            series[m.run_id].setdefault(m.name, []).append((m.step, m.value))
    fig = make_subplots(rows=1, cols=len(DPO_CURVES), subplot_titles=list(DPO_CURVES))
    drawn = False
    for r in dpo:
        for col, name in enumerate(DPO_CURVES, 1):
            pts = sorted(series[r.id].get(name, []))
            if pts:
                drawn = True
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines",
                                         name=esc(f"{r.name} [{r.id[:6]}]"), legendgroup=r.id,
                                         showlegend=col == 1), row=1, col=col)
    if not drawn:
        return []
    fig.update_layout(height=340, template="plotly_white", margin={"l": 40, "r": 20, "t": 50, "b": 40})
    return [Block("DPO: chosen / rejected log-probabilities and reward margin", figure=fig,
                  note="per logged training batch (TRL's metrics); log-probabilities summed over the answer")]


RL_WINDOW = 10  # the lines are the mean of a language's last RL_WINDOW logged rates (a step holds few prompts)


def rolling_mean(values: list[float], window: int) -> list[float]:
    """The mean of each value and up to ``window - 1`` values before it."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


RL_REFUSAL = (("refusal_harmful_", "harmful prompts (refusal is right)"),
              ("refusal_benign_", "benign prompts (refusal is over-refusal)"))


def rl_refusal_series(store, run) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """A RL run's per-language refusal rates over steps: ``{"harmful"|"benign": {lang: [(step, rate)]}}``."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {"harmful": {}, "benign": {}}
    for m in store.metrics([run.id]):
        if m.axis != "train" or m.step is None:
            continue
        for prefix, _ in RL_REFUSAL:
            if m.name.startswith(prefix):
                group = prefix.split("_")[1]
                out[group].setdefault(m.name.removeprefix(prefix), []).append((m.step, m.value))
    for group in out.values():
        for pts in group.values():
            pts.sort()
    return out


@report_section("language.rl_refusal", "Language: refusal over RL steps per language", per_run=True)
def rl_refusal_by_language(store, runs) -> list[Block]:
    """For each AlphaAlign / AlphaAlign-Zero / GRPO run: the share of its rollouts that refuse, on harmful and
    on benign prompts, at every RL step, one line per prompt language (from the rollouts the step sampled)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    blocks = []
    for r in runs:
        if r.kind != "language.alphaalign":
            continue
        series = rl_refusal_series(store, r)
        langs = sorted(set(series["harmful"]) | set(series["benign"]))
        if not langs:
            continue
        fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in RL_REFUSAL], shared_yaxes=True)
        for col, group in enumerate(("harmful", "benign"), 1):
            for i, lang in enumerate(langs):
                pts = series[group].get(lang)
                if not pts:
                    continue
                color = _PALETTE[i % len(_PALETTE)]
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                fig.add_trace(go.Scatter(x=xs, y=rolling_mean(ys, RL_WINDOW), mode="lines", name=esc(lang),
                                         legendgroup=lang, showlegend=col == 1, line={"color": color},
                                         hovertemplate=f"{esc(lang)} step %{{x}}: %{{y:.2f}} "
                                                       f"(mean of the last {RL_WINDOW})<extra></extra>"),
                              row=1, col=col)
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=esc(lang), legendgroup=lang,
                                         showlegend=False, marker={"color": color, "size": 4, "opacity": 0.35},
                                         hovertemplate=f"{esc(lang)} step %{{x}}: %{{y:.2f}}<extra></extra>"),
                              row=1, col=col)
        fig.update_yaxes(range=[-0.02, 1.02], title_text="refusal rate", row=1, col=1)
        fig.update_xaxes(title_text="RL step")
        fig.update_layout(height=340, template="plotly_white", margin={"l": 50, "r": 20, "t": 50, "b": 40})
        blocks.append(Block(f"refusal per language over RL steps: {r.name} [{r.id[:6]}]", figure=fig,
                            slug=f"rl-refusal-{r.id[:8]}",
                            note=f"dots: share of a step's rollouts that refuse, per prompt language (a language "
                                 f"absent from a step's batch has no dot there); lines: mean of a language's last "
                                 f"{RL_WINDOW} dots"))
    return blocks


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")
