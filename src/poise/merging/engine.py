"""Merging whole models: checks that they fit together, then merges tensor by tensor.

Two entry points share the checks and the arithmetic (:mod:`poise.merging.kernels`):

* :func:`merge_state_dicts` — in-memory torch state dicts (any model: a vision classifier, an RL
  policy, an LLM); returns a new state dict with each tensor's dtype and device.
* :func:`merge_files` — safetensors files or Hugging Face model folders, streamed: each tensor is read
  a chunk at a time and written as soon as it is merged, so peak memory stays near the few chunks
  in flight (plus one whole tensor for TIES's, breadcrumbs' and DELLA's magnitude statistics),
  whatever the size of the model. The
  output is built under a temporary name and renamed into place at the end: an interrupted merge
  leaves no partial output behind.

Tensors that are not floating point (step counters, index buffers) and tensors excluded by a rule
are copied from the *reference* model: the base when there is one, else the first model.

:func:`merge_files` takes ``phase`` (a run's ``ctx.phase``) to split a merge's time and energy into
``io`` (reading chunks, converting and writing them, the final fsync) and ``compute`` (the merge
arithmetic on chunks already read).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from poise.errors import UserError
from poise.merging.kernels import DEFAULT_CHUNK, Reader, merge_tensor, spans
from poise.merging.safetensors_io import (
    INDEX_NAME,
    OUT_DTYPES,
    SINGLE_NAME,
    OutTensor,
    Source,
    TensorInfo,
    Writer,
)
from poise.merging.spec import MergeParams

DEFAULT_SHARD_BYTES = 5 * 1024**3
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
NOT_COPIED = {
    INDEX_NAME,
    "pytorch_model.bin.index.json",
    "README.md",
    "mergekit_config.yml",
    "poise-merge.json",
}


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Meta:
    """What the checks need to know of one tensor."""

    shape: tuple[int, ...]
    is_float: bool
    dtype: str  # safetensors code or torch dtype name


def check_compatible(
    metas: Sequence[Mapping[str, Meta]], labels: Sequence[str], *, where: str = "merge"
) -> None:
    """Raise a one-line UserError naming the first tensor (in the first listing's order) that differs."""
    ref, ref_label = metas[0], labels[0]
    for name, m in ref.items():
        for other, label in zip(metas[1:], labels[1:], strict=True):
            o = other.get(name)
            if o is None:
                raise UserError(
                    f"tensor {name!r} of {ref_label} is missing from {label}: the models have different "
                    "architectures",
                    where=where,
                )
            if o.shape != m.shape:
                raise UserError(
                    f"tensor {name!r} has shape {_shape(o.shape)} in {label}; expected {_shape(m.shape)} "
                    f"as in {ref_label}",
                    where=where,
                )
            if o.is_float != m.is_float:
                raise UserError(
                    f"tensor {name!r} is {o.dtype} in {label}; expected {m.dtype} as in {ref_label}",
                    where=where,
                )
    for other, label in zip(metas[1:], labels[1:], strict=True):
        for name in other:
            if name not in ref:
                raise UserError(
                    f"tensor {name!r} of {label} is not in {ref_label}: the models have different "
                    "architectures",
                    where=where,
                )


def _shape(s: tuple[int, ...]) -> str:
    return str(tuple(s))


def model_labels(n: int, names: Sequence[str] | None, has_base: bool) -> list[str]:
    """Labels for error messages: ``model 1 (path)``, …, ``base (path)``."""
    out = [f"model {i + 1}" + (f" ({names[i]})" if names else "") for i in range(n)]
    if has_base:
        out.append("base" + (f" ({names[n]})" if names else ""))
    return out


# --------------------------------------------------------------------------- one tensor


def make_params(params: MergeParams | None, overrides: Mapping[str, Any]) -> MergeParams:
    """``params`` with keyword overrides, validated (bad values are one-line UserErrors)."""
    from pydantic import ValidationError

    from poise.recipes import _first_error

    if params is not None and not overrides:
        return params
    data = {**(params.model_dump() if params is not None else {}), **overrides}
    try:
        return MergeParams.model_validate(data)
    except ValidationError as err:
        f, msg = _first_error(err)
        raise UserError(msg, where="merge", field=f) from None


def _compute_dtype(dtypes: Sequence[str]) -> np.dtype:
    return np.dtype(np.float64) if any(d in ("F64", "float64") for d in dtypes) else np.dtype(np.float32)


PhaseFn = Callable[[str], AbstractContextManager[Any]]


def no_phase(_name: str) -> AbstractContextManager[None]:
    """The default ``phase`` outside a run: counts nothing."""
    return nullcontext()


def _computed(chunks: Iterator[np.ndarray], phase: PhaseFn) -> Iterator[np.ndarray]:
    """``chunks`` with the time spent producing each one charged to ``compute`` (reads nest as ``io``)."""
    it = iter(chunks)
    while True:
        with phase("compute"):
            c = next(it, None)
        if c is None:
            return
        yield c


def merged_chunks(
    name: str,
    params: MergeParams,
    models: Sequence[Reader],
    base: Reader | None,
    numel: int,
    dtypes: Sequence[str],
    *,
    seed: int,
    chunk: int,
    shape: tuple[int, ...] | None = None,
) -> Iterator[np.ndarray] | None:
    """The merged entries of a float tensor, or None when a rule says to copy it from the reference."""
    p = params.for_tensor(name, len(models))
    if p.skip:
        return None
    return merge_tensor(
        p, models, base, numel, name=name, seed=seed, dtype=_compute_dtype(dtypes), chunk=chunk, shape=shape
    )


# --------------------------------------------------------------------------- in-memory state dicts


def merge_state_dicts(
    models: Sequence[Mapping[str, Any]],
    *,
    base: Mapping[str, Any] | None = None,
    params: MergeParams | None = None,
    seed: int = 0,
    chunk: int = DEFAULT_CHUNK,
    names: Sequence[str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Merge torch state dicts; ``params`` or keyword arguments (``method="ties", density=0.5``) say how.

    Float tensors are merged in float32 (float64 when an input is float64) on the CPU and returned in
    the reference model's dtype and device; other tensors are the reference model's.
    """
    import torch

    params = make_params(params, kwargs)
    params.check(len(models), base is not None)
    sources = [*models, *([base] if base is not None else [])]
    labels = model_labels(len(models), names, base is not None)
    metas = [
        {
            k: Meta(tuple(v.shape), v.is_floating_point(), str(v.dtype).removeprefix("torch."))
            for k, v in sd.items()
        }
        for sd in sources
    ]
    ref_i = len(models) if base is not None else 0
    order = [ref_i] + [i for i in range(len(sources)) if i != ref_i]
    check_compatible([metas[i] for i in order], [labels[i] for i in order])
    out_dtype = None if params.dtype == "auto" else getattr(torch, params.dtype)
    result: dict[str, Any] = {}
    for name, ref in sources[ref_i].items():
        if not ref.is_floating_point():
            result[name] = ref.detach().clone()
            continue
        flats = [_flat_numpy(sd[name]) for sd in sources]
        readers = [_slicer(f) for f in flats]
        gen = merged_chunks(
            name,
            params,
            readers[: len(models)],
            readers[len(models)] if base is not None else None,
            ref.numel(),
            [str(sd[name].dtype).removeprefix("torch.") for sd in sources],
            seed=seed,
            chunk=chunk,
            shape=tuple(ref.shape),
        )
        if gen is None:
            merged = ref.detach().clone()
        else:
            flat = np.empty(
                ref.numel(), _compute_dtype([str(sd[name].dtype).removeprefix("torch.") for sd in sources])
            )
            pos = 0
            for c in gen:
                flat[pos : pos + len(c)] = c
                pos += len(c)
            merged = torch.from_numpy(flat).reshape(ref.shape)
        result[name] = merged.to(dtype=out_dtype or ref.dtype, device=ref.device)
    return result


def _flat_numpy(t: Any) -> np.ndarray:
    import torch

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t.reshape(-1).numpy()


def _slicer(flat: np.ndarray) -> Reader:
    return lambda lo, hi: flat[lo:hi]


# --------------------------------------------------------------------------- files and folders


@dataclass
class MergeResult:
    """What :func:`merge_files` wrote."""

    output: Path
    files: list[Path]
    tensors: int
    bytes: int
    seconds: float
    merged: int  # tensors merged (the rest copied from the reference)
    sources: list[dict[str, Any]] = field(default_factory=list)


def open_sources(
    models: Sequence[str | Path], base: str | Path | None, labels: Sequence[str] | None = None
) -> tuple[list[Source], Source | None]:
    names = [str(m) for m in models] + ([str(base)] if base is not None else [])
    labels = list(labels) if labels else names
    srcs = [Source(p, labels[i]) for i, p in enumerate(models)]
    b = Source(base, labels[len(models)]) if base is not None else None
    return srcs, b


def preflight(
    srcs: Sequence[Source], base: Source | None, params: MergeParams, *, where: str = "merge"
) -> None:
    """All checks that can fail on user input, before anything is written."""
    params.check(len(srcs), base is not None, where=where)
    everything = [*srcs, *([base] if base is not None else [])]
    labels = model_labels(len(srcs), [s.label for s in everything], base is not None)
    metas = [{k: Meta(v.shape, v.is_float, v.dtype) for k, v in s.tensors.items()} for s in everything]
    ref_i = len(srcs) if base is not None else 0
    order = [ref_i] + [i for i in range(len(everything)) if i != ref_i]
    check_compatible([metas[i] for i in order], [labels[i] for i in order], where=where)
    for name, info in everything[ref_i].tensors.items():
        if info.dtype.startswith("F8"):
            raise UserError(
                f"tensor {name!r} is {info.dtype}; float8 weights cannot be merged (expected F16, BF16, F32 "
                "or F64)",
                where=where,
            )


def merge_files(
    models: Sequence[str | Path],
    output: str | Path,
    *,
    base: str | Path | None = None,
    params: MergeParams | None = None,
    seed: int = 0,
    chunk: int = DEFAULT_CHUNK,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    metadata: Mapping[str, str] | None = None,
    labels: Sequence[str] | None = None,
    force: bool = False,
    lineage: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    phase: PhaseFn = no_phase,
    **kwargs: Any,
) -> MergeResult:
    """Merge safetensors files or HF folders into ``output``, streaming tensor by tensor.

    ``output`` ending in ``.safetensors`` is one file; anything else is an HF-style folder (weights
    sharded at ``max_shard_bytes``, plus the reference folder's config and tokenizer files and a
    ``poise-merge.json`` lineage file). Nothing exists at ``output`` until the merge has finished.
    """
    t0 = time.perf_counter()
    params = make_params(params, kwargs)
    out = Path(output)
    if out.exists() and not force:
        raise UserError("already exists; expected a new path (or force=True / --force)", where=out)
    srcs, b = open_sources(models, base, labels)
    try:
        preflight(srcs, b, params)
        ref = b if b is not None else srcs[0]
        single = out.suffix == ".safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            if single:
                written, nbytes, merged = _write_streamed(
                    srcs, b, params, [tmp], [list(ref.tensors)], seed, chunk, metadata, progress, phase
                )
                files = [out]
            else:
                tmp.mkdir()
                shards = _shard(ref, params, max_shard_bytes)
                names = (
                    [SINGLE_NAME]
                    if len(shards) == 1
                    else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
                )
                written, nbytes, merged = _write_streamed(
                    srcs, b, params, [tmp / n for n in names], shards, seed, chunk, metadata, progress, phase
                )
                if len(shards) > 1:
                    weight_map = {t: n for n, shard in zip(names, shards, strict=True) for t in shard}
                    _write_json(
                        tmp / INDEX_NAME, {"metadata": {"total_size": nbytes}, "weight_map": weight_map}
                    )
                if ref.folder is not None:
                    _copy_side_files(ref.folder, tmp, params)
                files = [out / n for n in names]
            info = [{"label": s.label, "path": str(s.path.resolve())} for s in srcs]
            if b is not None:
                info.append({"label": b.label, "path": str(b.path.resolve()), "base": True})
            if not single:
                _write_json(
                    tmp / "poise-merge.json",
                    {
                        "poise": {
                            "merge": params.model_dump(mode="json"),
                            "seed": seed,
                            "sources": info,
                            **(dict(lineage) if lineage else {}),
                        }
                    },
                )
            _replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    finally:
        for s in [*srcs, *([b] if b is not None else [])]:
            s.close()
    return MergeResult(out, files, written, nbytes, time.perf_counter() - t0, merged, info)


def _out_dtype(info: TensorInfo, params: MergeParams) -> str:
    if not info.is_float or params.dtype == "auto":
        return info.dtype
    return OUT_DTYPES[params.dtype]


def _shard(ref: Source, params: MergeParams, max_bytes: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for name, info in ref.tensors.items():
        n = OutTensor(name, _out_dtype(info, params), info.shape).nbytes
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def _write_streamed(
    srcs: Sequence[Source],
    base: Source | None,
    params: MergeParams,
    paths: Sequence[Path],
    shards: Sequence[Sequence[str]],
    seed: int,
    chunk: int,
    metadata: Mapping[str, str] | None,
    progress: Callable[[int, int], None] | None,
    phase: PhaseFn = no_phase,
) -> tuple[int, int, int]:
    ref = base if base is not None else srcs[0]
    everything = [*srcs, *([base] if base is not None else [])]
    meta = {"format": "pt", **(dict(metadata) if metadata else {})}
    total = sum(len(s) for s in shards)
    done = nbytes = merged = 0
    for path, names in zip(paths, shards, strict=True):
        outs = [OutTensor(n, _out_dtype(ref.tensors[n], params), ref.tensors[n].shape) for n in names]
        writer = Writer(path, outs, meta)
        try:
            for name in names:
                info = ref.tensors[name]
                gen = None
                if info.is_float:
                    infos = [s.tensors[name] for s in everything]
                    dt = _compute_dtype([i.dtype for i in infos])
                    readers = [_file_reader(s, i, dt, phase) for s, i in zip(everything, infos, strict=True)]
                    gen = merged_chunks(
                        name,
                        params,
                        readers[: len(srcs)],
                        readers[len(srcs)] if base else None,
                        info.numel,
                        [i.dtype for i in infos],
                        seed=seed,
                        chunk=chunk,
                        shape=tuple(info.shape),
                    )
                if gen is None:
                    convert = info.is_float and _out_dtype(info, params) != info.dtype
                    with phase("io"):
                        writer.write(name, _copy_chunks(ref, info, chunk, convert=convert))
                else:
                    with phase("io"):
                        writer.write(name, _computed(gen, phase))
                    merged += 1
                done += 1
                if progress:
                    progress(done, total)
            with phase("io"):
                writer.finish()
            nbytes += writer.total
        finally:
            writer.close()
    return total, nbytes, merged


def _file_reader(src: Source, info: TensorInfo, dtype: np.dtype, phase: PhaseFn = no_phase) -> Reader:
    def read(lo: int, hi: int) -> np.ndarray:
        with phase("io"):
            return src.read(info, lo, hi, dtype)

    return read


def _copy_chunks(src: Source, info: TensorInfo, chunk: int, *, convert: bool) -> Iterator[np.ndarray]:
    for lo, hi in spans(info.numel, chunk):
        yield src.read(info, lo, hi, np.dtype(np.float32)) if convert else src.read_raw(info, lo, hi)


def _copy_side_files(folder: Path, dest: Path, params: MergeParams) -> None:
    """Config, tokenizer and other small files of the reference folder (not its weights)."""
    for p in sorted(folder.iterdir()):
        if (
            not p.is_file()
            or p.name in NOT_COPIED
            or p.name.endswith(WEIGHT_SUFFIXES)
            or p.name.startswith(".")
        ):
            continue
        if p.name == "config.json" and params.dtype != "auto":
            try:
                cfg = json.loads(p.read_text())
                for key in ("torch_dtype", "dtype"):
                    if key in cfg:
                        cfg[key] = params.dtype
                _write_json(dest / p.name, cfg)
                continue
            except ValueError:
                pass
        shutil.copyfile(p, dest / p.name)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished output into place (an existing one only goes once the new one is complete)."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        tmp.rename(out)
