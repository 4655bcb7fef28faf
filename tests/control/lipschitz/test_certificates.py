"""Certificates: lower ≤ upper on random networks; both equal ‖W‖₂ for one linear layer; LipSDP ≤ product."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from poise.control.lipschitz import one_thread
from poise.control.lipschitz.certificates import certify, lipsdp_neuron, network_layers, product_bound
from poise.control.lipschitz.policies import GroupSort, PolicyCfg, build_policy, settle


def _mlp(seed: int, widths: list[int], act: str) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), {"relu": nn.ReLU, "tanh": nn.Tanh, "groupsort": GroupSort}[act]()]
    return nn.Sequential(*layers[:-1]).double()


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    act=st.sampled_from(["relu", "tanh", "groupsort"]),
    width=st.sampled_from([2, 4, 8]),
    depth=st.integers(1, 3),
)
def test_lower_bounds_never_exceed_the_product_bound(seed: int, act: str, width: int, depth: int) -> None:
    net = _mlp(seed, [3, *[width] * depth, 2], act)
    states = torch.randn(64, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with one_thread():
        c = certify(net, states, lipsdp=False, pairs=256, seed=seed)
    assert 0 <= c.lower <= c.upper * (1 + 1e-9)  # 0 when every sampled ReLU is dead
    assert c.upper == pytest.approx(product_bound(network_layers(net)[0]))


def test_single_linear_layer_bounds_equal_its_spectral_norm() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(4, 3).double()
    w2 = float(np.linalg.norm(layer.weight.detach().numpy(), 2))
    states = torch.randn(50, 4, dtype=torch.float64)
    c = certify(layer, states, lipsdp=True, pairs=200)
    assert c.product == pytest.approx(w2, rel=1e-12)
    assert c.lipsdp == pytest.approx(w2, rel=1e-12)
    assert c.jacobian == pytest.approx(w2, rel=1e-9)  # the Jacobian of a linear map is W everywhere
    assert c.pairs == pytest.approx(w2, rel=1e-4)  # along the top singular direction


def test_lipsdp_is_valid_and_tighter_than_the_product() -> None:
    net = _mlp(3, [2, 8, 8, 1], "relu")
    states = torch.randn(400, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    c = certify(net, states, lipsdp=True, pairs=2000)
    assert c.lipsdp is not None
    assert c.lower <= c.lipsdp * (1 + 1e-6) <= c.product * (1 + 1e-6)
    # cross-check the SDP against a direct feasibility check of M(ρ, T) at the returned value
    assert lipsdp_neuron(network_layers(net)[0], solver="SCS") == pytest.approx(c.lipsdp, rel=0.05)


def test_spectral_policy_is_certified_at_alpha() -> None:
    cfg = PolicyCfg(constraint="spectral", alpha=3.0, hidden=[16, 16])
    torch.manual_seed(0)
    pol = build_policy(cfg, 2, 1)
    settle(pol)
    c = certify(pol.eval(), torch.randn(100, 2, dtype=torch.float64))
    assert c.product == pytest.approx(3.0, rel=1e-3)
    assert c.lower <= c.upper
