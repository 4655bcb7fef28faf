"""``merging.mix_vs_merge``: mix the data, or merge models? The experiment on the safety world.

From one base chat model, with one SFT recipe (``model.sft``, a ``language.sft`` recipe) varied only in its
``[mix]`` table and seeded with this recipe's seed:

* **data mix** — one SFT run on general + safety data in every language (``mix.objective = "mix"``);
* **objective-based merging** — one SFT run on general data only, one on safety data only, merged;
* **language-based merging** — one SFT run per language (general + safety data in that language), merged.

Each merge method in ``model.methods`` (linear, SLERP, TIES, DARE-TIES, …) is applied to each group that it
fits (SLERP interpolates exactly two models, so it merges the objective pair only) as a ``merging.merge``
child run, scored with the SFT recipe's evaluators (``language.safety``: benign accuracy, harmful
compliance per language and harm scope, over-refusal). Choices, as recipe fields: source weights are
equal and sum to 1 (``1/n`` each; DARE-TIES and task arithmetic do not normalise, so this keeps the summed
task vector at the scale of one fine-tune); TIES and DARE use ``model.density``; task vectors are taken
against the base. The ``mix_vs_merge`` JSON table (one row per model, trained or merged) feeds the report and
the bench. Every piece is an ordinary run, reused by config hash, so a killed experiment resumes.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from poise.context import RunContext
from poise.errors import UserError
from poise.merging.merge import child_merge
from poise.merging.spec import REGISTRY, Method
from poise.recipes import ModelCfg, Recipe, kind
from poise.store import RunRecord

Group = Literal["objective", "language"]


class MixMergeModelCfg(ModelCfg):
    """The SFT recipe every trained model comes from, the merge methods, and the groups to merge."""

    name: str = "mix-vs-merge"
    sft: str = Field("sft.toml", description="language.sft recipe; only its [mix] and seed are varied")
    sft_set: dict[str, Any] = Field(default_factory=dict, description="--set overrides of every SFT run")
    methods: list[Method] = Field(
        default_factory=lambda: ["linear", "slerp", "ties", "dare_ties"], min_length=1
    )
    groups: list[Group] = Field(default_factory=lambda: ["objective", "language"], min_length=1)
    density: float = Field(0.5, gt=0.0, le=1.0, description="TIES / DARE: share of task-vector entries kept")
    languages: list[str] | None = Field(None, description="per-language models; default: the world's languages")


class MixMergeRecipe(Recipe):
    model: MixMergeModelCfg = Field(default_factory=MixMergeModelCfg)


def _metrics(ctx: RunContext, run: RunRecord) -> dict[str, float]:
    finals = ctx.final_metrics(run)
    return {k: v.value for k, v in sorted(finals.items()) if k.split(".")[0] in ("utility", "safety")}


@kind("merging.mix_vs_merge", MixMergeRecipe)
def run(cfg: MixMergeRecipe, ctx: RunContext) -> None:
    """Train the data mix and the models to merge, merge them every way asked, and table the scores."""
    m = cfg.model
    sft_cfg = ctx.recipe(m.sft, field="model.sft", overrides={**m.sft_set, "seed": cfg.seed})
    if sft_cfg.kind != "language.sft":
        raise UserError(f"expected a language.sft recipe (got kind {sft_cfg.kind})", where=cfg.source,
                        field="model.sft")
    languages = m.languages or list(sft_cfg.data.world.languages)
    base = ctx.dependency(sft_cfg.model.base, field="model.sft", overrides=sft_cfg.model.base_set or None)

    def sft(label: str, **mix: Any) -> RunRecord:
        over = {**m.sft_set, "seed": cfg.seed, "name": f"{cfg.display_name} {label}",
                **{f"mix.{k}": v for k, v in mix.items()}}
        ctx.info(f"SFT {label}")
        return ctx.dependency(m.sft, field="model.sft", overrides=over)

    rows: list[dict[str, Any]] = [{"group": "base", "method": "-", "label": "base", "run": base.id}]
    rows.append({"group": "data mix", "method": "-", "label": "mix",
                 "run": sft("mix", objective="mix", languages=None).id})
    groups: dict[str, list[tuple[str, RunRecord]]] = {}
    if "objective" in m.groups:
        groups["objective"] = [(o, sft(o, objective=o, languages=None)) for o in ("general", "safety")]
    if "language" in m.groups:
        groups["language"] = [(lang, sft(lang, objective="mix", languages=[lang])) for lang in languages]
    for group, members in groups.items():
        for label, r in members:
            rows.append({"group": f"{group} (single)", "method": "-", "label": label, "run": r.id})

    for group, members in groups.items():
        refs = [f"run:{r.id}" for _, r in members]
        for method in m.methods:
            spec = REGISTRY[method]
            if len(refs) < spec.min_models or (spec.max_models is not None and len(refs) > spec.max_models):
                ctx.info(f"{group}: {method} merges {spec.models_text()} models, not {len(refs)}; left out")
                continue
            params: dict[str, Any] = {"method": method}
            if spec.interpolate == "t":
                params["t"] = 0.5
            elif spec.weights:
                params["weights"] = [1.0 / len(refs)] * len(refs)
            if "density" in spec.params:
                params["density"] = m.density
            if spec.base == "required":
                params["base"] = f"run:{base.id}"
            merged = child_merge(ctx, cfg, f"{cfg.display_name} {group} {method}",
                                 {"models": refs, "evaluate": True, **params},
                                 f"{cfg.source or 'mix-vs-merge'} ({group} {method})")
            rows.append({"group": f"{group} merge", "method": method, "label": "+".join(lab for lab, _ in members),
                         "run": merged.id})

    for row in rows:
        rec = ctx.run_record(row["run"])
        row["metrics"] = _metrics(ctx, rec)
        acc, harm = row["metrics"].get("utility.benign_acc"), row["metrics"].get("safety.harmful_compliance")
        ctx.info(f"{row['group']:>20} {row['method']:>10} {row['label']}: benign acc {acc}, harmful {harm}")
    ctx.save_file(
        "mix_vs_merge",
        json.dumps({"languages": languages, "methods": list(m.methods), "rows": rows}, indent=2,
                   sort_keys=True).encode(),
        "application/json",
    )
