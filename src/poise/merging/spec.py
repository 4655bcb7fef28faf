"""What to merge and how: the table of merge methods, their parameters, per-tensor rules, and the checks.

``REGISTRY`` is the one table of merge methods: for each, whether it needs a base, how many models it
takes, whether it normalises by default, which parameters it reads, and how it computes (the kernel,
plus for task-vector methods the sparsification and whether signs are elected). Everything else —
recipe validation, ``poise merge``'s options and help, the methods a sweep can interpolate with — is
derived from it, so a new method is one entry here (and, if its arithmetic is new, one kernel in
:mod:`poise.merging.kernels`).

Methods, defaults and arithmetic follow mergekit's, so a merge reads the same in both tools:

* ``linear`` — weighted average Σ wᵢθᵢ / Σ wᵢ (weights default to equal);
* ``task_arithmetic`` — θ_base + λ Σ wᵢ(θᵢ − θ_base) (weights default to 1);
* ``slerp`` — spherical interpolation of two models at ``t`` (0 gives the first), falling back to
  linear interpolation when the flattened tensors are nearly colinear (|cos| > ``dot_threshold``);
* ``nuslerp`` — mergekit's NuSLERP: spherical interpolation of two models at t = w₂ / (w₁ + w₂) from
  their weights, of their task vectors when a base is given (one angle per tensor, or with
  ``nuslerp_flatten = false`` one per row: the last dimension, or the first with ``nuslerp_row_wise``);
* ``ties`` — trim each task vector to its ``density`` largest magnitudes, elect a sign per entry (sign of
  the weighted sum), average only the entries that agree with it (disjoint mean);
* ``dare_linear`` / ``dare_ties`` — drop task-vector entries with probability p = 1 − ``density``
  (seeded), rescale the survivors by 1/(1 − p), then add them (linear) or combine them as TIES does;
* ``breadcrumbs`` / ``breadcrumbs_ties`` — drop the ``gamma`` share of largest-magnitude entries of each
  task vector (outliers) and the smallest ones, keeping a ``density`` share, then add (or TIES-combine);
* ``della`` / ``della_linear`` — DELLA's MagPrune: keep each entry with a probability that grows with
  its magnitude rank in its row, from ``density − epsilon`` to ``density + epsilon`` (seeded), rescale
  the survivors to the task vector's L1 norm, then TIES-combine (della) or add (della_linear);
* ``model_stock`` — Model Stock: θ_base + t (mean θᵢ − θ_base) with t = N cos / (1 + (N − 1) cos) from
  the mean pairwise cosine of the task vectors (base plus at least two models); ``filter_wise`` takes
  one t per row.

``normalize`` (divide by the sum of weights) defaults per method as in mergekit. ``scale`` is
mergekit's ``lambda``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from poise.errors import UserError

OutDtype = Literal["auto", "float32", "float16", "bfloat16", "float64"]


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    """A merge parameter (a number, or a switch when ``default`` is a bool): default, bounds (validated on
    every recipe, option and rule) and help."""

    default: float | bool
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    per_tensor: bool = True  # may be set per tensor by a rule (``--rule 'PAT:density=0.3'``)

    def bounds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.low is not None:
            out["gt" if self.low_open else "ge"] = self.low
        if self.high is not None:
            out["lt" if self.high_open else "le"] = self.high
        return out

    @property
    def switch(self) -> bool:
        return isinstance(self.default, bool)

    def field(self, *, optional: bool = False) -> Any:
        if self.switch:
            return Field(None if optional else self.default, description=self.help)
        return Field(None if optional else self.default, description=self.help, allow_inf_nan=False,
                     **self.bounds())

    def range_text(self) -> str:
        if self.low is None and self.high is None:
            return ""
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"


PARAMS: dict[str, Param] = {
    "density": Param(1.0, "share of each task vector kept (ties, breadcrumbs, della; dare: 1 - drop rate)",
                     0.0, 1.0, low_open=True),
    "t": Param(0.5, "slerp: position between the first (0) and second (1) model", 0.0, 1.0),
    "scale": Param(1.0, "multiplier of the combined task vector (mergekit's lambda)"),
    "gamma": Param(0.01, "breadcrumbs: share of the largest-magnitude task-vector entries dropped",
                   0.0, 1.0, high_open=True),
    "epsilon": Param(0.15, "della: keep probabilities spread over density +- epsilon by magnitude rank",
                     0.0, 1.0, high_open=True),
    "dot_threshold": Param(0.9995, "slerp: |cos| above this interpolates linearly", 0.0, 1.0,
                           low_open=True, per_tensor=False),
    "nuslerp_flatten": Param(True, "nuslerp: one angle for the whole tensor (else one per row)", per_tensor=False),
    "nuslerp_row_wise": Param(False, "nuslerp without flatten: rows along the first dimension, not the last",
                              per_tensor=False),
    "filter_wise": Param(False, "model_stock: one t per row (last dimension) instead of per tensor",
                         per_tensor=False),
}
RULE_KEYS: tuple[str, ...] = ("weights", *(k for k, p in PARAMS.items() if p.per_tensor))


# --------------------------------------------------------------------------- the methods


Kernel = Literal["linear", "slerp", "nuslerp", "task_vectors", "model_stock"]
Sparsify = Literal["magnitude", "random", "outliers", "della"]


@dataclass(frozen=True)
class MethodSpec:
    """One merge method: what it takes and how it computes."""

    name: str
    summary: str
    kernel: Kernel
    base: Literal["required", "optional", "none"]
    min_models: int
    max_models: int | None
    normalize: bool  # default of ``normalize``
    params: tuple[str, ...] = ()  # the PARAMS it reads
    weights: bool = True  # takes one weight per model
    sparsify: Sparsify | None = None  # task-vector methods: how entries are dropped
    consensus: bool = False  # task-vector methods: elect a sign per entry (TIES)
    interpolate: Literal["t", "weights"] | None = None  # how a 2-model sweep sets the point t
    check: Callable[[Mapping[str, float]], str | None] | None = None  # cross-parameter check, per tensor
    reference: str = ""

    def models_text(self) -> str:
        lo, hi = self.min_models, self.max_models
        if hi == lo:
            return f"exactly {lo}"
        return f"at least {lo}" if hi is None else f"{lo} to {hi}"


def _della_check(v: Mapping[str, float]) -> str | None:
    d, e = v["density"], v["epsilon"]
    if d < 1.0 and not (d - e > 0.0 and d + e < 1.0):
        return f"della keeps entries with probability density +- epsilon, which must lie in (0, 1) (got " \
               f"density {d:g}, epsilon {e:g})"
    return None


def _breadcrumbs_check(v: Mapping[str, float]) -> str | None:
    if v["density"] < 1.0 and v["density"] + v["gamma"] > 1.0 + 1e-12:  # density 1 keeps everything
        return f"breadcrumbs keeps density and drops gamma of the entries, so density + gamma must be at " \
               f"most 1 (got {v['density']:g} + {v['gamma']:g})"
    return None


_TV = ("density", "scale")
METHOD_TABLE: tuple[MethodSpec, ...] = (
    MethodSpec("linear", "weighted average of the models", "linear", "optional", 2, None, True,
               interpolate="weights"),
    MethodSpec("task_arithmetic", "base + scale * weighted sum of task vectors", "task_vectors", "required",
               1, None, False, ("scale",), reference="https://arxiv.org/abs/2212.04089"),
    MethodSpec("slerp", "spherical interpolation of two models at t", "slerp", "none", 2, 2, False,
               ("t", "dot_threshold"), weights=False, interpolate="t"),
    MethodSpec("nuslerp", "spherical interpolation at t = w2 / (w1 + w2), of task vectors with a base",
               "nuslerp", "optional", 2, 2, False, ("nuslerp_flatten", "nuslerp_row_wise"), interpolate="weights"),
    MethodSpec("ties", "trim to density, elect signs, disjoint mean", "task_vectors", "required", 1, None,
               True, _TV, sparsify="magnitude", consensus=True, reference="https://arxiv.org/abs/2306.01708"),
    MethodSpec("dare_linear", "random drop (1 - density), rescale, add", "task_vectors", "required", 1, None,
               False, _TV, sparsify="random", reference="https://arxiv.org/abs/2311.03099"),
    MethodSpec("dare_ties", "random drop (1 - density), rescale, TIES signs", "task_vectors", "required", 1,
               None, False, _TV, sparsify="random", consensus=True, reference="https://arxiv.org/abs/2311.03099"),
    MethodSpec("breadcrumbs", "drop gamma largest and the smallest entries (keep density), add",
               "task_vectors", "required", 1, None, False, (*_TV, "gamma"), sparsify="outliers",
               check=_breadcrumbs_check, reference="https://arxiv.org/abs/2312.06795"),
    MethodSpec("breadcrumbs_ties", "breadcrumbs with TIES signs", "task_vectors", "required", 1, None, False,
               (*_TV, "gamma"), sparsify="outliers", consensus=True, check=_breadcrumbs_check,
               reference="https://arxiv.org/abs/2312.06795"),
    MethodSpec("della", "keep by magnitude rank (density +- epsilon), rescale, TIES signs", "task_vectors",
               "required", 1, None, True, (*_TV, "epsilon"), sparsify="della", consensus=True,
               check=_della_check, reference="https://arxiv.org/abs/2406.11617"),
    MethodSpec("della_linear", "keep by magnitude rank (density +- epsilon), rescale, add", "task_vectors",
               "required", 1, None, False, (*_TV, "epsilon"), sparsify="della", check=_della_check,
               reference="https://arxiv.org/abs/2406.11617"),
    MethodSpec("model_stock", "base + t (mean - base), t from the task vectors' mean cosine", "model_stock",
               "required", 2, None, False, ("filter_wise",), weights=False, reference="https://arxiv.org/abs/2403.19522"),
)
REGISTRY: dict[str, MethodSpec] = {m.name: m for m in METHOD_TABLE}
METHODS: tuple[str, ...] = tuple(REGISTRY)
INTERPOLATING: tuple[str, ...] = tuple(m.name for m in METHOD_TABLE if m.interpolate)
Method = Literal[METHODS]  # type: ignore[valid-type]


def method_spec(name: str) -> MethodSpec:
    return REGISTRY[name]


def interpolation_point(method: str, t: float) -> dict[str, Any]:
    """The parameters of the point ``t`` between two models (0: the first) for an interpolating method."""
    how = REGISTRY[method].interpolate
    if how is None:
        raise ValueError(f"method {method} does not interpolate two models")
    return {"t": t} if how == "t" else {"weights": [1.0 - t, t]}


def methods_help() -> str:
    """One line per method, for ``poise merge -h``."""
    lines = []
    for m in METHOD_TABLE:
        base = {"required": "base", "optional": "base optional", "none": "no base"}[m.base]
        extra = ", ".join(m.params)
        n = f"{m.min_models}" + ("+" if m.max_models is None else "" if m.max_models == m.min_models
                                 else f"-{m.max_models}")
        lines.append(f"  {m.name:<17} {m.summary} ({n} models, {base}"
                     + (f"; {extra}" if extra else "") + ")")
    return "\n".join(lines)


# --------------------------------------------------------------------------- recipes: parameters and rules


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class TensorRule(_Strict):
    """Parameters for the tensors whose name matches ``pattern`` (fnmatch glob; the first match wins).

    ``skip`` copies the tensor from the reference model (the base, or else the first model) unmerged.
    """

    pattern: str = Field(min_length=1)
    skip: bool = False
    weights: list[float] | None = None
    density: float | None = PARAMS["density"].field(optional=True)
    t: float | None = PARAMS["t"].field(optional=True)
    scale: float | None = PARAMS["scale"].field(optional=True)
    gamma: float | None = PARAMS["gamma"].field(optional=True)
    epsilon: float | None = PARAMS["epsilon"].field(optional=True)


def parse_rule(text: str) -> dict[str, object]:
    """``PATTERN:key=value;...`` or ``PATTERN:skip`` → a TensorRule's fields (weights comma-separated)."""
    pattern, sep, body = text.rpartition(":")
    if not sep or not pattern:
        raise UserError(f"expected PATTERN:key=value;... or PATTERN:skip (got {text!r})", where="--rule")
    rule: dict[str, object] = {"pattern": pattern}
    for item in filter(None, (p.strip() for p in body.split(";"))):
        if item == "skip":
            rule["skip"] = True
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in RULE_KEYS:
            raise UserError(f"expected skip or one of {', '.join(k + '=' for k in RULE_KEYS)} (got {item!r})",
                            where="--rule")
        try:
            rule[key] = [float(v) for v in value.split(",")] if key == "weights" else float(value)
        except ValueError:
            raise UserError(f"expected numbers in {item!r}", where="--rule") from None
    return rule


