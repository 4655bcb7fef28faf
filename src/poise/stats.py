"""Means with intervals, differences between methods, and the verdict on a claim.

Every cell of a comparison is a mean over seeds with a 95 % Student-t interval. A claim compares two
rows on one metric through the interval of their difference: paired by seed when both rows have at
least two seeds in common (same seed, same data order), else Welch's unpaired interval. The verdict
is *held* only when the interval lies wholly on the claimed side, *not held* when it lies wholly on the
other side, and *inconclusive* otherwise — never from means alone.

Relations: ``greater`` (a − b > margin), ``less`` (a − b < −margin), ``noninferior`` (a − b > −margin:
"a is at most ``margin`` worse"), ``equivalent`` (|a − b| < margin).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

Relation = Literal["greater", "less", "noninferior", "equivalent"]
Verdict = Literal["held", "not held", "inconclusive"]
RELATIONS: tuple[str, ...] = ("greater", "less", "noninferior", "equivalent")


def t_quantile(level: float, df: float) -> float:
    """The two-sided Student-t critical value for ``level`` (e.g. 0.95) with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2.0, df))


@dataclass(frozen=True)
class Interval:
    """A mean and its confidence interval (``low``/``high`` are NaN with fewer than two values)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float = math.nan
    level: float = 0.95
    paired: bool | None = None

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def as_dict(self) -> dict[str, float | int | bool | None]:
        return asdict(self)

    def format(self, scale: float = 1.0, digits: int = 3) -> str:
        """``"0.961 ± 0.008"`` (``"0.961"`` for a single value), values multiplied by ``scale``."""
        if not math.isfinite(self.mean):
            return "—"
        m = self.mean * scale
        if self.n < 2 or not math.isfinite(self.half_width):
            return f"{m:.{digits}g}"
        return f"{m:.{digits}g} ± {self.half_width * scale:.2g}"


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of ``values`` with its two-sided Student-t interval."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level=level)
    mean = math.fsum(xs) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, level=level)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    h = t_quantile(level, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - h, mean + h, n, sd, level)


def difference(a: Mapping[int, float], b: Mapping[int, float], level: float = 0.95) -> Interval:
    """Interval of mean(a) − mean(b): paired over the seeds both have (≥ 2), else Welch's unpaired."""
    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        d = mean_interval([a[s] - b[s] for s in common], level)
        return Interval(d.mean, d.low, d.high, d.n, d.sd, level, paired=True)
    xa, xb = [float(v) for v in a.values()], [float(v) for v in b.values()]
    ia, ib = mean_interval(xa, level), mean_interval(xb, level)
    mean = ia.mean - ib.mean
    if ia.n < 2 or ib.n < 2:
        return Interval(mean, math.nan, math.nan, min(ia.n, ib.n), level=level, paired=False)
    va, vb = ia.sd**2 / ia.n, ib.sd**2 / ib.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Interval(mean, mean, mean, min(ia.n, ib.n), 0.0, level, paired=False)
    df = (va + vb) ** 2 / (va**2 / (ia.n - 1) + vb**2 / (ib.n - 1))
    h = t_quantile(level, df) * se
    return Interval(mean, mean - h, mean + h, min(ia.n, ib.n), se, level, paired=False)


def verdict(diff: Interval, relation: Relation, margin: float = 0.0) -> Verdict:
    """Held / not held / inconclusive for "a RELATION b (by ``margin``)" from the interval of a − b."""
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be finite and >= 0 (got {margin})")
    lo, hi = diff.low, diff.high
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if relation == "greater":
        return "held" if lo > margin else "not held" if hi < margin else "inconclusive"
    if relation == "less":
        return "held" if hi < -margin else "not held" if lo > -margin else "inconclusive"
    if relation == "noninferior":
        return "held" if lo > -margin else "not held" if hi < -margin else "inconclusive"
    if relation == "equivalent":
        if -margin < lo and hi < margin:
            return "held"
        return "not held" if (lo > margin or hi < -margin) else "inconclusive"
    raise ValueError(f"unknown relation {relation!r}; expected one of: {', '.join(RELATIONS)}")


def mean_ranks(scores: Mapping[str, Sequence[float]], higher_is_better: bool) -> dict[str, float]:
    """Average rank of each entry over the columns of ``scores`` (ties share their mean rank; 1 is best)."""
    names = list(scores)
    if not names:
        return {}
    cols = len(next(iter(scores.values())))
    totals = dict.fromkeys(names, 0.0)
    for j in range(cols):
        col = sorted(names, key=lambda k: -scores[k][j] if higher_is_better else scores[k][j])
        i = 0
        while i < len(col):
            k = i
            while k + 1 < len(col) and scores[col[k + 1]][j] == scores[col[i]][j]:
                k += 1
            for name in col[i : k + 1]:
                totals[name] += (i + k) / 2.0 + 1.0
            i = k + 1
    return {n: totals[n] / cols for n in names}
