"""Merge arithmetic on in-memory state dicts: hypothesis properties and hand-checked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poise.errors import UserError
from poise.merging import merge_state_dicts
from poise.merging.kernels import KERNELS, slerp_coefficients
from poise.merging.spec import METHODS, PARAMS, REGISTRY, MergeParams

FAST = settings(max_examples=40, deadline=None)
shapes = st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple)
seeds = st.integers(0, 2**31 - 1)


def rand_sd(shape: tuple[int, ...], seed: int, n: int = 1) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "w": torch.randn(shape, generator=g),
            "b": torch.randn(shape[-1:], generator=g),
            "steps": torch.tensor([3], dtype=torch.long),
        }
        for _ in range(n)
    ]


@FAST
@given(
    shape=shapes,
    seed=seeds,
    method=st.sampled_from(METHODS),
    density=st.floats(0.4, 1.0),
)
def test_merging_a_model_with_itself_returns_it(shape, seed, method, density):
    (m,) = rand_sd(shape, seed)
    if method in ("slerp", "nuslerp"):
        out = merge_state_dicts([m, m], method=method)
    elif method == "linear":
        out = merge_state_dicts([m, m, m], method="linear", weights=[0.2, 0.5, 0.3])
    else:  # the task vectors against itself are zero
        # breadcrumbs drops gamma beside keeping density: a valid pair has density + gamma <= 1 (or density 1)
        extra = {"gamma": min(0.01, 1 - density)} if method.startswith("breadcrumbs") else {}
        out = merge_state_dicts([m, m], base=m, method=method, density=density, epsilon=0.1 * density * (1 - density),
                                **extra)
    for k in m:
        torch.testing.assert_close(out[k], m[k], rtol=1e-6, atol=1e-6)
        assert out[k].dtype == m[k].dtype


@FAST
@given(
    shape=shapes,
    seed=seeds,
    c=st.floats(-100, 100),
    raw=st.lists(st.floats(0.01, 10), min_size=2, max_size=5),
)
def test_linear_weights_summing_to_one_keep_a_constant_tensor_constant(shape, seed, c, raw):
    weights = [w / sum(raw) for w in raw]
    models = [{"w": torch.full(shape, c)} for _ in weights]
    out = merge_state_dicts(models, method="linear", weights=weights, normalize=False)
    torch.testing.assert_close(out["w"], torch.full(shape, c), rtol=1e-5, atol=1e-5 * (1 + abs(c)))


@FAST
@given(shape=shapes, seed=seeds)
def test_slerp_endpoints_are_the_models(shape, seed):
    a, b = rand_sd(shape, seed, 2)
    for t, want in ((0.0, a), (1.0, b)):
        out = merge_state_dicts([a, b], method="slerp", t=t)
        torch.testing.assert_close(out["w"], want["w"], rtol=1e-5, atol=1e-6)


@FAST
@given(shape=shapes, seed=seeds, n=st.integers(2, 4))
def test_ties_density_one_with_agreeing_signs_is_the_mean_task_vector(shape, seed, n):
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(shape, generator=g)}
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
    deltas = [sign * (0.1 + torch.rand(shape, generator=g)) for _ in range(n)]
    models = [{"w": base["w"] + d} for d in deltas]
    out = merge_state_dicts(models, base=base, method="ties", density=1.0)
    torch.testing.assert_close(out["w"], base["w"] + torch.stack(deltas).mean(0), rtol=1e-5, atol=1e-5)


@FAST
@given(
    shape=shapes,
    seed=seeds,
    chunk=st.integers(1, 13),
    method=st.sampled_from(METHODS),
)
def test_chunking_never_changes_the_result(shape, seed, chunk, method):
    *models, base = rand_sd(shape, seed, 3)
    kw = {"base": base} if REGISTRY[method].base == "required" else {}
    whole = merge_state_dicts(models, method=method, density=0.5, seed=7, **kw)
    pieces = merge_state_dicts(models, method=method, density=0.5, seed=7, chunk=chunk, **kw)
    for k in whole:
        torch.testing.assert_close(pieces[k], whole[k], rtol=1e-6, atol=1e-6)


def test_slerp_matches_the_formula_and_falls_back_to_lerp_when_colinear():
    a = torch.tensor([1.0, 0.0])
    b = torch.tensor([0.0, 2.0])
    out = merge_state_dicts([{"w": a}, {"w": b}], method="slerp", t=0.5)["w"]
    # unnormalised slerp on the angle between a and b (90°): sin(θ/2)/sin θ (a + b)
    c = math.sin(math.pi / 4) / math.sin(math.pi / 2)
    torch.testing.assert_close(out, c * (a + b))
    assert slerp_coefficients(1.0, 2.0, 2.0, 0.25, 0.9995) == (0.75, 0.25)  # colinear: plain lerp
    out = merge_state_dicts([{"w": a}, {"w": 3 * a}], method="slerp", t=0.25)["w"]
    torch.testing.assert_close(out, torch.tensor([1.5, 0.0]))


def test_ties_trims_elects_and_takes_the_disjoint_mean():
    base = {"w": torch.zeros(4)}
    m1 = {"w": torch.tensor([3.0, -1.0, 0.5, 2.0])}
    m2 = {"w": torch.tensor([-1.0, -2.0, 4.0, 0.1])}
    out = merge_state_dicts([m1, m2], base=base, method="ties", density=0.5)["w"]
    # kept: m1 → [3, 0, 0, 2], m2 → [0, -2, 4, 0]; signs elected per entry; the mean of those that agree
    torch.testing.assert_close(out, torch.tensor([3.0, -2.0, 4.0, 2.0]))
    m2 = {"w": torch.tensor([-4.0, -2.0, 4.0, 0.1])}
    out = merge_state_dicts([m1, m2], base=base, method="ties", density=0.5)["w"]
    torch.testing.assert_close(out, torch.tensor([-4.0, 0.0, 4.0, 2.0]))  # -4 outvotes 3; -2 is trimmed now


def test_dare_is_seeded_unbiased_and_rescaled():
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(20_000, generator=g)}
    tau = torch.randn(20_000, generator=g)
    model = {"w": base["w"] + tau}
    one = merge_state_dicts([model], base=base, method="dare_linear", density=0.3, seed=1)["w"]
    again = merge_state_dicts([model], base=base, method="dare_linear", density=0.3, seed=1)["w"]
    other = merge_state_dicts([model], base=base, method="dare_linear", density=0.3, seed=2)["w"]
    assert torch.equal(one, again) and not torch.equal(one, other)
    ratio = (one - base["w"]) / tau
    kept = ratio.abs() > 0.5
    assert abs(kept.float().mean().item() - 0.3) < 0.02  # binomial sd 0.003
    torch.testing.assert_close(one, base["w"] + torch.where(kept, tau / 0.3, 0.0), rtol=1e-5, atol=1e-5)
    mean = torch.stack(
        [
            merge_state_dicts([model], base=base, method="dare_linear", density=0.3, seed=s)["w"]
            for s in range(40)
        ]
    ).mean(0)
    err = (mean - model["w"]).abs().mean() / tau.abs().mean()
    assert err < 0.2  # E[DARE] = the task vector itself (relative sd ≈ sqrt(0.7 / (0.3·40)) ≈ 0.24 per entry)


def test_non_float_tensors_come_from_the_reference_and_dtypes_are_kept():
    a = {"w": torch.randn(3, dtype=torch.float16), "n": torch.tensor([1])}
    b = {"w": torch.randn(3, dtype=torch.float16), "n": torch.tensor([2])}
    base = {"w": torch.zeros(3, dtype=torch.float16), "n": torch.tensor([7])}
    out = merge_state_dicts([a, b], base=base, method="task_arithmetic")
    assert out["w"].dtype == torch.float16 and out["n"].item() == 7
    torch.testing.assert_close(out["w"], (a["w"].float() + b["w"].float()).half())
    assert merge_state_dicts([a, b], method="linear")["n"].item() == 1


def test_rules_and_excludes_pick_parameters_by_name():
    a = {"layer.0.w": torch.ones(2), "layer.1.w": torch.ones(2), "head.w": torch.ones(2)}
    b = {k: 3 * v for k, v in a.items()}
    out = merge_state_dicts(
        [a, b], method="linear", rules=[{"pattern": "layer.1.*", "weights": [0.0, 1.0]}], exclude=["head.*"]
    )
    assert out["layer.0.w"].tolist() == [2.0, 2.0]
    assert out["layer.1.w"].tolist() == [3.0, 3.0]
    assert out["head.w"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"method": "ties"}, "needs a base"),
        ({"method": "linear", "weights": [1.0]}, "expected 2 weights"),
        ({"method": "ties", "density": 0.0, "base": "x"}, "greater than 0"),
        ({"method": "ties", "density": 1.5, "base": "x"}, "less than or equal to 1"),
        ({"method": "della", "density": 0.9, "base": "x"}, "density \\+- epsilon"),
        ({"method": "della", "epsilon": 1.0, "base": "x"}, "less than 1"),
        ({"method": "breadcrumbs", "density": 0.9, "gamma": 0.2, "base": "x"}, "density \\+ gamma"),
        ({"method": "breadcrumbs", "gamma": -0.1, "base": "x"}, "greater than or equal to 0"),
        ({"method": "model_stock", "weights": [1.0, 2.0], "base": "x"}, "takes no weights"),
        ({"method": "model_stock"}, "needs a base"),
        ({"method": "breadcrumbs", "density": 1.0, "gamma": 0.5, "base": "ok"}, None),
        ({"method": "nuslerp", "weights": [1.0]}, "expected 2 weights"),
        ({"method": "della", "rules": [{"pattern": "w", "density": 0.95}], "base": "x"}, "rules\\[0\\]"),
    ],
)
def test_bad_parameters_are_one_line_user_errors(kw, match):
    a, b, base = rand_sd((2, 3), 0, 3)
    if kw.pop("base", None):
        kw["base"] = base
    if match is None:  # accepted
        merge_state_dicts([a, b], **kw)
        return
    with pytest.raises(UserError, match=match) as e:
        merge_state_dicts([a, b], **kw)
    assert "\n" not in str(e.value)


def test_a_mismatching_tensor_is_named():
    a, b = rand_sd((2, 3), 0, 2)
    b["w"] = torch.zeros(3, 2)
    with pytest.raises(UserError, match=r"tensor 'w' has shape \(3, 2\) in model 2; expected \(2, 3\)"):
        merge_state_dicts([a, b], method="linear")
    del b["w"]
    with pytest.raises(UserError, match="tensor 'w' of model 1 is missing from model 2"):
        merge_state_dicts([a, b], method="linear")


def test_numpy_and_torch_agree_on_a_hand_computed_task_arithmetic():
    base = {"w": torch.tensor([1.0, 2.0])}
    out = merge_state_dicts(
        [{"w": torch.tensor([2.0, 2.0])}, {"w": torch.tensor([1.0, 4.0])}],
        base=base,
        method="task_arithmetic",
        weights=[0.5, 1.0],
        scale=2.0,
    )["w"]
    assert np.allclose(out.numpy(), [1 + 2 * 0.5, 2 + 2 * 2.0])


def test_every_method_in_the_table_has_a_kernel_and_valid_defaults():
    for name, spec in REGISTRY.items():
        assert spec.kernel in KERNELS, name
        assert set(spec.params) <= set(PARAMS), name
        if spec.check is not None:  # the defaults pass the method's own cross-parameter check
            assert spec.check({k: p.default for k, p in PARAMS.items()} | {"density": 0.5}) is None, name


def test_model_stock_needs_two_models_and_nuslerp_exactly_two():
    a, b, c, base = rand_sd((2, 3), 0, 4)
    with pytest.raises(UserError, match="model_stock merges at least 2 models"):
        merge_state_dicts([a], base=base, method="model_stock")
    with pytest.raises(UserError, match="nuslerp merges exactly 2 models"):
        merge_state_dicts([a, b, c], method="nuslerp")


def test_model_stock_of_orthogonal_task_vectors_keeps_the_base_and_of_equal_ones_takes_them():
    base = {"w": torch.zeros(4)}
    a, b = {"w": torch.tensor([1.0, 0, 0, 0])}, {"w": torch.tensor([0, 1.0, 0, 0])}
    out = merge_state_dicts([a, b], base=base, method="model_stock")["w"]  # cos 0 → t 0
    torch.testing.assert_close(out, torch.zeros(4))
    out = merge_state_dicts([a, a], base=base, method="model_stock")["w"]  # cos 1 → t 1: their mean
    torch.testing.assert_close(out, a["w"])


def test_breadcrumbs_drops_the_largest_and_the_smallest_entries():
    base = {"w": torch.zeros(10)}
    m = {"w": torch.arange(1.0, 11.0)}
    out = merge_state_dicts([m], base=base, method="breadcrumbs", density=0.5, gamma=0.2)["w"]
    assert out.tolist() == [0, 0, 0, 4.0, 5.0, 6.0, 7.0, 8.0, 0, 0]


def test_della_keeps_large_entries_more_often_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.zeros(64, 512)}
    m = {"w": torch.randn(64, 512, generator=g)}
    kw = {"base": base, "method": "della_linear", "density": 0.5, "epsilon": 0.3, "seed": 3}
    out = merge_state_dicts([m], **kw)["w"]
    assert torch.equal(out, merge_state_dicts([m], **kw)["w"])
    assert not torch.equal(out, merge_state_dicts([m], **{**kw, "seed": 4})["w"])
    kept = out != 0
    mag = m["w"].abs()
    order = mag.argsort(dim=1)
    low, high = kept.gather(1, order[:, :128]).float().mean(), kept.gather(1, order[:, -128:]).float().mean()
    assert abs(kept.float().mean() - 0.5) < 0.01
    assert abs(low - 0.275) < 0.02 and abs(high - 0.725) < 0.02  # p: 0.2 → 0.8 by rank (quarters: ~0.275, ~0.725)
    scale = out[kept] / m["w"][kept]  # survivors rescaled so the L1 norm is kept
    torch.testing.assert_close(scale, torch.full_like(scale, float(mag.sum() / mag[kept].sum())))


def test_parameters_of_the_table_are_recipe_fields_and_rule_keys():
    from poise.merging.spec import RULE_KEYS, TensorRule, parse_rule

    assert set(PARAMS) <= set(MergeParams.model_fields)
    assert set(RULE_KEYS) <= set(TensorRule.model_fields)
    assert parse_rule("mlp.*:gamma=0.1;epsilon=0.05") == {"pattern": "mlp.*", "gamma": 0.1, "epsilon": 0.05}


def test_a_sweep_interpolates_with_the_methods_the_table_marks():
    from pydantic import ValidationError

    from poise.merging.spec import INTERPOLATING, interpolation_point
    from poise.merging.sweep import SweepModelCfg

    assert set(INTERPOLATING) == {"linear", "slerp", "nuslerp"}
    for method in INTERPOLATING:
        SweepModelCfg(models=["a", "b"], method=method)
    assert interpolation_point("slerp", 0.3) == {"t": 0.3}
    assert interpolation_point("nuslerp", 0.3) == {"weights": [0.7, 0.3]}
    with pytest.raises(ValidationError):
        SweepModelCfg(models=["a", "b"], method="ties")
