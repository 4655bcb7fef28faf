"""AlphaAlign bench: safety/utility of base, SFT, DPO(SFT), AlphaAlign and AlphaAlign-Zero, and RL step split.

Every figure is measured here: the shipped recipes run through poise's runner into one store
(:mod:`language_lab`; the base model is trained once and reused by every recipe through its config hash),
then the tables read the store's metrics. ``quick`` is one seed with the recipes' ``[quick]`` overrides; the
full bench is 3 seeds at the recipes' own budgets (≤ 200 RL steps); DPO(SFT) of seed s starts from the SFT of
seed s. The last tables compare one PPO step with one GRPO step (same prompts per step, same n) split into
generation, reward and update.
"""

from __future__ import annotations

import os
import statistics
import tempfile

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
    from language_lab import fmt

    return fmt(values, pct)


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
    from language_lab import Lab
    from language_lab import seeds as bench_seeds

    import poise.language.alphaalign.kinds  # noqa: F401  (registers language.alphaalign)

    seeds = bench_seeds(quick)
    grpo_seeds = bench_seeds(quick, "POISE_BENCH_GRPO_SEEDS", seeds)
    lab = Lab(quick)
    store = lab.store
    lab.run("base", "language/base.toml")  # shared by every row (seed 0)
    # RL rows first, SFT rows last: a language bench sharing the store may be training those meanwhile
    for label, ref, overrides in [*ROWS[3:], *ROWS[1:3]]:
        for seed in grpo_seeds if "GRPO" in label else seeds:
            extra = {"model.base_set": {"seed": seed}} if label == "DPO(SFT)" else {}
            lab.run(label, ref, {**overrides, **extra, "seed": seed})
    labels = [label for label, *_ in ROWS]
    out = [
        f"Safety world, tiny Llama base chat model; {len(seeds)} seed(s)"
        + (" with the recipes' [quick] overrides (smoke test)" if quick else ", recipes' budgets (≤ 200 RL steps)")
        + ". Rates in % (mean ± std over seeds); harmful compliance and over-refusal: lower is better; "
        "benign accuracy: higher is better. Time and energy: training run only (the base model is trained once "
        "and shared; DPO(SFT) excludes its SFT).",
        "",
        *lab.headline_table(labels),
    ]
    if lab.missing:
        out += ["", f"Not measured (recipe not in this checkout): {', '.join(sorted(set(lab.missing)))}."]
    out += ["", "Per language: harmful compliance / over-refusal / benign accuracy (%).", "",
            *lab.language_table(labels)]
    base = {k: lab.mean("base", k) for k in ("safety.harmful_compliance", "safety.over_refusal",
                                                "utility.benign_acc")}
    aa = {k: lab.mean("AlphaAlign (PPO)", k) for k in base}
    zero_acc = lab.mean("AlphaAlign-Zero (PPO)", "utility.benign_acc")
    if None not in (*base.values(), *aa.values()):
        harm_ok = aa["safety.harmful_compliance"] < base["safety.harmful_compliance"]
        over_ok = aa["safety.over_refusal"] <= base["safety.over_refusal"]
        util_ok = aa["utility.benign_acc"] >= base["utility.benign_acc"] - 0.02
        out += [
            "",
            f"Claim check — AlphaAlign (PPO) vs the base: harmful compliance falls **{'yes' if harm_ok else 'no'}** "
            f"({100 * base['safety.harmful_compliance']:.1f} → {100 * aa['safety.harmful_compliance']:.1f}); "
            f"over-refusal does not rise **{'yes' if over_ok else 'no'}** ({100 * base['safety.over_refusal']:.1f}"
            f" → {100 * aa['safety.over_refusal']:.1f}); benign accuracy within 2 points **"
            f"{'yes' if util_ok else 'no'}** ({100 * base['utility.benign_acc']:.1f} → "
            f"{100 * aa['utility.benign_acc']:.1f})."
            + (
                f" AlphaAlign-Zero loses benign utility against AlphaAlign: **"
                f"{'yes' if zero_acc < aa['utility.benign_acc'] else 'no'}** ({100 * zero_acc:.1f} vs "
                f"{100 * aa['utility.benign_acc']:.1f})."
                if zero_acc is not None
                else ""
            ),
        ]

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
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    print(main(quick="--quick" in sys.argv))
