"""Loss pieces and MTARD's balancing rules, cross-checked against torch and against their definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from poise.vision.losses import mean_plogp, soft_kl
from poise.vision.mtard import balance_temperatures, balance_weights


@pytest.mark.filterwarnings("ignore:reduction")
def test_soft_kl_matches_kldivloss():
    g = torch.Generator().manual_seed(0)
    target = F.softmax(torch.randn(8, 10, generator=g), dim=1)
    logits = torch.randn(8, 10, generator=g)
    logp = F.log_softmax(logits, dim=1)
    assert torch.allclose(soft_kl(target, logits, "mean"), torch.nn.KLDivLoss()(logp, target), atol=1e-6)
    assert torch.allclose(
        soft_kl(target, logits, "batchmean"),
        torch.nn.KLDivLoss(reduction="batchmean")(logp, target),
        atol=1e-6,
    )
    per = soft_kl(target, logits, "none")
    assert per.shape == (8,) and (per >= 0).all()
    assert torch.allclose(soft_kl(target, target.log(), "none"), torch.zeros(8), atol=1e-6)


def test_mean_plogp_is_minus_entropy_over_classes():
    logits = torch.randn(4, 5)
    p = F.softmax(logits / 2.0, dim=1)
    entropy = -(p * p.log()).sum(1).mean()
    assert torch.allclose(mean_plogp(logits, 2.0), -entropy / 5, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(w=st.floats(0, 1), r_adv=st.floats(0.01, 10), r_nat=st.floats(0.01, 10), lam=st.floats(0, 1))
def test_weight_balance_moves_towards_relative_loss(w, r_adv, r_nat, lam):
    target = r_nat / (r_adv + r_nat)
    new = balance_weights(w, r_adv, r_nat, lam)
    assert 0 <= new <= 1 + 1e-12
    assert abs(new - target) <= abs(w - target) + 1e-12  # never moves away from the target


@settings(max_examples=60, deadline=None)
@given(t_adv=st.floats(1, 10), t_nat=st.floats(1, 10), h_adv=st.floats(-1, -0.01), h_nat=st.floats(-1, -0.01))
def test_temperature_balance_stays_in_range_and_moves_oppositely(t_adv, t_nat, h_adv, h_nat):
    a, n = balance_temperatures(t_adv, t_nat, h_adv, h_nat, 0.5, 1.0, 10.0)
    assert 1.0 <= a <= 10.0 and 1.0 <= n <= 10.0
    if (
        h_adv < h_nat
    ):  # more negative p·log p: the robust teacher's output has more entropy, so it is sharpened
        assert a <= t_adv and n >= t_nat
    elif h_adv > h_nat:
        assert a >= t_adv and n <= t_nat
