"""Loss pieces and MTARD's balancing rules, cross-checked against torch and against their definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from poise.vision.losses import mean_plogp, soft_kl
from poise.vision.mtard import balance_temperatures, balance_weights, entropy_rate


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


@settings(max_examples=60, deadline=None)
@given(t_adv=st.floats(1, 10), t_nat=st.floats(1, 10), h_adv=st.floats(-1, -1e-6), h_nat=st.floats(-1, -1e-6))
def test_temperature_balance_is_the_ratio_rule_for_nonzero_entropies(t_adv, t_nat, h_adv, h_nat):
    sign = lambda v: (v > 0) - (v < 0)  # noqa: E731
    ref_a = min(max(t_adv - 0.01 * sign(h_adv / h_nat - 1.0), 1.0), 10.0)
    ref_n = min(max(t_nat - 0.01 * sign(h_nat / h_adv - 1.0), 1.0), 10.0)
    assert balance_temperatures(t_adv, t_nat, h_adv, h_nat, 0.01, 1.0, 10.0) == (ref_a, ref_n)


def test_saturated_teacher_raises_its_temperature_instead_of_dividing_by_zero():
    saturated = torch.zeros(4, 10)
    saturated[:, 3] = 1000.0  # one-hot soft labels: p·log p is exactly 0
    soft = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    h_sat, h_soft = mean_plogp(saturated).item(), mean_plogp(soft).item()
    assert h_sat == 0.0 and h_soft < 0
    # the clean teacher saturated: τ_nat rises to soften it, τ_adv falls
    assert balance_temperatures(5.0, 5.0, h_soft, h_sat, 0.5, 1.0, 10.0) == (4.5, 5.5)
    # the robust teacher saturated: the other way round
    assert balance_temperatures(5.0, 5.0, h_sat, h_soft, 0.5, 1.0, 10.0) == (5.5, 4.5)
    # both saturated, or a non-finite entropy: nothing to balance
    assert balance_temperatures(5.0, 3.0, 0.0, 0.0, 0.5, 1.0, 10.0) == (5.0, 3.0)
    assert balance_temperatures(5.0, 3.0, float("nan"), h_soft, 0.5, 1.0, 10.0) == (5.0, 3.0)


@given(st.integers(1, 10**6), st.integers(1, 10**6))
def test_the_entropy_rate_keeps_the_papers_travel_of_tau(meant, total):
    rate = entropy_rate(0.001, meant, total)
    assert rate * total == pytest.approx(0.001 * meant)  # τ may travel as far over any run length
    assert entropy_rate(0.001, None, total) == 0.001 and entropy_rate(0.001, meant, None) == 0.001


def test_the_digits_recipe_lets_tau_move_over_its_short_run():
    from poise.recipes import load_recipe

    from ..conftest import RECIPES

    cfg = load_recipe(RECIPES / "vision" / "mtard-digits.toml", quick=True)
    assert cfg.train.entropy_balance and cfg.train.temp_lr_steps == 117300
    # a few hundred steps: τ can cross its whole range [1, 10] several times, as over the paper's run
    assert entropy_rate(cfg.train.temp_lr, cfg.train.temp_lr_steps, 200) * 200 > 9 * 10
