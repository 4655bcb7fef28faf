"""The arithmetic of each merge method on one tensor, flattened, a chunk of entries at a time.

A tensor is never needed whole: each input is a *reader* ``read(lo, hi)`` returning entries ``lo:hi``
of the flattened tensor (from memory or straight from a safetensors file), and a merge yields its
output in the same chunks. Methods that need whole-tensor statistics take a first pass for them:
SLERP and NuSLERP (the norms and the angle), Model Stock (the task vectors' norms and pairwise dot
products), TIES and breadcrumbs (each task vector's magnitude boundaries) and DELLA (each task vector's
magnitude ranks and mask); the last two are the only steps that hold one whole tensor (for one model
at a time). Readers' arrays are never modified. ``KERNELS`` maps the registry's kernel names
(:data:`poise.merging.spec.REGISTRY`) to these functions.

The arithmetic follows mergekit 0.1.5 step for step (same order of operations, float32 unless an
input is float64), so results agree to float rounding. DARE and DELLA draw their masks from NumPy's
PCG64 seeded by (seed, tensor name, model index): the same merge gives the same model however it is
chunked, streamed or ordered. (mergekit draws them from torch's generator, and rescales DARE's
survivors to the task vector's L1 norm where poise divides by the density, equal in expectation.)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from poise.merging.spec import TensorParams

Reader = Callable[[int, int], np.ndarray]
DEFAULT_CHUNK = 1 << 22  # entries per chunk: 16 MB per float32 input
SLERP_EPS = 1e-8


def spans(numel: int, chunk: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, numel, chunk):
        yield lo, min(lo + chunk, numel)


def merge_tensor(
    p: TensorParams,
    models: Sequence[Reader],
    base: Reader | None,
    numel: int,
    *,
    name: str,
    seed: int = 0,
    dtype: np.dtype = np.dtype(np.float32),
    chunk: int = DEFAULT_CHUNK,
    shape: tuple[int, ...] | None = None,
) -> Iterator[np.ndarray]:
    """Yield the merged tensor's flat entries, chunk by chunk, in ``dtype`` (float32 or float64).

    The method's kernel comes from its entry in :data:`poise.merging.spec.REGISTRY`; ``shape`` (default:
    flat) matters only to methods that work per row (DELLA's magnitude ranks).
    """
    if numel == 0:
        return
    spec = p.spec
    if spec.base == "required":
        assert base is not None, f"{p.method} needs a base"
    yield from KERNELS[spec.kernel](
        p, models, base, numel, np.dtype(dtype), chunk, name=name, seed=seed, shape=shape or (numel,)
    )


# --------------------------------------------------------------------------- linear


def _linear(
    p: TensorParams, models: Sequence[Reader], base: Reader | None, numel: int, dtype: np.dtype, chunk: int,
    **_: Any,
) -> Iterator[np.ndarray]:
    w = p.weights.astype(dtype)
    denom = w.sum(dtype=dtype)
    for lo, hi in spans(numel, chunk):
        acc = np.zeros(hi - lo, dtype)
        tmp = np.empty(hi - lo, dtype)
        for wi, read in zip(w, models, strict=True):
            np.multiply(read(lo, hi), wi, out=tmp)
            acc += tmp
        if p.normalize:
            acc /= denom
        yield acc


# --------------------------------------------------------------------------- slerp


def slerp_coefficients(
    norm_a: float, norm_b: float, dot: float, t: float, dot_threshold: float
) -> tuple[float, float]:
    """Coefficients (cₐ, c_b) with slerp = cₐ·a + c_b·b; linear ones when a and b are nearly colinear.

    Norms at or below 1e-8 count as 1 (as in mergekit), so a zero tensor gives a defined result.
    """
    na = norm_a if norm_a > SLERP_EPS else 1.0
    nb = norm_b if norm_b > SLERP_EPS else 1.0
    cos = min(1.0, max(-1.0, dot / (na * nb)))
    if abs(cos) > dot_threshold:
        return 1.0 - t, t
    theta = math.acos(cos)
    s = math.sin(theta)
    return math.sin((1.0 - t) * theta) / s, math.sin(t * theta) / s


def _slerp(
    p: TensorParams, models: Sequence[Reader], base: Reader | None, numel: int, dtype: np.dtype, chunk: int,
    **_: Any,
) -> Iterator[np.ndarray]:
    a, b = models
    na2 = nb2 = dot = 0.0
    for lo, hi in spans(numel, chunk):  # pass 1: norms and angle, accumulated in float64
        x = a(lo, hi).astype(np.float64)
        y = b(lo, hi).astype(np.float64)
        na2 += float(x @ x)
        nb2 += float(y @ y)
        dot += float(x @ y)
    ca, cb = slerp_coefficients(math.sqrt(na2), math.sqrt(nb2), dot, p.t, p.dot_threshold)
    ca_, cb_ = dtype.type(ca), dtype.type(cb)
    for lo, hi in spans(numel, chunk):  # pass 2: the interpolation
        out = a(lo, hi) * ca_
        out += b(lo, hi) * cb_
        yield out


# --------------------------------------------------------------------------- task vectors: TA, TIES, DARE


def _abs_task_vector(model: Reader, base: Reader, numel: int, dtype: np.dtype, chunk: int) -> np.ndarray:
    buf = np.empty(numel, dtype)
    for lo, hi in spans(numel, chunk):
        part = buf[lo:hi]
        np.subtract(model(lo, hi), base(lo, hi), out=part)
        np.abs(part, out=part)
    return buf


class _Band:
    """Keep the entries of one task vector whose magnitude rank (ascending, from 0) is in [lo, hi).

    TIES keeps the top k (lo = n − k, hi = n); breadcrumbs drops the ``gamma`` share of largest entries
    and the smallest ones. Pass 1 finds the two boundary magnitudes (one in-place partition of |τ|, the
    only step that holds a whole tensor); entries strictly between them are kept, and of those equal to a
    boundary, the first ones in flat order until the rank range is filled (ties at a boundary are
    vanishingly rare in trained weights, and zeros contribute nothing either way).
    """

    def __init__(self, model: Reader, base: Reader, numel: int, lo: int, hi: int, dtype: np.dtype, chunk: int):
        self.empty = hi <= lo
        if self.empty:
            return
        buf = _abs_task_vector(model, base, numel, dtype, chunk)
        buf.partition(sorted({lo, hi - 1}))
        self.low, self.high = buf[lo], buf[hi - 1]
        if self.low == self.high:
            self.quota_low, self.quota_high = hi - lo, 0
        else:
            self.quota_low = int(np.count_nonzero(buf <= self.low)) - lo  # entries = low with rank >= lo
            self.quota_high = hi - int(np.count_nonzero(buf < self.high))  # entries = high with rank < hi
        del buf

    def _take(self, mag: np.ndarray, value: np.floating, quota: int, keep: np.ndarray) -> int:
        if quota <= 0:
            return 0
        equal = np.flatnonzero(mag == value)[:quota]
        keep[equal] = True
        return len(equal)

    def apply(self, delta: np.ndarray, lo: int, hi: int) -> np.ndarray:
        if self.empty:
            return np.zeros_like(delta)
        mag = np.abs(delta)
        keep = (mag > self.low) & (mag < self.high)
        self.quota_low -= self._take(mag, self.low, self.quota_low, keep)
        if self.high != self.low:
            self.quota_high -= self._take(mag, self.high, self.quota_high, keep)
        return np.where(keep, delta, delta.dtype.type(0))


class _Random:
    """DARE: keep each entry with probability ``density`` (seeded stream), rescaled by 1 / density."""

    def __init__(self, rng: np.random.Generator, density: float, dtype: np.dtype):
        self.rng, self.density, self.inv = rng, density, dtype.type(density)

    def apply(self, delta: np.ndarray, lo: int, hi: int) -> np.ndarray:
        keep = self.rng.random(hi - lo) < self.density
        return np.where(keep, delta / self.inv, delta.dtype.type(0))


class _Della:
    """DELLA's MagPrune (as mergekit computes it): in each row (the first dimension; a vector is one
    row), entry j of magnitude rank r (1 … n) is kept with probability
    (density − ε) + 2ε (r − 1) / (n − 1), drawn from the seeded stream; the survivors are rescaled so the
    task vector keeps its L1 norm. Pass 1 holds the whole tensor's ranks and mask."""

    def __init__(self, model: Reader, base: Reader, numel: int, shape: tuple[int, ...], density: float,
                 epsilon: float, rng: np.random.Generator, dtype: np.dtype, chunk: int):
        mag = _abs_task_vector(model, base, numel, dtype, chunk)
        rows = shape[0] if len(shape) >= 2 else 1
        cols = numel // rows
        ranks = np.argsort(np.argsort(mag.reshape(rows, cols), axis=1, kind="stable"), axis=1,
                           kind="stable").astype(np.float32)
        f32 = np.float32
        norm = ranks / f32(cols - 1) if cols > 1 else np.full_like(ranks, f32(0.5))
        norm = np.clip(norm, f32(0), f32(1))
        probs = f32(density - epsilon) + norm * f32(2) * f32(epsilon)
        self.keep = (rng.random(numel) < probs.reshape(-1))
        before = float(mag.sum(dtype=np.float64))
        after = float(mag[self.keep].sum(dtype=np.float64))
        self.factor = dtype.type(1) if before < 1e-7 or after < 1e-7 else dtype.type(before / after)

    def apply(self, delta: np.ndarray, lo: int, hi: int) -> np.ndarray:
        return np.where(self.keep[lo:hi], delta * self.factor, delta.dtype.type(0))


