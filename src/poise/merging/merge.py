"""``merging.merge``: merge models into a new artifact whose lineage the store keeps.

A merge is a run like any other (kind ``merging.merge``), so it sits in the store next to the runs it
came from: its config names the sources and parameters, its ``model`` artifact carries the first
source's metadata plus a ``merge`` entry (method, parameters, seed, each source's run and SHA-256),
and a ``lineage`` JSON artifact records the same for reports and for merges written outside the store.

Sources are ``run:ID`` (or a bare run ID), a recipe file (trained first, or reused by config hash;
``{ ref = "x.toml", set = { seed = 1 } }`` adds overrides), a ``.safetensors`` file or a Hugging Face
model folder. When every source is a run, the merge is stored as this run's ``model`` artifact and,
if the first source's kind can rebuild its model from weights, scored with the sources' evaluators;
otherwise it is written to ``model.output`` (a folder, or one file ending in ``.safetensors``).

Resuming: a merge has no steps to checkpoint. It is written under a temporary name and moved into
place (or into the store) only when complete, so a killed merge leaves nothing behind and a resumed
run merges again from the start (seconds). Sources that are recipes resume their own training.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from poise.context import RunContext
from poise.errors import UserError
from poise.evaluators import run_evaluators
from poise.merging.engine import DEFAULT_SHARD_BYTES, MergeResult, merge_files
from poise.merging.spec import METHODS, REGISTRY, MergeParams
from poise.recipes import EvalEntry, ModelCfg, Recipe, Section, build_recipe, kind
from poise.registry import get_rebuilder
from poise.store import RunRecord


class SourceRef(Section):
    """A model given as a recipe file (or ``run:ID``) with ``--set``-style overrides."""

    ref: str = Field(min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)


Ref = str | SourceRef


class MergeModelCfg(ModelCfg, MergeParams):
    """The models to merge, the base, the method and its parameters, and where the result goes."""

    models: list[Ref] = Field(min_length=1)
    base: Ref | None = None
    output: Path | None = Field(
        None, description="also write the merge here (folder, or file ending .safetensors)"
    )
    force: bool = Field(False, description="replace an existing output")
    evaluate: bool | None = Field(
        None, description="score with the sources' evaluators; default: when possible"
    )
    shard_gb: float = Field(DEFAULT_SHARD_BYTES / 1024**3, gt=0.0, description="largest output shard, GiB")

    @model_validator(mode="after")
    def _fits(self) -> MergeModelCfg:
        try:
            self.check(len(self.models), self.base is not None)
        except UserError as e:
            raise ValueError(f"{e.field}: {e.message}" if e.field else e.message) from None
        return self

    def preflight(self) -> None:
        """An output path is free (or ``force``) before a run starts."""
        if self.output is not None and self.output.exists() and not self.force:
            raise UserError("already exists; expected a new path (or --force)", where=self.output)


class MergeRecipe(Recipe):
    model: MergeModelCfg

    @classmethod
    def method_names(cls) -> tuple[str, ...]:
        return METHODS

    @classmethod
    def weighted(
        cls, method: str, models: list[str], weights: list[float], base: str | None, *,
        density: float | None = None, where: str = "merge", field: str = "methods",
    ) -> dict[str, Any] | None:
        """The ``model`` table of a merge of ``models`` with ``weights`` (summing to 1), against ``base``
        when the method takes one, for callers that know no method (a study asks the kind registry for
        this class): the method table says whether two weights become SLERP's t, whether the base and
        ``density`` go in. None when the method cannot merge this many models."""
        spec = REGISTRY.get(method)
        if spec is None:
            raise UserError(f"unknown merge method {method!r}; expected one of: {', '.join(METHODS)}",
                            where=where, field=field)
        n = len(models)
        if n < spec.min_models or (spec.max_models is not None and n > spec.max_models):
            return None
        out: dict[str, Any] = {"method": method, "models": list(models)}
        if spec.interpolate == "t":
            total = weights[0] + weights[1]
            out["t"] = 0.5 if abs(total) < 1e-12 else weights[1] / total
        elif spec.weights:
            out["weights"] = [float(w) for w in weights]
        if base is not None and spec.base != "none":
            out["base"] = base
        if density is not None and "density" in spec.params:
            out["density"] = density
        return out


@dataclass
class Resolved:
    """A source ready to read: its label, its safetensors path, and its run when it came from the store."""

    label: str
    path: Path
    run: RunRecord | None = None
    sha256: str | None = None
    meta: dict[str, Any] | None = None


def ref_label(ref: Ref) -> str:
    return ref if isinstance(ref, str) else ref.ref + (f" {ref.set}" if ref.set else "")


def resolve(ctx: RunContext, ref: Ref, field: str) -> Resolved:
    """Turn a source reference into a readable path (training a recipe first when needed)."""
    label = ref_label(ref)
    if isinstance(ref, SourceRef):
        return _from_run(ctx, ctx.dependency(ref.ref, field=field, overrides=ref.set), label)
    if ref.startswith("run:"):
        return _from_run(ctx, ctx.dependency(ref, field=field), label)
    candidates = [Path(ref)]
    if ctx.cfg.source is not None and not Path(ref).is_absolute():
        candidates.append(ctx.cfg.source.parent / ref)
    for p in candidates:
        if p.exists():
            if p.is_file() and p.suffix == ".toml":
                return _from_run(ctx, ctx.dependency(str(p), field=field), label)
            return Resolved(label, p)
    if ref.endswith(".toml"):  # a shipped recipe
        return _from_run(ctx, ctx.dependency(ref, field=field), label)
    try:
        run = ctx.run_record(ref)
    except UserError:
        raise UserError(
            f"no file, folder or run {ref!r}; expected run:ID, a recipe file, a .safetensors file or "
            "an HF model folder",
            where=ctx.cfg.source or "merge",
            field=field,
        ) from None
    return _from_run(ctx, ctx.dependency(f"run:{run.id}", field=field), label)


def _from_run(ctx: RunContext, run: RunRecord, label: str) -> Resolved:
    art = ctx.artifact(run, "model")
    if art.media != "safetensors":
        raise UserError(f"artifact 'model' of run {run.id} is {art.media}; expected safetensors", where=label)
    digest = hashlib.sha256()
    with open(art.path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    if digest.hexdigest() != art.sha256:
        raise UserError(f"artifact file is corrupt (SHA-256 mismatch): {art.path}", where=f"run {run.id}")
    return Resolved(
        label if label.startswith("run:") else f"{label} [run:{run.id}]", art.path, run, art.sha256, art.meta
    )


def _lineage(
    cfg: MergeRecipe, params: MergeParams, models: list[Resolved], base: Resolved | None
) -> dict[str, Any]:
    def entry(r: Resolved) -> dict[str, Any]:
        d: dict[str, Any] = {"label": r.label, "path": str(r.path)}
        if r.run is not None:
            d.update(run=r.run.id, kind=r.run.kind, name=r.run.name, sha256=r.sha256)
        return d

    return {
        "method": params.method,
        "params": params.model_dump(mode="json"),
        "seed": cfg.seed,
        "models": [entry(r) for r in models],
        "base": entry(base) if base else None,
    }


def _stats(result: MergeResult) -> dict[str, Any]:
    return {
        "tensors": result.tensors,
        "merged_tensors": result.merged,
        "bytes": result.bytes,
        "seconds": result.seconds,
    }


@kind("merging.merge", MergeRecipe)
def run(cfg: MergeRecipe, ctx: RunContext) -> None:
    """Merge models with any method of the method table into an artifact with its lineage."""
    m = cfg.model
    models = [resolve(ctx, r, f"model.models[{i}]") for i, r in enumerate(m.models)]
    base = resolve(ctx, m.base, "model.base") if m.base is not None else None
    params = MergeParams.model_validate(m.model_dump(include=set(MergeParams.model_fields)))
    sources = [*models, *([base] if base else [])]
    in_store = all(r.run is not None for r in sources)
    if not in_store and m.output is None:
        raise UserError(
            "merging files or HF folders needs an output (-o OUT / model.output)",
            where=cfg.source or "merge",
            field="model.output",
        )
    if m.output is not None and m.output.exists() and not m.force:
        raise UserError("already exists; expected a new path (or --force)", where=m.output)
    shard = int(m.shard_gb * 1024**3)
    labels = [r.label for r in sources]
    with ctx.progress(f"merge {m.method} [{ctx.run_id[:6]}]", None) as bar:

        def progress(done: int, total: int) -> None:
            bar.update(done, total)

        lineage = _lineage(cfg, params, models, base)
        if in_store:
            meta = {**{k: v for k, v in (models[0].meta or {}).items() if k != "merge"}, "merge": lineage}
            tmp = ctx.incoming_path(".safetensors")
            result = merge_files(
                [r.path for r in models],
                tmp,
                base=base.path if base else None,
                params=params,
                seed=cfg.seed,
                labels=labels,
                progress=progress,
                metadata={"poise": json.dumps(meta, sort_keys=True, default=str)},
                phase=ctx.phase,
            )
            art = ctx.adopt_file("model", tmp, "safetensors", meta)
            lineage = {
                **lineage,
                **_stats(result),
                "artifact": {"name": "model", "sha256": art.sha256, "path": str(art.path)},
            }
            if m.output is not None:
                lineage["output"] = str(_export(art.path, m.output, lineage, m.force))
        else:
            result = merge_files(
                [r.path for r in models],
                m.output,
                base=base.path if base else None,
                params=params,
                seed=cfg.seed,
                labels=labels,
                max_shard_bytes=shard,
                force=m.force,
                lineage={"run": ctx.run_id},
                progress=progress,
                phase=ctx.phase,
            )
            lineage = {
                **lineage,
                **_stats(result),
                "output": str(result.output),
                "files": [str(f) for f in result.files],
            }
    ctx.info(
        f"merged {result.merged} of {result.tensors} tensors ({result.bytes / 1e6:.1f} MB) in "
        f"{result.seconds:.2f} s with {m.method}"
    )
    metrics = evaluate_merge(cfg, ctx, models) if in_store else {}
    lineage["metrics"] = metrics
    ctx.save_file(
        "lineage",
        json.dumps(lineage, indent=2, sort_keys=True).encode(),
        "application/json",
        {"method": m.method},
    )


def child_merge(ctx: RunContext, cfg: Recipe, name: str, model: dict[str, Any], where: str) -> RunRecord:
    """A ``merging.merge`` run that ``cfg``'s run asks for (seed, device, costs inherited), reused when done."""
    child = {
        "kind": "merging.merge",
        "name": name,
        "seed": cfg.seed,
        "device": cfg.device,
        "cost": cfg.cost.model_dump(mode="json"),
        "tour": cfg.tour,
        "model": model,
    }
    recipe = build_recipe(child, where=where, quick=ctx.quick)
    return ctx.child_run(recipe, field=name)


