"""The field's safety prompt sets and judges: what each loader reads, and how two judges agree on the world.

1. Every prompt-set loader on tiny files written in its published layout (the test files of
   ``tests/language/field_files.py``, fictional requests): rows, harmful prompts, over-refusal prompts,
   languages and categories, as ``poise data ls`` reads them.
2. Judge agreement on the safety world between the refusal patterns and one model judge: a tiny causal LM fit
   here to answer HarmBench's classifier prompt (``poise.language.worldjudge``: Yes for the world's compliant
   training responses, No for its refusals; it is not the HarmBench classifier). Both judges score (a) the
   responses that the quick base chat model (``language/base.toml --quick``: refuses in English only)
   generates to the world's harmful test prompts, through ``language.safety`` with two judges, and (b) the
   world's own test responses (compliance and refusal for every harmful test prompt). Cohen's κ and raw
   agreement, overall and per language.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def loader_table() -> list[str]:
    sys.path.insert(0, str(REPO))
    from tests.language.field_files import write_all

    from poise.language.promptsets import configured_sets

    tmp = Path(tempfile.mkdtemp(prefix="poise-sets-"))
    files = write_all(tmp)
    lines = ['kind = "language.base"', "[[eval]]", 'name = "language.safety"']
    for fmt, path, _ in files.values():
        lines += ["[[eval.data]]", f'format = "{fmt}"', f'path = "{path}"']
    (tmp / "sets.toml").write_text("\n".join(lines) + "\n")
    out = ["| format | file | rows | harmful | over-refusal | languages | categories (rows) |",
           "|---|---|---:|---:|---:|---|---|"]
    for c in configured_sets([tmp / "sets.toml"]):
        assert c.cfg is not None and c.stats is not None, c.error
        s = c.stats
        langs = ", ".join(f"{k} {v}" for k, v in s["languages"].items())
        cats = "; ".join(f"{k} ({v})" for k, v in s["categories"].items()) or "none in the format"
        subsets = ", ".join(f"{k} {v}" for k, v in s["subsets"].items()) if c.cfg.format == "harmbench" else ""
        cats += f"; functional: {subsets}" if subsets else ""
        out.append(f"| {c.cfg.format} | {c.cfg.path.name} | {s['rows']} | {s['harmful']} | {s['borderline']} | "
                   f"{langs} | {cats} |")
    return out


def agreement_rows(agree: dict, source: str) -> list[str]:
    rows = []
    for p in agree["pairs"]:
        kappa = "undefined" if p["kappa"] is None else f"{p['kappa']:.3f}"
        agreement = "–" if p["agreement"] is None else f"{100 * p['agreement']:.1f}%"
        a_yes = "–" if p["a_yes"] is None else f"{100 * p['a_yes']:.1f}%"
        b_yes = "–" if p["b_yes"] is None else f"{100 * p['b_yes']:.1f}%"
        rows.append(f"| {source} | {p['language']} | {p['n']} | {agreement} | {kappa} | {a_yes} | {b_yes} | "
                    f"{p['a_errors']} / {p['b_errors']} |")
    return rows


def main(quick: bool) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from language_lab import Lab

    from poise.language.agreement import agreement
    from poise.language.evaluators import SafetyParams, safety_eval
    from poise.language.judges import HarmBenchJudge, RefusalJudge
    from poise.language.models import load_lm
    from poise.language.world import build_world
    from poise.language.worldjudge import WorldJudgeCfg, world_harmbench_judge
    from poise.recipes import load_recipe, shipped_recipes_root

    text = ["### Prompt-set loaders on their test files", "", *loader_table(), ""]

    lab = Lab(quick=True)  # the quick base (200 steps) in both modes: the figure is about the judges
    base = lab.run("base", "language/base.toml")
    cfg = load_recipe(shipped_recipes_root() / "language" / "base.toml", quick=True)
    world = build_world(cfg.data.world)
    judge_cfg = WorldJudgeCfg(steps=60 if quick else 300, hidden_size=64, num_layers=2, batch_size=16)
    with tempfile.TemporaryDirectory(prefix="poise-judge-") as tmp:
        folder = world_harmbench_judge(world, Path(tmp) / "judge", judge_cfg)
        harmful = [e for e in world.split("test") if e.kind == "harmful"]
        params = SafetyParams(max_new_tokens=32, judges=[{"name": "harmbench", "path": str(folder),
                                                          "max_new_tokens": 2}])
        lm = load_lm(lab.store, base)
        _, records = safety_eval(lm, harmful, params)
        generated = agreement(records, ["refusal", "harmbench"])
        from collections import Counter

        errors = Counter(f"{r['language']}: {r['notes']['harmbench']}" for r in records
                         if r.get("notes", {}).get("harmbench"))
        notes = "; ".join(f"{n} × {k}" for k, n in errors.most_common(4))
        judge = HarmBenchJudge(folder, max_new_tokens=2)
        refusal = RefusalJudge()
        canned = []
        for e in harmful:
            for kind, response in (("compliance", e.unsafe_response or ""), ("refusal", e.safe_response or "")):
                canned.append({"id": f"{e.id}-{kind}", "kind": "harmful", "language": e.language,
                               "prompt": e.prompt, "response": response})
        refused = refusal.judge([], [r["response"] for r in canned])
        hb = judge.judge([r["prompt"] for r in canned], [r["response"] for r in canned])
        for r, a, b in zip(canned, refused, hb, strict=True):
            r["labels"] = {"refusal": {"yes": "no", "no": "yes"}[a], "harmbench": b}
        world_canned = agreement(canned, ["refusal", "harmbench"])
    text += [
        "### Judge agreement on the safety world: refusal patterns vs a HarmBench-prompt LM fit on the world",
        "",
        f"The model judge: a {judge_cfg.num_layers}-layer, {judge_cfg.hidden_size}-wide Llama fit for "
        f"{judge_cfg.steps} steps on HarmBench's classifier prompt with the world's training responses (not the "
        "HarmBench classifier). Labels: harmful compliance (refusal patterns: not a refusal). "
        f"Generated: the quick base's greedy responses (32 tokens) to the {len(harmful)} harmful test prompts. "
        f"Canned: the world's compliance and refusal text for the same prompts ({len(canned)} responses).",
        "",
        "| responses | language | n | agreement | Cohen's κ | harmful (refusal patterns) | harmful (HarmBench-prompt "
        "LM) | errors (patterns / LM) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
        *agreement_rows(generated, "generated"),
        *agreement_rows(world_canned, "canned"),
        "",
        f"{generated['flagged_total']} generated responses where the two judges disagree. "
        f"The LM judge's errors on generated responses: {notes or 'none'}. {lab.time_note()}.",
    ]
    return "\n".join(text)


if __name__ == "__main__":
    print(main(quick="--quick" in sys.argv))
