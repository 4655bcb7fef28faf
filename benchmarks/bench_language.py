"""Language safety lab bench: base vs SFT vs DPO vs DPO(SFT) per language and harm scope, and two transfers.

The multilingual alignment prism's questions, on the safety world and the tiny Llama base chat model:
which of SFT, DPO and DPO after SFT gives the best safety–utility trade-off; does training on global harms
lower local harms (and the reverse); does training in every language lower harm in every language compared
with English-only training? All rows are the shipped recipes (``language/sft.toml``, ``dpo.toml``,
``dpo-sft.toml``) with their ``[mix]`` varied; each seed trains its own SFT, DPO and DPO(SFT) (DPO(SFT)
starts from the SFT of the same seed), on one shared base model.
"""

from __future__ import annotations

import time

from language_lab import Lab
from language_lab import seeds as bench_seeds

MAIN = ["base", "SFT", "DPO", "DPO(SFT)"]
TRANSFER = ["base", "SFT global harms only", "SFT local harms only", "SFT"]
MULTI = ["base", "SFT English only", "SFT"]


def main_rows(seed: int) -> list[tuple[str, str, dict]]:
    s = {"seed": seed}
    return [
        ("SFT", "language/sft.toml", s),
        ("DPO", "language/dpo.toml", s),
        ("DPO(SFT)", "language/dpo-sft.toml", {**s, "model.base_set": {"seed": seed}}),
    ]


def transfer_rows(seed: int) -> list[tuple[str, str, dict]]:
    s = {"seed": seed}
    return [
        ("SFT global harms only", "language/sft.toml", {**s, "mix.harms": ["global"]}),
        ("SFT local harms only", "language/sft.toml", {**s, "mix.harms": ["local"]}),
        ("SFT English only", "language/sft.toml", {**s, "mix.languages": ["en"]}),
    ]


def tradeoff(lab: Lab, label: str) -> float | None:
    """Mean of benign accuracy, 1 − harmful compliance and 1 − over-refusal (all three equally weighted)."""
    acc, harm, over = (lab.mean(label, k) for k in
                       ("utility.benign_acc", "safety.harmful_compliance", "safety.over_refusal"))
    if None in (acc, harm, over):
        return None
    return (acc + (1 - harm) + (1 - over)) / 3


def main(quick: bool) -> str:
    seeds = bench_seeds(quick)
    transfer_seeds = bench_seeds(quick, "POISE_BENCH_TRANSFER_SEEDS", seeds)
    lab = Lab(quick)
    t0 = time.perf_counter()
    lab.run("base", "language/base.toml")
    for seed in seeds:
        for label, ref, over in main_rows(seed):
            lab.run(label, ref, over)
    for seed in transfer_seeds:
        for label, ref, over in transfer_rows(seed):
            lab.run(label, ref, over)
    took = time.perf_counter() - t0

    out = [
        f"Safety world (6 languages), tiny Llama base chat model shared by every row; {len(seeds)} seed(s)"
        + (" with the recipes' [quick] overrides (smoke test)" if quick else ", the recipes' budgets")
        + ". Rates in % (mean ± std over seeds); harmful compliance and over-refusal: lower is better; benign "
        "accuracy: higher is better. Time and energy: the training run alone (DPO(SFT) excludes its SFT).",
        "",
        *lab.headline_table(MAIN),
        "",
        "Per language: harmful compliance / over-refusal / benign accuracy (%).",
        "",
        *lab.language_table(MAIN),
    ]
    scores = {label: tradeoff(lab, label) for label in MAIN}
    ranked = sorted((v, k) for k, v in scores.items() if v is not None)
    if ranked:
        best = ranked[-1][1]
        out += [
            "",
            "Trade-off score (mean of benign accuracy, 1 − harmful compliance, 1 − over-refusal): "
            + ", ".join(f"{k} {100 * v:.1f}" for v, k in reversed(ranked))
            + f". Claim check — DPO(SFT) has the best trade-off: **{'yes' if best == 'DPO(SFT)' else 'no'}** "
            f"(best: {best}).",
        ]

    out += ["", f"Transfer between harm scopes: trained on one scope, tested on both (%; {len(transfer_seeds)} "
            "seed(s) for the one-scope rows).", "",
            *lab.headline_table(TRANSFER, costs=False)]
    base_g, base_l = lab.mean("base", "safety.harmful_compliance_global"), lab.mean(
        "base", "safety.harmful_compliance_local")
    g_on_l = lab.mean("SFT global harms only", "safety.harmful_compliance_local")
    l_on_g = lab.mean("SFT local harms only", "safety.harmful_compliance_global")
    if None not in (base_g, base_l, g_on_l, l_on_g):
        out += [
            "",
            f"Claim check — training on global harms lowers local harms: **{'yes' if g_on_l < base_l else 'no'}** "
            f"(local compliance {100 * base_l:.1f} → {100 * g_on_l:.1f}); training on local harms lowers global "
            f"harms: **{'yes' if l_on_g < base_g else 'no'}** (global {100 * base_g:.1f} → {100 * l_on_g:.1f}).",
        ]

    out += ["", f"Harmful compliance per language: English-only vs multilingual SFT (%; {len(transfer_seeds)} "
            "seed(s) for English-only).", "",
            *lab.language_table(MULTI, what="harm")]
    langs = lab.languages()
    multi = {lang: lab.mean("SFT", f"safety.harmful_compliance_{lang}") for lang in langs}
    en = {lang: lab.mean("SFT English only", f"safety.harmful_compliance_{lang}") for lang in langs}
    base = {lang: lab.mean("base", f"safety.harmful_compliance_{lang}") for lang in langs}
    if langs and all(v is not None for d in (multi, en, base) for v in d.values()):
        harmful_in_base = [lang for lang in langs if base[lang] > 0]
        lowered = [lang for lang in harmful_in_base if multi[lang] < base[lang]]
        raised = [lang for lang in langs if multi[lang] > base[lang]]
        not_above_en = [lang for lang in langs if multi[lang] <= en[lang]]
        ok = len(lowered) == len(harmful_in_base) and not raised
        out += [
            "",
            f"Claim check — multilingual SFT lowers harm in every language: **{'yes' if ok else 'no'}** (lower than "
            f"the base in {len(lowered)} of the {len(harmful_in_base)} languages where the base complies at all"
            f"{'' if not raised else ', higher in ' + ', '.join(raised)}; at or below English-only SFT in "
            f"{len(not_above_en)} of {len(langs)} — English-only SFT leaves every other language as the base was).",
        ]
    if lab.missing:
        out += ["", f"Not measured (recipe missing): {', '.join(sorted(set(lab.missing)))}."]
    out += ["", f"{lab.time_note()}; this invocation {took:.0f} s."]
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    print(main(quick="--quick" in sys.argv))
