"""Projections onto l1/l2/l∞ balls and sphere sampling (property tests, and l1 against cvxpy)."""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from poise.control.projections import (
    canonical_norm,
    lp_norm,
    parse_norm,
    project_ball,
    sample_ball,
    sample_sphere,
)

NORMS = [1.0, 2.0, math.inf]
vectors = arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 6)),
                 elements=st.floats(-5, 5, allow_nan=False, allow_subnormal=False))


@settings(max_examples=40, deadline=None)
@given(x=vectors, r=st.floats(0.01, 3.0), p=st.sampled_from(NORMS))
def test_projection_lands_in_the_ball_and_is_idempotent(x, r, p):
    t = torch.as_tensor(x)
    y = project_ball(t, r, p)
    assert torch.all(lp_norm(y, p) <= r * (1 + 1e-9) + 1e-9)
    assert torch.allclose(project_ball(y, r, p), y, atol=1e-9)
    inside = lp_norm(t, p) <= r
    assert torch.allclose(y[inside], t[inside])


@settings(max_examples=8, deadline=None)
@given(x=arrays(np.float64, 5, elements=st.floats(-3, 3, allow_nan=False, allow_subnormal=False)),
       r=st.floats(0.05, 2.0), p=st.sampled_from(NORMS))
def test_projection_is_the_euclidean_nearest_point_as_cvxpy_finds(x, r, p):
    z = cp.Variable(5)
    cp.Problem(cp.Minimize(cp.sum_squares(z - x)), [cp.norm(z, "inf" if math.isinf(p) else p) <= r]).solve()
    ours = project_ball(torch.as_tensor(x).unsqueeze(0), r, p).numpy()[0]
    assert np.sum((ours - x) ** 2) <= np.sum((z.value - x) ** 2) + 1e-5
    np.testing.assert_allclose(ours, z.value, atol=1e-3)


@pytest.mark.parametrize("p", NORMS)
def test_sphere_samples_have_exactly_the_radius_and_ball_samples_stay_inside(p):
    g = torch.Generator().manual_seed(0)
    radius = torch.tensor([0.1, 0.5, 2.0]).repeat(100)
    s = sample_sphere(300, 3, radius, p, g, dtype=torch.float64)
    assert torch.allclose(lp_norm(s, p), radius.double(), atol=1e-6)
    b = sample_ball(300, 3, radius, p, g, dtype=torch.float64)
    assert torch.all(lp_norm(b, p) <= radius.double() + 1e-9)
    assert (lp_norm(b, p) < 0.9 * radius.double()).any()  # fills the ball, not only its sphere


def test_norm_parsing():
    assert parse_norm("l1") == 1.0 and parse_norm(2) == 2.0 and math.isinf(parse_norm("linf"))
    assert canonical_norm(math.inf) == "inf" and canonical_norm("2") == 2.0
    for bad in (3, "l3", 0, True, "x"):
        with pytest.raises(ValueError, match="1, 2 or inf"):
            parse_norm(bad)
