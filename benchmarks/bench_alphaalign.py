"""AlphaAlign bench: safety/utility of base, SFT, DPO(SFT), AlphaAlign and AlphaAlign-Zero, and RL step split.

Every figure is measured here: the shipped recipes run through poise's runner into a temporary store (the
base model is trained once and reused by every recipe through its config hash), then the table reads the
store's metrics. ``quick`` is one seed with the recipes' ``[quick]`` overrides; the full bench is 3 seeds
at the recipes' own budgets (≤ 200 RL steps). SFT / DPO(SFT) rows appear when the language lab's recipes
(``language/sft.toml``, ``language/dpo-sft.toml``) are present. The second table compares one PPO step with
one GRPO step (same prompts per step, same n) split into generation, reward and update.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("POISE_COUNTRY", "FRA")

ROWS = [  # (label, recipe, overrides)
    ("base", "language/base.toml", {}),
    ("SFT", "language/sft.toml", {}),
    ("DPO(SFT)", "language/dpo-sft.toml", {}),
    ("AlphaAlign (PPO)", "language/alphaalign.toml", {}),
    ("AlphaAlign-Zero (PPO)", "language/alphaalign-zero.toml", {}),
    ("AlphaAlign (GRPO)", "language/alphaalign-grpo.toml", {}),
]


def _fmt(values: list[float], pct: bool = True) -> str:
    if not values:
        return "–"
    scale = 100.0 if pct else 1.0
    m = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{m:.1f}" if pct else f"{m:.3g}"
    s = statistics.stdev(values) * scale
    return f"{m:.1f} ± {s:.1f}" if pct else f"{m:.3g} ± {s:.2g}"


def toy_step_split(quick: bool) -> str:
    """PPO vs GRPO on the toy task (known optimum 1.0): reward reached and the per-step time split."""
    import torch

    from poise.language.alphaalign.grpo import GRPOAdapter, GRPOCfg
    from poise.language.alphaalign.ppo import PPOConfig, PPOTrainer
    from poise.language.alphaalign.rl import summarize_timings
    from poise.language.alphaalign.toy import toy_model, toy_prompts, toy_reward, toy_tokenizer

    steps, per_step, n, new = (4, 4, 4, 3) if quick else (40, 4, 8, 3)
    seeds = [0] if quick else [0, 1, 2]
    rows = []
    for algo in ("PPO", "GRPO"):
        timings, first, last = [], [], []
        for seed in seeds:
            torch.manual_seed(seed)
            tok = toy_tokenizer()
            model = toy_model(tok, seed=seed)
            prompts, labels = toy_prompts(steps * per_step, seed=seed)
            if algo == "PPO":
                cfg = PPOConfig(
                    n_rollouts=n,
                    max_new_tokens=new,
                    lr=3e-3,
                    minibatch_size=per_step * n,
                    ppo_epochs=2,
                    kl_coef=0.01,
                )
                trainer = PPOTrainer(model, tok, toy_reward, cfg)
                results = [
                    trainer.step(
                        prompts[i * per_step : (i + 1) * per_step], labels[i * per_step : (i + 1) * per_step]
                    )
                    for i in range(steps)
                ]
            else:
                cfg = GRPOCfg(
                    n_rollouts=n, prompts_per_step=per_step, max_new_tokens=new, lr=3e-3, kl_coef=0.01
                )
                with tempfile.TemporaryDirectory() as out:
                    results = GRPOAdapter(
                        model, tok, toy_reward, prompts, labels, cfg, steps=steps, seed=seed, output_dir=out
                    ).train()
            timings += [r.timing for r in results[1:]]
            k = max(1, len(results) // 4)
            first.append(statistics.fmean(r.metrics["reward"] for r in results[:k]))
            last.append(statistics.fmean(r.metrics["reward"] for r in results[-k:]))
        t = summarize_timings(timings)
        rows.append(
            f"| {algo} | {_fmt(first, pct=False)} → {_fmt(last, pct=False)} | {t['time_step']:.3f} | "
            + " | ".join(
                f"{t[f'time_{p}']:.3f} ({100 * t[f'share_{p}']:.0f}%)"
                for p in ("generation", "reward", "update")
            )
            + " |"
        )
    return "\n".join(
        [
            f"RL step split on the toy task (tiny Llama, {per_step} prompts × n = {n} rollouts × {new} new "
            f"tokens per step, {steps} steps, {len(seeds)} seed(s); optimum reward 1.0). Mean seconds per "
            "step after the first (share of the step). Reward: first → last quarter of the steps.",
            "",
            "| algorithm | reward | step s | generation | reward | update |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )


def main(quick: bool) -> str:
    parts = [toy_step_split(quick)]
    try:
        parts.append(lab_tables(quick))
    except Exception as e:  # the language lab (base model, evaluators) is not in this checkout or failed
        parts.append(f"Language-lab tables not measured: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return "\n\n".join(parts)


def lab_tables(quick: bool) -> str:
    import poise.language.alphaalign.kinds  # noqa: F401  (registers language.alphaalign)
    from poise.errors import UserError
    from poise.recipes import load_recipe, resolve_recipe_path
    from poise.runner import Runner
    from poise.store import Store
    from poise.ui import UI

    seeds = [0] if quick else [0, 1, 2]
    tmp = tempfile.TemporaryDirectory(prefix="poise-bench-alphaalign-")
    store = Store(root=Path(tmp.name) / ".poise")
    runner = Runner(store, UI(quiet=True))
    finals: dict[str, list[dict[str, float]]] = {}
    costs: dict[str, list[tuple[float, float]]] = {}
    missing = []
    for label, ref, overrides in ROWS:
        try:
            path = resolve_recipe_path(ref)
        except UserError:
            missing.append(label)
            continue
        for seed in seeds:
            # the base model is shared (seed 0); the alignment recipes vary their own seed
            cfg = load_recipe(path, {**overrides, **({"seed": seed} if label != "base" else {})}, quick=quick)
            found = store.find_done(cfg.config_hash())
            run = found if found is not None else runner.run(cfg)
            final = {k: m.value for k, m in store.final_metrics([run.id]).get(run.id, {}).items()}
            finals.setdefault(label, []).append(final)
            cost = store.cost(run.id)
            costs.setdefault(label, []).append((cost.wall_s, cost.energy_kwh * 3.6e6))
            if label == "base":
                break

    languages = sorted(
        {
            k.rsplit("_", 1)[1]
            for fs in finals.values()
            for f in fs
            for k in f
            if k.startswith("safety.harmful_compliance_")
            and k.count("_") == 2
            and k.rsplit("_", 1)[1] not in ("global", "local")
        }
    )

    def col(label: str, key: str) -> str:
        return _fmt([f[key] for f in finals.get(label, []) if key in f])

    out = [
        f"Safety world, tiny Llama base chat model; {len(seeds)} seed(s)"
        + (
            " with the recipes' [quick] overrides (smoke test)"
            if quick
            else ", recipes' budgets (≤ 200 RL steps)"
        )
        + ". Rates in % (mean ± std over seeds); harmful compliance and over-refusal: lower is better; "
        "benign accuracy: higher is better. Time and energy: training run only (the base model is "
        "trained once "
        "and shared).",
        "",
        "| model | harmful compliance | global | local | over-refusal | benign acc | train s | energy J |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, *_ in ROWS:
        if label not in finals:
            continue
        wall = [c[0] for c in costs[label]]
        joules = [c[1] for c in costs[label]]
        out.append(
            f"| {label} | {col(label, 'safety.harmful_compliance')}"
            f" | {col(label, 'safety.harmful_compliance_global')}"
            f" | {col(label, 'safety.harmful_compliance_local')} | {col(label, 'safety.over_refusal')}"
            f" | {col(label, 'utility.benign_acc')} | {_fmt(wall, pct=False)} | {_fmt(joules, pct=False)} |"
        )
    if missing:
        out += ["", f"Not measured (recipe not in this checkout): {', '.join(missing)}."]
    if languages:
        out += [
            "",
            "Per language: harmful compliance / over-refusal / benign accuracy (%).",
            "",
            "| model | " + " | ".join(languages) + " |",
            "|---|" + "---|" * len(languages),
        ]
        for label, *_ in ROWS:
            if label not in finals:
                continue
            cells = [
                f"{col(label, f'safety.harmful_compliance_{lang}')}"
                f" / {col(label, f'safety.over_refusal_{lang}')}"
                f" / {col(label, f'utility.benign_acc_{lang}')}"
                for lang in languages
            ]
            out.append(f"| {label} | " + " | ".join(cells) + " |")

    # RL curves at a glance: first vs last logged step of the AlphaAlign runs
    out += [
        "",
        "RL training (train-time samples, first → last step): refusal on harmful / benign prompts, KL.",
        "",
        "| run | steps | refusal harmful | refusal benign | reward | KL (last) |",
        "|---|---|---|---|---|---|",
    ]
    for run in store.list_runs(kind="language.alphaalign"):
        series = {}
        for m in store.metrics([run.id]):
            if m.axis == "train":
                series.setdefault(m.name, []).append((m.step, m.value))

        def ends(name: str, series: dict = series) -> str:
            s = sorted(series.get(name, []))
            return f"{100 * s[0][1]:.0f} → {100 * s[-1][1]:.0f}" if s else "–"

        kl = sorted(series.get("kl", []))
        rew = sorted(series.get("reward", []))
        steps = len(series.get("time_step", []))
        out.append(
            f"| {run.name} seed {run.config.get('seed')} | {steps} | {ends('refusal_harmful')} | "
            f"{ends('refusal_benign')} | {rew[0][1]:.2f} → {rew[-1][1]:.2f} | "
            f"{kl[-1][1]:.3f} |"
            if rew and kl
            else f"| {run.name} | {steps} | – | – | – | – |"
        )

    # RL step time and its split: PPO vs GRPO, mean over the runs' steps (first step skipped: warm-up)
    out += [
        "",
        "RL step time and its split (mean seconds per step after the first; same prompts per step and n).",
        "",
        "| algorithm | step s | generation | reward | update |",
        "|---|---|---|---|---|",
    ]
    for algo in ("ppo", "grpo"):
        parts: dict[str, list[float]] = {}
        for run in store.list_runs(kind="language.alphaalign"):
            if run.config.get("algo") != algo:
                continue
            for m in store.metrics([run.id]):
                if m.name.startswith("time_") and m.step > 0:
                    parts.setdefault(m.name, []).append(m.value)
        if not parts.get("time_step"):
            continue
        step = statistics.fmean(parts["time_step"])
        cells = [
            f"{statistics.fmean(parts[f'time_{p}']):.3f} "
            f"({100 * statistics.fmean(parts[f'time_{p}']) / step:.0f}%)"
            for p in ("generation", "reward", "update")
        ]
        out.append(f"| {algo.upper()} | {step:.3f} | " + " | ".join(cells) + " |")
    store.close()
    tmp.cleanup()
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    print(main(quick="--quick" in sys.argv))