def dare_rng(seed: int, name: str, index: int) -> np.random.Generator:
    """The random-mask stream of model ``index`` for tensor ``name``: independent of order and chunking."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode()), index]))
    )


def _sparsifier(
    p: TensorParams, i: int, model: Reader, base: Reader, numel: int, shape: tuple[int, ...],
    dtype: np.dtype, chunk: int, name: str, seed: int,
) -> Any:
    how, density = p.spec.sparsify, p.density
    if how is None or density >= 1.0:
        return None
    if how == "magnitude":  # TIES
        k = max(1, int(density * numel))
        return _Band(model, base, numel, numel - k, numel, dtype, chunk)
    if how == "outliers":  # breadcrumbs: drop the gamma share of largest, then the smallest, keep density
        target, top = int(density * numel), int(p.gamma * numel)
        bottom = max(0, numel - target - top)
        return _Band(model, base, numel, bottom, bottom + target, dtype, chunk)
    if how == "random":
        return _Random(dare_rng(seed, name, i), density, dtype)
    if how == "della":
        return _Della(model, base, numel, shape, density, p.epsilon, dare_rng(seed, name, i), dtype, chunk)
    raise ValueError(f"unknown sparsification {how!r}")  # pragma: no cover - the registry names them


def _task_vectors(
    p: TensorParams,
    models: Sequence[Reader],
    base: Reader | None,
    numel: int,
    dtype: np.dtype,
    chunk: int,
    *,
    name: str,
    seed: int,
    shape: tuple[int, ...],
) -> Iterator[np.ndarray]:
    assert base is not None
    n = len(models)
    w = p.weights.astype(dtype)
    sparse = [_sparsifier(p, i, m, base, numel, shape, dtype, chunk, name, seed) for i, m in enumerate(models)]
    consensus = p.spec.consensus
    scale = dtype.type(p.scale)
    for lo, hi in spans(numel, chunk):
        b = base(lo, hi)
        wd = np.empty((n, hi - lo), dtype)  # weighted (sparsified) task vectors
        for i, read in enumerate(models):
            d = read(lo, hi) - b
            if sparse[i] is not None:
                d = sparse[i].apply(d, lo, hi)
            np.multiply(d, w[i], out=wd[i])
        if consensus:  # TIES: elect the sign of the weighted sum, average the entries that agree with it
            elected = np.where(wd.sum(axis=0) >= 0, dtype.type(1), dtype.type(-1))
            agree = np.sign(wd) == elected
            mixed = np.where(agree, wd, dtype.type(0)).sum(axis=0)
            divisor = (w[:, None] * agree).sum(axis=0, dtype=dtype)
            divisor[divisor == 0] = 1
        else:
            mixed = wd.sum(axis=0)
            divisor = w.sum(dtype=dtype)
            if abs(divisor) < 1e-8:
                divisor = dtype.type(1)
        if p.normalize:
            mixed /= divisor
        if p.scale != 1.0:
            mixed *= scale
        mixed += b
        yield mixed


# --------------------------------------------------------------------------- per-vector statistics


def _vectors(shape: tuple[int, ...], along: str) -> tuple[Callable[[int, int], np.ndarray | None], int]:
    """Which vector each flat entry belongs to: ``along`` "all" (one vector: the tensor), "last" (rows along
    the last dimension) or "first" (vectors along the first dimension). Returns ``ids(lo, hi)`` (None for a
    single vector) and the number of vectors."""
    numel = int(np.prod(shape)) if shape else 1
    if along == "all" or len(shape) < 2:
        return (lambda lo, hi: None), 1
    if along == "last":
        n = shape[-1]
        return (lambda lo, hi: np.arange(lo, hi) // n), numel // n
    stride = numel // shape[0]  # along the first dimension: entries j and j + stride share a vector
    return (lambda lo, hi: np.arange(lo, hi) % stride), stride


def _sums(x: np.ndarray, ids: np.ndarray | None, n: int) -> np.ndarray:
    return np.array([x.sum()]) if ids is None else np.bincount(ids, weights=x, minlength=n)


def _per_entry(values: np.ndarray, ids: np.ndarray | None, dtype: np.dtype) -> Any:
    return dtype.type(values[0]) if ids is None else values[ids].astype(dtype)


# --------------------------------------------------------------------------- NuSLERP


def _nuslerp(
    p: TensorParams, models: Sequence[Reader], base: Reader | None, numel: int, dtype: np.dtype, chunk: int,
    *, shape: tuple[int, ...], **_: Any,
) -> Iterator[np.ndarray]:
    """mergekit's NuSLERP: t = w₂ / (w₁ + w₂); with a base, of the two task vectors; one angle per tensor
    (``nuslerp_flatten``) or per row (the last dimension, or the first with ``nuslerp_row_wise``)."""
    w0, w1 = (float(x) for x in p.weights)
    t = 0.5 if abs(w0 + w1) < 1e-6 else w1 / (w0 + w1)
    along = "all" if p.nuslerp_flatten else "first" if p.nuslerp_row_wise else "last"
    ids_of, nvec = _vectors(shape, along)
    a, b = models

    def vecs(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        x, y = a(lo, hi), b(lo, hi)
        if base is None:
            return x, y, None
        z = base(lo, hi)
        return x - z, y - z, z

    na2, nb2, dot = np.zeros(nvec), np.zeros(nvec), np.zeros(nvec)
    for lo, hi in spans(numel, chunk):  # pass 1: norms and angles, accumulated in float64
        x, y, _ = vecs(lo, hi)
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        ids = ids_of(lo, hi)
        na2 += _sums(x64 * x64, ids, nvec)
        nb2 += _sums(y64 * y64, ids, nvec)
        dot += _sums(x64 * y64, ids, nvec)
    na, nb = np.maximum(np.sqrt(na2), 1e-7), np.maximum(np.sqrt(nb2), 1e-7)
    cos = np.clip(dot / (na * nb), -1.0, 1.0)
    colinear = 1.0 - cos * cos <= 1e-16
    theta = np.arccos(np.where(colinear, 0.0, cos))
    s = np.where(colinear, 1.0, np.sin(theta))
    ca = np.where(colinear, 1.0 - t, np.sin((1.0 - t) * theta) / s)
    cb = np.where(colinear, t, np.sin(t * theta) / s)
    for lo, hi in spans(numel, chunk):  # pass 2: the interpolation
        x, y, z = vecs(lo, hi)
        ids = ids_of(lo, hi)
        out = x * _per_entry(ca, ids, dtype)
        out += y * _per_entry(cb, ids, dtype)
        if z is not None:
            out += z
        yield out


# --------------------------------------------------------------------------- Model Stock


def _model_stock(
    p: TensorParams, models: Sequence[Reader], base: Reader | None, numel: int, dtype: np.dtype, chunk: int,
    *, shape: tuple[int, ...], **_: Any,
) -> Iterator[np.ndarray]:
    """Model Stock (as mergekit): θ₀ + t (mean θᵢ − θ₀), t = N c / (1 + (N − 1) c), c the mean pairwise
    cosine of the task vectors, per tensor or (``filter_wise``) per row; t = 0 where the denominator
    vanishes."""
    assert base is not None
    n = len(models)
    ids_of, nvec = _vectors(shape, "last" if p.filter_wise else "all")
    dots = np.zeros((n, n, nvec))
    for lo, hi in spans(numel, chunk):  # pass 1: norms and pairwise dot products, in float64
        z = base(lo, hi).astype(np.float64)
        tv = [m(lo, hi).astype(np.float64) - z for m in models]
        ids = ids_of(lo, hi)
        for i in range(n):
            for j in range(i, n):
                dots[i, j] += _sums(tv[i] * tv[j], ids, nvec)
    norms = np.sqrt(np.stack([dots[i, i] for i in range(n)]))
    cosines = [np.clip(dots[i, j] / np.maximum(norms[i] * norms[j], 1e-6), -1.0, 1.0)
               for i in range(n) for j in range(i + 1, n)]
    c = np.mean(cosines, axis=0)
    den = 1.0 + (n - 1) * c
    singular = np.abs(den) < 1e-6
    t = np.where(singular, 0.0, n * c / np.where(singular, 1.0, den))
    for lo, hi in spans(numel, chunk):
        ids = ids_of(lo, hi)
        t_ = _per_entry(t, ids, dtype)
        acc = models[0](lo, hi).astype(dtype, copy=True)
        for m in models[1:]:
            acc += m(lo, hi)
        acc /= dtype.type(n)
        acc *= t_
        acc += base(lo, hi) * (dtype.type(1) - t_)
        yield acc


KERNELS: dict[str, Callable[..., Iterator[np.ndarray]]] = {
    "linear": _linear,
    "slerp": _slerp,
    "nuslerp": _nuslerp,
    "task_vectors": _task_vectors,
    "model_stock": _model_stock,
}