class MergeParams(_Strict):
    """A merge method and its parameters (the part of a merge that does not name models)."""

    method: Method = "linear"
    weights: list[float] | None = Field(None, description="one per model (not the base); default equal")
    density: float = PARAMS["density"].field()
    t: float = PARAMS["t"].field()
    scale: float = PARAMS["scale"].field()
    gamma: float = PARAMS["gamma"].field()
    epsilon: float = PARAMS["epsilon"].field()
    normalize: bool | None = Field(None, description="divide by the sum of weights; default per method")
    dot_threshold: float = PARAMS["dot_threshold"].field()
    nuslerp_flatten: bool = PARAMS["nuslerp_flatten"].field()
    nuslerp_row_wise: bool = PARAMS["nuslerp_row_wise"].field()
    filter_wise: bool = PARAMS["filter_wise"].field()
    rules: list[TensorRule] = Field(default_factory=list, description="per-tensor parameters by name pattern")
    exclude: list[str] = Field(default_factory=list, description="tensors copied from the reference model")
    dtype: OutDtype = Field("auto", description="output dtype; auto keeps the reference model's")

    @property
    def spec(self) -> MethodSpec:
        return REGISTRY[self.method]

    def check(self, n_models: int, has_base: bool, *, where: str = "merge") -> None:
        """Raise a one-line UserError when the parameters don't fit ``n_models`` (plus an optional base)."""
        m, spec = self.method, self.spec
        if n_models < 1:
            raise UserError("expected at least one model to merge", where=where, field="models")
        if spec.base == "required" and not has_base:
            raise UserError(
                f"method {m} needs a base model (the task vectors are taken against it); expected --base",
                where=where,
                field="base",
            )
        if spec.base == "none" and has_base:
            raise UserError(
                f"method {m} takes no base: it interpolates from the first model (t=0) to the second (t=1)",
                where=where,
                field="base",
            )
        if n_models < spec.min_models or (spec.max_models is not None and n_models > spec.max_models):
            raise UserError(
                f"method {m} merges {spec.models_text()} models (got {n_models})", where=where, field="models"
            )
        weight_sets = [("weights", self.weights)] + [
            (f"rules[{i}].weights", r.weights) for i, r in enumerate(self.rules)
        ]
        for fld, w in weight_sets:
            if w is None:
                continue
            if not spec.weights:
                takes = "takes t, not weights" if spec.interpolate == "t" else "takes no weights"
                raise UserError(f"method {m} {takes}", where=where, field=fld)
            if len(w) != n_models:
                raise UserError(
                    f"expected {n_models} weights, one per model"
                    f"{' (the base takes none)' if has_base else ''}"
                    f" (got {len(w)})",
                    where=where,
                    field=fld,
                )
            if not all(np.isfinite(w)):
                raise UserError(f"expected finite weights (got {w})", where=where, field=fld)
            if self.normalized and abs(sum(w)) < 1e-8:
                raise UserError(
                    f"weights sum to 0, so they cannot be normalised (got {w}); expected a non-zero sum "
                    "or normalize = false",
                    where=where,
                    field=fld,
                )
        if spec.check is not None:
            for i, values in [(None, self._values(None)), *((i, self._values(r)) for i, r in enumerate(self.rules))]:
                problem = spec.check(values)
                if problem:
                    raise UserError(problem, where=where, field=f"rules[{i}]" if i is not None else spec.params[-1])

    def _values(self, rule: TensorRule | None) -> dict[str, float]:
        out = {k: float(getattr(self, k)) for k in PARAMS}
        if rule is not None:
            out.update({k: float(v) for k in PARAMS if (v := getattr(rule, k, None)) is not None})
        return out

    @property
    def normalized(self) -> bool:
        return self.spec.normalize if self.normalize is None else self.normalize

    def default_weights(self, n_models: int) -> list[float]:
        return [1.0] * n_models

    def for_tensor(self, name: str, n_models: int) -> TensorParams:
        """The parameters that apply to tensor ``name``: the first matching rule overrides the defaults."""
        skip = any(fnmatch.fnmatchcase(name, p) for p in self.exclude)
        weights, match = self.weights, None
        for rule in self.rules:
            if fnmatch.fnmatchcase(name, rule.pattern):
                skip = skip or rule.skip
                weights = rule.weights if rule.weights is not None else weights
                match = rule
                break
        w = np.asarray(weights if weights is not None else self.default_weights(n_models), dtype=np.float64)
        return TensorParams(self.method, w, self.normalized, skip, self._values(match))


@dataclass(frozen=True)
class TensorParams:
    """Resolved parameters for one tensor: ``p.density``, ``p.t``, … read ``values``."""

    method: str
    weights: np.ndarray
    normalize: bool
    skip: bool
    values: dict[str, float] = field(default_factory=dict)

    @property
    def spec(self) -> MethodSpec:
        return REGISTRY[self.method]

    def __getattr__(self, name: str) -> float:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)
