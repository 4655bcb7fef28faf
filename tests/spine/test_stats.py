"""Intervals, paired and unpaired differences, verdicts and ranks, checked against scipy and by property."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

from poise.stats import Interval, difference, mean_interval, mean_ranks, verdict

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@given(st.lists(finite, min_size=2, max_size=12))
def test_mean_interval_matches_scipy(xs):
    got = mean_interval(xs)
    mean = float(np.mean(xs))
    assert got.mean == pytest.approx(mean, abs=1e-9)
    sem = sps.sem(xs)
    if sem == 0 or not math.isfinite(sem):
        assert got.low == pytest.approx(got.high, abs=1e-9)
        return
    lo, hi = sps.t.interval(0.95, len(xs) - 1, loc=mean, scale=sem)
    assert got.low == pytest.approx(lo, rel=1e-6, abs=1e-9) and got.high == pytest.approx(hi, rel=1e-6, abs=1e-9)
    assert got.low <= got.mean <= got.high


def test_one_value_has_no_interval_and_no_verdict():
    one = mean_interval([0.5])
    assert one.n == 1 and math.isnan(one.low)
    assert verdict(difference({0: 0.9}, {0: 0.1}), "greater") == "inconclusive"


@given(st.lists(st.tuples(finite, finite), min_size=2, max_size=10))
def test_paired_difference_is_the_interval_of_the_differences(pairs):
    a = {i: x for i, (x, _) in enumerate(pairs)}
    b = {i: y for i, (_, y) in enumerate(pairs)}
    d = difference(a, b)
    ref = mean_interval([x - y for x, y in pairs])
    assert d.paired is True
    assert d.mean == pytest.approx(ref.mean, abs=1e-9)
    assert d.low == pytest.approx(ref.low, abs=1e-9, nan_ok=True)


def test_unpaired_difference_is_welch():
    a = {0: 0.91, 1: 0.93, 2: 0.95}
    b = {10: 0.80, 11: 0.86, 12: 0.81, 13: 0.84}
    d = difference(a, b)
    ref = sps.ttest_ind(list(a.values()), list(b.values()), equal_var=False).confidence_interval(0.95)
    assert d.paired is False
    assert (d.low, d.high) == pytest.approx((ref.low, ref.high), rel=1e-6)


def _iv(lo: float, hi: float) -> Interval:
    return Interval((lo + hi) / 2, lo, hi, 3)


@pytest.mark.parametrize(("lo", "hi", "relation", "margin", "expected"), [
    (0.01, 0.05, "greater", 0.0, "held"),
    (-0.05, -0.01, "greater", 0.0, "not held"),
    (-0.01, 0.05, "greater", 0.0, "inconclusive"),
    (0.01, 0.05, "greater", 0.02, "inconclusive"),
    (-0.05, -0.01, "less", 0.0, "held"),
    (-0.009, 0.02, "noninferior", 0.01, "held"),
    (-0.05, -0.02, "noninferior", 0.01, "not held"),
    (-0.005, 0.005, "equivalent", 0.01, "held"),
    (0.02, 0.03, "equivalent", 0.01, "not held"),
    (0.0, 0.03, "equivalent", 0.01, "inconclusive"),
])
def test_verdicts(lo, hi, relation, margin, expected):
    assert verdict(_iv(lo, hi), relation, margin) == expected


@given(finite, st.floats(0, 100), st.floats(0, 10))
def test_verdicts_are_consistent(center, half, margin):
    iv = _iv(center - half, center + half)
    flipped = _iv(-center - half, -center + half)
    assert verdict(iv, "greater", margin) == verdict(flipped, "less", margin)
    if verdict(iv, "greater", margin) == "held":
        assert iv.low > margin and verdict(iv, "noninferior", margin) == "held"
    if verdict(iv, "equivalent", margin) == "held":
        assert -margin < iv.low and iv.high < margin


def test_bad_relation_or_margin_is_refused():
    with pytest.raises(ValueError, match="unknown relation"):
        verdict(_iv(0, 1), "bigger")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin"):
        verdict(_iv(0, 1), "greater", float("nan"))


@given(st.lists(st.lists(st.integers(0, 5), min_size=3, max_size=3), min_size=1, max_size=6))
def test_mean_ranks_sum_and_order(cols):
    scores = {name: [c[i] for c in cols] for i, name in enumerate("abc")}
    ranks = mean_ranks(scores, higher_is_better=True)
    assert sum(ranks.values()) == pytest.approx(6.0)  # 1 + 2 + 3 per column, ties sharing
    if all(scores["a"][j] > max(scores["b"][j], scores["c"][j]) for j in range(len(cols))):
        assert ranks["a"] == 1.0