def _export(artifact: Path, output: Path, lineage: dict[str, Any], force: bool) -> Path:
    """Copy a stored merge to ``output``: one file, or a folder with ``model.safetensors`` and its lineage."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if output.suffix == ".safetensors":
            shutil.copyfile(artifact, tmp)
        else:
            tmp.mkdir()
            shutil.copyfile(artifact, tmp / "model.safetensors")
            (tmp / "poise-merge.json").write_text(
                json.dumps({"poise": lineage}, indent=2, sort_keys=True) + "\n"
            )
        if output.exists() and force:
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        tmp.rename(output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    return output


def eval_entries(runs: list[RunRecord]) -> list[EvalEntry]:
    """The sources' ``[[eval]]`` entries, each once, in order."""
    seen, out = set(), []
    for r in runs:
        for e in r.config.get("eval", []):
            key = json.dumps(e, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(EvalEntry.model_validate(e))
    return out


def evaluate_merge(
    cfg: MergeRecipe, ctx: RunContext, models: list[Resolved], *, required: bool | None = None
) -> dict[str, float]:
    """Score this run's merged ``model`` with its sources' evaluators, on the first source's data."""
    want = cfg.model.evaluate if required is None else required
    if want is False:
        return {}
    first = models[0].run
    assert first is not None
    try:
        rebuild = get_rebuilder(first.kind, where=f"run {first.id}")
    except UserError:
        if want:
            raise
        ctx.info(f"not evaluated: kind {first.kind} cannot rebuild its model from weights")
        return {}
    entries = eval_entries([r.run for r in models if r.run is not None])
    if not entries:
        return {}
    # the merge's own eval_split (a search scores merges on val) applies to the sources' evaluators
    source_cfg = build_recipe({**first.config, "eval_split": cfg.eval_split}, where=f"run {first.id}")
    tensors, meta = ctx.load_artifact(ctx.run_id, "model")
    model, data = rebuild(source_cfg, tensors, ctx.device, meta)
    return run_evaluators(entries, model, data, _SourceView(ctx, source_cfg), step=0)


class _SourceView:
    """The run context as the sources' evaluators expect it: recipe-level settings they read from
    ``ctx.cfg`` (a threat model, a judge) come from the first source's recipe; the rest is the merge's."""

    def __init__(self, ctx: Any, cfg: Any):
        self._ctx = ctx
        self.cfg = cfg

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)
