"""What to merge and how: the method, its parameters, per-tensor rules, and the checks on them.

Methods and their defaults follow mergekit's, so a merge reads the same in both tools:

* ``linear`` — weighted average Σ wᵢθᵢ / Σ wᵢ (weights default to equal);
* ``task_arithmetic`` — θ_base + λ Σ wᵢ(θᵢ − θ_base) (weights default to 1);
* ``slerp`` — spherical interpolation of two models at ``t`` (0 gives the first), falling back to
  linear interpolation when the flattened tensors are nearly colinear (|cos| > ``dot_threshold``);
* ``ties`` — trim each task vector to its ``density`` largest magnitudes, elect a sign per entry (sign of
  the weighted sum), average only the entries that agree with it (disjoint mean);
* ``dare_linear`` / ``dare_ties`` — drop task-vector entries with probability p = 1 − ``density``
  (seeded), rescale the survivors by 1/(1 − p), then add them (linear) or combine them as TIES does.

``normalize`` (divide by the sum of weights) defaults per method as in mergekit: on for linear and
ties, off for task arithmetic and both DARE variants. ``scale`` is mergekit's ``lambda``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from poise.errors import UserError

Method = Literal["linear", "task_arithmetic", "slerp", "ties", "dare_linear", "dare_ties"]
METHODS: tuple[str, ...] = ("linear", "task_arithmetic", "slerp", "ties", "dare_linear", "dare_ties")
NEEDS_BASE = frozenset({"task_arithmetic", "ties", "dare_linear", "dare_ties"})
DEFAULT_NORMALIZE = {
    "linear": True,
    "task_arithmetic": False,
    "slerp": False,
    "ties": True,
    "dare_linear": False,
    "dare_ties": False,
}
OutDtype = Literal["auto", "float32", "float16", "bfloat16", "float64"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class TensorRule(_Strict):
    """Parameters for the tensors whose name matches ``pattern`` (fnmatch glob; the first match wins).

    ``skip`` copies the tensor from the reference model (the base, or else the first model) unmerged.
    """

    pattern: str = Field(min_length=1)
    skip: bool = False
    weights: list[float] | None = None
    density: float | None = Field(None, gt=0.0, le=1.0)
    t: float | None = Field(None, ge=0.0, le=1.0)
    scale: float | None = None


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
        if not eq or key not in ("weights", "density", "t", "scale"):
            raise UserError(f"expected skip, weights=, density=, t= or scale= (got {item!r})", where="--rule")
        try:
            rule[key] = [float(v) for v in value.split(",")] if key == "weights" else float(value)
        except ValueError:
            raise UserError(f"expected numbers in {item!r}", where="--rule") from None
    return rule


class MergeParams(_Strict):
    """A merge method and its parameters (the part of a merge that does not name models)."""

    method: Method = "linear"
    weights: list[float] | None = Field(None, description="one per model (not the base); default equal")
    density: float = Field(
        1.0, gt=0.0, le=1.0, description="ties: share of entries kept; dare: 1 - drop rate"
    )
    t: float = Field(
        0.5, ge=0.0, le=1.0, description="slerp: position between the first (0) and second (1) model"
    )
    scale: float = Field(1.0, description="multiplier of the combined task vector (mergekit's lambda)")
    normalize: bool | None = Field(None, description="divide by the sum of weights; default per method")
    dot_threshold: float = Field(
        0.9995, gt=0.0, le=1.0, description="slerp: |cos| above this interpolates linearly"
    )
    rules: list[TensorRule] = Field(default_factory=list, description="per-tensor parameters by name pattern")
    exclude: list[str] = Field(default_factory=list, description="tensors copied from the reference model")
    dtype: OutDtype = Field("auto", description="output dtype; auto keeps the reference model's")

    def check(self, n_models: int, has_base: bool, *, where: str = "merge") -> None:
        """Raise a one-line UserError when the parameters don't fit ``n_models`` (plus an optional base)."""
        m = self.method
        if n_models < 1:
            raise UserError("expected at least one model to merge", where=where, field="models")
        if m in NEEDS_BASE and not has_base:
            raise UserError(
                f"method {m} needs a base model (the task vectors are taken against it); expected --base",
                where=where,
                field="base",
            )
        if m == "slerp":
            if n_models != 2:
                raise UserError(
                    f"method slerp interpolates exactly 2 models (got {n_models})",
                    where=where,
                    field="models",
                )
            if has_base:
                raise UserError(
                    "method slerp takes no base: it interpolates from the first model (t=0) to the "
                    "second (t=1)",
                    where=where,
                    field="base",
                )
        elif m == "linear" and n_models < 2:
            raise UserError("method linear averages at least 2 models (got 1)", where=where, field="models")
        weight_sets = [("weights", self.weights)] + [
            (f"rules[{i}].weights", r.weights) for i, r in enumerate(self.rules)
        ]
        for field, w in weight_sets:
            if w is None:
                continue
            if m == "slerp":
                raise UserError("method slerp takes t, not weights", where=where, field=field)
            if len(w) != n_models:
                raise UserError(
                    f"expected {n_models} weights, one per model"
                    f"{' (the base takes none)' if has_base else ''}"
                    f" (got {len(w)})",
                    where=where,
                    field=field,
                )
            if not all(np.isfinite(w)):
                raise UserError(f"expected finite weights (got {w})", where=where, field=field)
            if self.normalized and abs(sum(w)) < 1e-8:
                raise UserError(
                    f"weights sum to 0, so they cannot be normalised (got {w}); expected a non-zero sum "
                    "or normalize = false",
                    where=where,
                    field=field,
                )

    @property
    def normalized(self) -> bool:
        return DEFAULT_NORMALIZE[self.method] if self.normalize is None else self.normalize

    def default_weights(self, n_models: int) -> list[float]:
        return [1.0] * n_models

    def for_tensor(self, name: str, n_models: int) -> TensorParams:
        """The parameters that apply to tensor ``name``: the first matching rule overrides the defaults."""
        skip = any(fnmatch.fnmatchcase(name, p) for p in self.exclude)
        weights, density, t, scale = self.weights, self.density, self.t, self.scale
        for rule in self.rules:
            if fnmatch.fnmatchcase(name, rule.pattern):
                skip = skip or rule.skip
                weights = rule.weights if rule.weights is not None else weights
                density = rule.density if rule.density is not None else density
                t = rule.t if rule.t is not None else t
                scale = rule.scale if rule.scale is not None else scale
                break
        w = np.asarray(weights if weights is not None else self.default_weights(n_models), dtype=np.float64)
        return TensorParams(
            self.method,
            w,
            float(density),
            float(t),
            float(scale),
            self.normalized,
            float(self.dot_threshold),
            skip,
        )


@dataclass(frozen=True)
class TensorParams:
    """Resolved parameters for one tensor."""

    method: str
    weights: np.ndarray
    density: float
    t: float
    scale: float
    normalize: bool
    dot_threshold: float
    skip: bool
