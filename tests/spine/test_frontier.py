"""Frontier: the Pareto set is non-dominated, every dropped point is dominated, hypervolume and knee."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from poise.errors import UserError
from poise.frontier import build_frontier, dominates, hypervolume, knee_index, pareto_mask

points_2_4d = st.integers(2, 4).flatmap(
    lambda d: st.tuples(
        arrays(np.float64, st.tuples(st.integers(1, 40), st.just(d)),
               elements=st.floats(-100, 100, allow_nan=False, width=32)),
        st.lists(st.booleans(), min_size=d, max_size=d),
    )
)


@settings(max_examples=300, deadline=None)
@given(case=points_2_4d)
def test_pareto_set_is_exactly_the_non_dominated_points(case):
    pts, maximise = case
    mask = pareto_mask(pts, maximise)
    front = pts[mask]
    for p in front:
        assert not any(dominates(q, p, maximise) for q in pts)
    for p in pts[~mask]:
        assert any(dominates(q, p, maximise) for q in front)


def brute_hv_2d_max(pts: np.ndarray, ref: np.ndarray) -> float:
    """Area dominated by points (maximising both) above ``ref``, by sweeping x."""
    pts = pts[(pts[:, 0] > ref[0]) & (pts[:, 1] > ref[1])]
    if len(pts) == 0:
        return 0.0
    xs = np.unique(np.concatenate([[ref[0]], pts[:, 0]]))
    area = 0.0
    for lo, hi in zip(xs[:-1], xs[1:], strict=True):
        ys = pts[pts[:, 0] >= hi, 1]
        if len(ys):
            area += (hi - lo) * (ys.max() - ref[1])
    return area


@settings(max_examples=200, deadline=None)
@given(pts=arrays(np.float64, st.tuples(st.integers(1, 25), st.just(2)),
                  elements=st.floats(0, 10, allow_nan=False, width=32)))
def test_hypervolume_matches_a_brute_force_sweep(pts):
    ref = np.array([-1.0, -1.0])
    assert hypervolume(pts, [True, True], ref) == pytest.approx(brute_hv_2d_max(pts, ref), rel=1e-9, abs=1e-9)
    # minimising the negated problem gives the same volume
    assert hypervolume(-pts, [False, False], -ref) == pytest.approx(brute_hv_2d_max(pts, ref), rel=1e-9, abs=1e-9)


def test_knee_is_the_balanced_point():
    pts = np.array([[1.0, 0.0], [0.9, 0.85], [0.0, 1.0], [0.5, 0.5]])
    assert knee_index(pts, [True, True]) == 1


def _done_run(store, name, kind, metrics):
    rid = store.create_run(kind=kind, name=name, config={}, config_hash=name * 4, seed=0)
    store.log_metrics(rid, [(k.split(".")[1], k.split(".")[0], d, 5, v) for k, (v, d) in metrics.items()])
    store.set_status(rid, "done")
    return rid


def test_build_frontier_from_the_store_with_filters(store):
    a = _done_run(store, "a", "vision.erm", {"utility.acc": (0.9, "max"), "robustness.rob": (0.1, "max")})
    b = _done_run(store, "b", "vision.pgd_at", {"utility.acc": (0.8, "max"), "robustness.rob": (0.5, "max")})
    c = _done_run(store, "c", "vision.pgd_at", {"utility.acc": (0.7, "max"), "robustness.rob": (0.4, "max")})
    _done_run(store, "d", "vision.erm", {"utility.acc": (0.95, "max")})  # lacks an objective: left out
    fr = build_frontier(store, ["utility.acc", "robustness.rob"])
    on = {r.id for r, f in zip(fr.runs, fr.on_front, strict=True) if f}
    assert on == {a, b} and c in {r.id for r in fr.runs}
    assert fr.hypervolume == pytest.approx((0.9 - 0.7) * (0.1 - 0.1) + (0.8 - 0.7) * (0.5 - 0.1))
    only = build_frontier(store, ["utility.acc", "robustness.rob"], filters=["kind=vision.pgd*"])
    assert {r.id for r in only.runs} == {b, c}
    with pytest.raises(UserError, match="no finished run"):
        build_frontier(store, ["utility.acc", "safety.harm"])
    with pytest.raises(UserError, match="AXIS.METRIC"):
        build_frontier(store, ["acc", "robustness.rob"])
    with pytest.raises(UserError, match="unknown filter key"):
        build_frontier(store, ["utility.acc", "robustness.rob"], filters=["colour=red"])
