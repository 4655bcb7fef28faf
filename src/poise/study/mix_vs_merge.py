"""``study.mix_vs_merge``: mix the data, or merge models? The experiment on the safety world, as the paper ran it.

A study, because it orchestrates other kinds through child runs: language training runs (``language.sft``
and ``language.dpo`` recipes, named by the study recipe and varied only in their ``[mix]`` table and seed)
and ``merging.merge`` runs; it imports neither domain. For each training stage in ``model.stages`` (SFT,
DPO) and each seed:

* **data mix** — one run on general + safety data in every language (``mix.objective = "mix"``);
* **objective-based merging** — one run on general data only and one on safety data only, merged;
* **language-based merging** — one run per language (general + safety data in that language), merged.

Each merge method in ``model.methods`` is applied to each group it fits (SLERP interpolates exactly two
models, so it merges the objective pair only). **Merge weights are searched** on the validation split:
for each λ in ``model.grid`` the group's *focus* model (safety for the objective group, the first language
for the language group) gets weight λ and the others share 1 − λ equally; the merge of the tuning seed's
models (``model.seeds[0]``) is scored on ``val`` and the λ with the best ``model.objective`` (a weighted sum
of metrics) is kept. That λ then merges every seed's models, scored once on ``test``. Without a grid the
weights are equal and nothing is searched. Task vectors are taken against the stage's starting model.

The ``mix_vs_merge`` JSON table has one row per model (mean and 95 % interval over seeds of every safety
and utility metric, and of the objective) and, per stage and group, the best merge against the data mix:
the paired interval of their difference in the objective and a held / not held / inconclusive verdict for
"merging beats the mix". Every piece is an ordinary run, reused by config hash, so a killed study resumes.

The kind was first registered as ``merging.mix_vs_merge``; that name stays an alias.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from poise.context import RunContext
from poise.errors import UserError
from poise.recipes import ModelCfg, Recipe, build_recipe
from poise.registry import get_kind, kind
from poise.stats import difference, mean_interval, verdict
from poise.store import RunRecord

Group = Literal["objective", "language"]
Stage = Literal["sft", "dpo"]
STAGE_KINDS = {"sft": "language.sft", "dpo": "language.dpo"}
SHOWN_AXES = ("utility", "safety")


class MixMergeModelCfg(ModelCfg):
    """The recipes every trained model comes from, the merge methods, the groups, the weight search."""

    name: str = "mix-vs-merge"
    sft: str = Field("sft.toml", description="language.sft recipe; only its [mix] and seed are varied")
    sft_set: dict[str, Any] = Field(default_factory=dict, description="--set overrides of every SFT run")
    dpo: str = Field("language/dpo.toml", description="language.dpo recipe (stage dpo); [mix] and seed varied")
    dpo_set: dict[str, Any] = Field(default_factory=dict, description="--set overrides of every DPO run")
    stages: list[Stage] = Field(default_factory=lambda: ["sft"], min_length=1,
                                description="training stages whose checkpoints are mixed and merged")
    methods: list[str] = Field(default_factory=lambda: ["linear", "slerp", "ties", "dare_ties"], min_length=1,
                               description="merge methods (poise merge -h lists them)")
    groups: list[Group] = Field(default_factory=lambda: ["objective", "language"], min_length=1)
    density: float = Field(0.5, gt=0.0, le=1.0, description="TIES / DARE / ...: share of task-vector entries kept")
    languages: list[str] | None = Field(None, description="per-language models; default: the world's languages")
    grid: list[Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]] | None = Field(
        None, min_length=1, description="weights of the focus model searched on val, each in [0, 1]; "
        "none: equal weights")
    seeds: list[int] | None = Field(None, min_length=1, max_length=50,
                                    description="seeds of every trained model (default: the recipe's seed); "
                                    "the first one tunes the weights")
    objective: dict[str, float] = Field(
        default_factory=lambda: {"utility.benign_acc": 1.0, "safety.harmful_compliance": -1.0,
                                 "safety.over_refusal": -1.0},
        min_length=1, description="AXIS.METRIC = coefficient: the weight search maximises this sum on val")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("expected distinct seeds")
        return v

    @field_validator("objective")
    @classmethod
    def _objective(cls, v: dict[str, float]) -> dict[str, float]:
        for k, c in v.items():
            if k.count(".") < 1 or k.split(".", 1)[0] not in SHOWN_AXES:
                raise ValueError(f"expected utility.METRIC or safety.METRIC keys (got {k!r})")
            if not math.isfinite(c):
                raise ValueError(f"expected a finite coefficient for {k} (got {c})")
        return v


class MixMergeRecipe(Recipe):
    model: MixMergeModelCfg = Field(default_factory=MixMergeModelCfg)

    def preflight(self) -> None:
        """Every merge method is one ``merging.merge`` knows, before any model trains."""
        super().preflight()
        merge = get_kind("merging.merge", where=self.source).config
        for i, method in enumerate(self.model.methods):
            merge.weighted(method, ["a", "b"], [0.5, 0.5], "base", where=str(self.source or "mix-vs-merge"),
                           field=f"model.methods[{i}]")


def _metrics(ctx: RunContext, run: RunRecord) -> dict[str, float]:
    finals = ctx.final_metrics(run)
    return {k: v.value for k, v in sorted(finals.items()) if k.split(".")[0] in SHOWN_AXES}


def _score(objective: dict[str, float], metrics: dict[str, float]) -> float:
    if any(k not in metrics for k in objective):
        return math.nan
    return math.fsum(c * metrics[k] for k, c in objective.items())


def focus_weights(n: int, focus: int, lam: float | None) -> list[float]:
    """Weights of a group of ``n`` models: ``lam`` on the focus model, 1 − lam shared by the others;
    equal weights when ``lam`` is None."""
    if lam is None or n == 1:
        return [1.0 / n] * n
    rest = (1.0 - lam) / (n - 1)
    return [lam if i == focus else rest for i in range(n)]


def _summary(values: dict[int, float]) -> dict[str, Any]:
    return {"values": {str(s): v for s, v in values.items()},
            "interval": mean_interval(list(values.values())).as_dict()}


@kind("study.mix_vs_merge", MixMergeRecipe)
def run(cfg: MixMergeRecipe, ctx: RunContext) -> None:
    """Train the data mix and the models to merge, search merge weights on val, score seeds on test."""
    m = cfg.model
    seeds = m.seeds or [cfg.seed]
    where = cfg.source or "mix-vs-merge"
    merge_cfg = get_kind("merging.merge", where=where).config
    recipes = {"sft": (m.sft, m.sft_set), "dpo": (m.dpo, m.dpo_set)}
    first_cfg = ctx.recipe(m.sft if "sft" in m.stages else m.dpo, field=f"model.{m.stages[0]}")
    languages = m.languages or list(first_cfg.data.world.languages)

    def trained(stage: str, seed: int, label: str, **mix: Any) -> RunRecord:
        ref, sets = recipes[stage]
        over = {**sets, "seed": seed, "name": f"{cfg.display_name} {stage} {label} s{seed}",
                **{f"mix.{k}": v for k, v in mix.items()}}
        ctx.info(f"{stage.upper()} {label} (seed {seed})")
        return ctx.dependency(ref, field=f"model.{stage}", overrides=over)

    def merged(stage: str, group: str, method: str, refs: list[str], weights: list[float], base: str,
               split: str, tag: str) -> RunRecord | None:
        model = merge_cfg.weighted(method, refs, weights, base, density=m.density, where=where)
        if model is None:
            return None
        name = f"{cfg.display_name} {stage} {group} {method} {tag}"
        child = {"kind": "merging.merge", "name": name, "seed": cfg.seed, "device": cfg.device,
                 "cost": cfg.cost.model_dump(mode="json"), "tour": cfg.tour, "eval_split": split,
                 "model": {**model, "evaluate": True}}
        return ctx.child_run(build_recipe(child, where=f"{where} ({name})", quick=ctx.quick), field=name)

    rows: list[dict[str, Any]] = []
    verdicts: list[dict[str, Any]] = []
    for stage in m.stages:
        ref, _ = recipes[stage]
        stage_cfg = ctx.recipe(ref, field=f"model.{stage}", overrides={**recipes[stage][1], "seed": seeds[0]})
        if stage_cfg.kind != STAGE_KINDS[stage]:
            raise UserError(f"expected a {STAGE_KINDS[stage]} recipe (got kind {stage_cfg.kind})", where=where,
                            field=f"model.{stage}")
        start = ctx.dependency(stage_cfg.model.base, field=f"model.{stage}",
                               overrides=stage_cfg.model.base_set or None)
        base_ref = f"run:{start.id}"
        # trained models per seed: the mix and each group's members (focus model's index in the group)
        members: dict[str, tuple[list[str], int]] = {}
        if "objective" in m.groups:
            members["objective"] = (["general", "safety"], 1)
        if "language" in m.groups:
            members["language"] = (list(languages), 0)
        runs: dict[int, dict[str, RunRecord]] = {}
        for seed in seeds:
            got = {"mix": trained(stage, seed, "mix", objective="mix", languages=None)}
            if "objective" in members:
                got.update({o: trained(stage, seed, o, objective=o, languages=None) for o in ("general", "safety")})
            if "language" in members:
                got.update({lang: trained(stage, seed, lang, objective="mix", languages=[lang]) for lang in languages})
            runs[seed] = got

        def row(group: str, method: str, label: str, per_seed: dict[int, RunRecord], *, stage: str = stage,
                **extra: Any) -> dict[str, Any]:
            metrics: dict[str, dict[int, float]] = {}
            scores: dict[int, float] = {}
            for seed, rec in per_seed.items():
                ms = _metrics(ctx, rec)
                for k, v in ms.items():
                    metrics.setdefault(k, {})[seed] = v
                scores[seed] = _score(m.objective, ms)
            out = {"stage": stage, "group": group, "method": method, "label": label,
                   "runs": {str(s): r.id for s, r in per_seed.items()}, "score": _summary(scores),
                   "metrics": {k: _summary(v) for k, v in sorted(metrics.items())}, **extra}
            rows.append(out)
            ctx.info(f"{stage} {group:>9} {method:>12} {label}: objective "
                     f"{mean_interval(list(scores.values())).format()}")
            return out

        mix_row = row("data mix", "-", "mix", {s: runs[s]["mix"] for s in seeds})
        for group, (labels, focus) in members.items():
            for label in labels:
                row(f"{group} (single)", "-", label, {s: runs[s][label] for s in seeds})
            best: dict[str, Any] | None = None
            for method in m.methods:
                tune_refs = [f"run:{runs[seeds[0]][lab].id}" for lab in labels]
                search = []
                for lam in (m.grid or [None]):
                    if m.grid is None:
                        search.append({"weight": None, "score": math.nan, "run": None})
                        break
                    w = focus_weights(len(labels), focus, lam)
                    rec = merged(stage, group, method, tune_refs, w, base_ref, "val", f"w={lam:g} val")
                    if rec is None:
                        break
                    search.append({"weight": lam, "score": _score(m.objective, _metrics(ctx, rec)), "run": rec.id})
                if not search:
                    ctx.info(f"{stage} {group}: {method} cannot merge {len(labels)} models; left out")
                    continue
                finite = [p for p in search if math.isfinite(p["score"])]
                chosen = max(finite, key=lambda p: p["score"])["weight"] if finite else search[0]["weight"]
                weights = focus_weights(len(labels), focus, chosen)
                per_seed = {}
                for seed in seeds:
                    refs = [f"run:{runs[seed][lab].id}" for lab in labels]
                    tag = "equal" if chosen is None else f"w={chosen:g}"
                    rec = merged(stage, group, method, refs, weights, base_ref, "test", f"{tag} s{seed}")
                    assert rec is not None
                    per_seed[seed] = rec
                val = max((p["score"] for p in search if math.isfinite(p["score"])), default=math.nan)
                r = row(f"{group} merge", method, "+".join(labels), per_seed, weight=chosen,
                        focus=labels[focus], weights=weights, search=search, val_score=val)
                # the best merge of a group is chosen on val when weights were searched (never on test)
                key = (lambda x: x["val_score"]) if m.grid is not None else (lambda x: x["score"]["interval"]["mean"])
                if best is None or key(r) > key(best):
                    best = r
            if best is not None:
                a = {int(s): v for s, v in best["score"]["values"].items()}
                b = {int(s): v for s, v in mix_row["score"]["values"].items()}
                diff = difference(a, b)
                verdicts.append({"stage": stage, "group": group, "method": best["method"], "weight": best["weight"],
                                 "claim": f"{group}-based merging ({stage}) beats the data mix",
                                 "difference": diff.as_dict(), "verdict": verdict(diff, "greater")})
                ctx.info(f"{stage} {group}: best merge {best['method']} (weight {best['weight']}) vs mix: "
                         f"{verdicts[-1]['verdict']}")
    ctx.save_file(
        "mix_vs_merge",
        json.dumps({"languages": languages, "methods": list(m.methods), "stages": list(m.stages),
                    "grid": m.grid, "seeds": seeds, "objective": m.objective, "rows": rows, "best": verdicts},
                   indent=1, sort_keys=True).encode(),
        "application/json",
    )


# the kind's first name, kept so that recipes written for it still run
kind("merging.mix_vs_merge", MixMergeRecipe)(run)
