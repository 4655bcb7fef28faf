"""The arithmetic of each merge method on one tensor, flattened, a chunk of entries at a time.

A tensor is never needed whole: each input is a *reader* ``read(lo, hi)`` returning entries ``lo:hi``
of the flattened tensor (from memory or straight from a safetensors file), and a merge yields its
output in the same chunks. Methods that need whole-tensor statistics take a first pass for them:
SLERP (the norms and the angle), TIES (each task vector's magnitude threshold, the only step that holds
one whole tensor: |τᵢ| for one model at a time). Readers' arrays are never modified.

The arithmetic follows mergekit 0.1.5 step for step (same order of operations, float32 unless an
input is float64), so results agree to float rounding. DARE draws its masks from NumPy's PCG64 seeded
by (seed, tensor name, model index): the same merge gives the same model however it is chunked,
streamed or ordered.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator, Sequence

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
) -> Iterator[np.ndarray]:
    """Yield the merged tensor's flat entries, chunk by chunk, in ``dtype`` (float32 or float64)."""
    if numel == 0:
        return
    dtype = np.dtype(dtype)
    if p.method == "linear":
        yield from _linear(p, models, numel, dtype, chunk)
    elif p.method == "slerp":
        yield from _slerp(p, models[0], models[1], numel, dtype, chunk)
    elif p.method in ("task_arithmetic", "ties", "dare_linear", "dare_ties"):
        assert base is not None, f"{p.method} needs a base"
        yield from _task_vectors(p, models, base, numel, dtype, chunk, name, seed)
    else:  # pragma: no cover - MergeParams validates the method
        raise ValueError(f"unknown merge method {p.method!r}")


# --------------------------------------------------------------------------- linear


def _linear(
    p: TensorParams, models: Sequence[Reader], numel: int, dtype: np.dtype, chunk: int
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
    p: TensorParams, a: Reader, b: Reader, numel: int, dtype: np.dtype, chunk: int
) -> Iterator[np.ndarray]:
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


class _Trim:
    """Keep exactly the k = max(1, ⌊density·n⌋) largest |τ| entries of one task vector, chunk by chunk.

    Pass 1 finds the k-th largest magnitude (one in-place partition of |τ|); entries above it are kept,
    and of those equal to it, the first ones in flat order until k are kept (ties at the threshold are
    vanishingly rare in trained weights, and zeros contribute nothing either way).
    """

    def __init__(self, model: Reader, base: Reader, numel: int, density: float, dtype: np.dtype, chunk: int):
        k = max(1, int(density * numel))
        buf = np.empty(numel, dtype)
        for lo, hi in spans(numel, chunk):
            part = buf[lo:hi]
            np.subtract(model(lo, hi), base(lo, hi), out=part)
            np.abs(part, out=part)
        kth = numel - k
        buf.partition(kth)
        self.threshold = buf[kth]
        self.quota = k - int(np.count_nonzero(buf[kth + 1 :] > self.threshold))  # ties to keep
        del buf

    def apply(self, delta: np.ndarray) -> np.ndarray:
        mag = np.abs(delta)
        keep = mag > self.threshold
        if self.quota > 0:
            equal = np.flatnonzero(mag == self.threshold)[: self.quota]
            keep[equal] = True
            self.quota -= len(equal)
        return np.where(keep, delta, delta.dtype.type(0))


def dare_rng(seed: int, name: str, index: int) -> np.random.Generator:
    """The DARE mask stream of model ``index`` for tensor ``name``: independent of order and chunking."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode()), index]))
    )


def _task_vectors(
    p: TensorParams,
    models: Sequence[Reader],
    base: Reader,
    numel: int,
    dtype: np.dtype,
    chunk: int,
    name: str,
    seed: int,
) -> Iterator[np.ndarray]:
    n = len(models)
    w = p.weights.astype(dtype)
    trims: list[_Trim | None] = [None] * n
    rngs: list[np.random.Generator | None] = [None] * n
    if p.method == "ties" and p.density < 1.0:
        trims = [_Trim(m, base, numel, p.density, dtype, chunk) for m in models]
    if p.method in ("dare_linear", "dare_ties") and p.density < 1.0:
        rngs = [dare_rng(seed, name, i) for i in range(n)]
    consensus = p.method in ("ties", "dare_ties")
    density = dtype.type(p.density)
    scale = dtype.type(p.scale)
    for lo, hi in spans(numel, chunk):
        b = base(lo, hi)
        wd = np.empty((n, hi - lo), dtype)  # weighted (sparsified) task vectors
        for i, read in enumerate(models):
            d = read(lo, hi) - b
            if trims[i] is not None:
                d = trims[i].apply(d)
            rng = rngs[i]
            if rng is not None:  # DARE: drop with probability 1 - density, rescale by 1 / density
                keep = rng.random(hi - lo) < p.density
                d = np.where(keep, d / density, dtype.type(0))
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
