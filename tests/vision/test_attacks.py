"""Attacks: our PGD against torchattacks' PGD, FGSM against torchattacks' FGSM, eps balls and clamps."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from hypothesis import given, settings
from hypothesis import strategies as st

from poise.vision.attacks import Attack, _project, pgd
from poise.vision.evaluators import accuracy, robust_accuracy
from poise.vision.losses import cw_margin_loss


def _success(model, x, y, x_adv) -> float:
    with torch.no_grad():
        return (model(x_adv).argmax(1) != y).float().mean().item()


def test_pgd_matches_torchattacks_within_one_point(trained_cnn, digits):
    x, y = digits.test
    with torch.no_grad():
        ok = trained_cnn(x).argmax(1) == y
    x, y = x[ok], y[ok]
    eps, alpha, steps = 0.1, 0.025, 10
    torch.manual_seed(1)
    ours = pgd(trained_cnn, x, y, eps=eps, steps=steps, step_size=alpha)
    torch.manual_seed(1)
    ref = torchattacks.PGD(trained_cnn, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    s_ours, s_ref = _success(trained_cnn, x, y, ours), _success(trained_cnn, x, y, ref)
    assert 0.2 < s_ref < 0.95  # the attack is neither trivial nor hopeless at this eps
    assert abs(s_ours - s_ref) <= 0.01 + 1e-9
    for adv in (ours, ref):  # same eps ball, same clamp
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1


def test_fgsm_equals_torchattacks_fgsm(trained_cnn, digits):
    x, y = digits.test[0][:200], digits.test[1][:200]
    ours = Attack("fgsm", eps=0.1)(trained_cnn, x, y)
    ref = torchattacks.FGSM(trained_cnn, eps=0.1)(x, y)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_pgd_l2_stays_in_ball_and_beats_noise(trained_cnn, digits):
    x, y = digits.test[0][:256], digits.test[1][:256]
    adv = Attack("pgd", eps=1.0, norm="l2", steps=10)(trained_cnn, x, y)
    assert (adv - x).flatten(1).norm(dim=1).max() <= 1.0 + 1e-5
    noise = (x + torch.randn_like(x) / 8.0 * 1.0 / 1.0).clamp(0, 1)  # L2 norm ≈ 1 over 64 pixels
    assert _success(trained_cnn, x, y, adv) > _success(trained_cnn, x, y, noise) + 0.2


def test_stronger_attacks_lower_accuracy(trained_cnn, digits):
    x, y = digits.test[0][:200], digits.test[1][:200]
    clean = accuracy(trained_cnn, x, y, torch.device("cpu"))
    fgsm = robust_accuracy(trained_cnn, x, y, Attack("fgsm", eps=0.1), torch.device("cpu"))
    pgd20 = robust_accuracy(trained_cnn, x, y, Attack("pgd", eps=0.1, steps=20), torch.device("cpu"))
    cw = robust_accuracy(trained_cnn, x, y, Attack("cw", eps=0.1, steps=20), torch.device("cpu"))
    assert clean > 0.8
    assert clean >= fgsm >= pgd20 - 0.02
    assert cw < clean - 0.2
    zero = robust_accuracy(trained_cnn, x, y, Attack("pgd", eps=0.0, steps=3), torch.device("cpu"))
    assert zero == pytest.approx(clean)


def test_autoattack_not_weaker_than_pgd(trained_cnn, digits):
    x, y = digits.test[0][:48], digits.test[1][:48]
    pgd_acc = robust_accuracy(trained_cnn, x, y, Attack("pgd", eps=0.1, steps=10), torch.device("cpu"))
    aa = Attack("autoattack", eps=0.1, steps=10, n_targets=2, square_queries=50)
    aa_acc = robust_accuracy(trained_cnn, x, y, aa, torch.device("cpu"))
    assert aa_acc <= pgd_acc + 1e-9


def test_restarts_only_help(trained_cnn, digits):
    x, y = digits.test[0][:200], digits.test[1][:200]
    torch.manual_seed(0)
    one = robust_accuracy(trained_cnn, x, y, Attack("pgd", eps=0.08, steps=5), torch.device("cpu"))
    three = robust_accuracy(
        trained_cnn, x, y, Attack("pgd", eps=0.08, steps=5, restarts=3), torch.device("cpu")
    )
    assert three <= one


@settings(max_examples=40, deadline=None)
@given(eps=st.floats(0.0, 1.0), norm=st.sampled_from(["linf", "l2"]), seed=st.integers(0, 2**16))
def test_projection_lands_in_ball_and_box(eps, norm, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 1, 5, 5, generator=g)
    delta = (torch.rand(4, 1, 5, 5, generator=g) - 0.5) * 4
    d = _project(x, delta.clone(), eps, norm)
    size = d.abs().flatten(1).amax(1) if norm == "linf" else d.flatten(1).norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert ((x + d) >= -1e-7).all() and ((x + d) <= 1 + 1e-7).all()


def test_cw_margin_loss():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    y = torch.tensor([0, 1])
    assert torch.allclose(cw_margin_loss(logits, y, confidence=0.0), torch.tensor([-2.0, -0.0]))
    assert torch.allclose(cw_margin_loss(logits, y), torch.tensor([-52.0, -47.0]))


def test_attack_rejects_bad_names_and_eps():
    with pytest.raises(ValueError, match="unknown attack"):
        Attack("deepfool")
    with pytest.raises(ValueError, match="eps"):
        Attack("pgd", eps=1.5)


def _legacy_and_object(recipe: str, model, x, y, objective=None, **legacy):
    """The adversarial batch of the recipe's attack object and of the old keyword call, same seed."""
    from poise.recipes import load_recipe

    from ..conftest import RECIPES

    cfg = load_recipe(RECIPES / "vision" / f"{recipe}.toml", quick=True)
    torch.manual_seed(7)
    new = cfg.train_attack()(model, x, y, objective=objective)
    torch.manual_seed(7)
    if "start" not in legacy:
        legacy["start"] = cfg.train.attack.start
    old = pgd(model, x, y, eps=cfg.threat.eps, norm=cfg.threat.norm, **legacy)
    return cfg, new, old


def test_train_attack_object_is_bit_identical_to_the_keyword_call(trained_cnn, digits):
    x, y = digits.train[0][:64], digits.train[1][:64]
    cfg, new, old = _legacy_and_object("pgd-at-digits", trained_cnn, x, y, steps=3, step_size=None, start="uniform")
    assert cfg.train.attack.steps == 3 and torch.equal(new, old) and not torch.equal(new, x)
    # TRADES: its KL to the model's own clean prediction is the objective; gaussian start
    with torch.no_grad():
        p_nat = torch.softmax(trained_cnn(x), dim=1)
    from poise.vision.attacks import kl_to
    from poise.vision.losses import soft_kl

    cfg, new, old = _legacy_and_object(
        "trades-digits", trained_cnn, x, y, objective=kl_to(p_nat), steps=3, step_size=None,
        loss=lambda logits, _y: soft_kl(p_nat, logits, "none"),
    )
    assert torch.equal(new, old)
    # fast-AT: FGSM-RS, one step of 1.25·eps from a uniform start
    # a partial [train.attack] table (steps only) keeps the kind's own start
    assert cfg.train_attack().start == "gaussian"
    cfg, new, old = _legacy_and_object(
        "fast-at-digits", trained_cnn, x, y, steps=1, step_size=1.25 * 0.2, start="uniform"
    )
    assert cfg.threat.eps == 0.2 and torch.equal(new, old)


def test_every_adversarial_trainer_builds_its_attack_from_the_recipe():
    from poise.recipes import load_recipe

    from ..conftest import RECIPES

    for name, start in [("pgd-at", "uniform"), ("trades", "gaussian"), ("ard", "uniform"), ("rslad", "gaussian"),
                        ("mtard", "gaussian")]:
        cfg = load_recipe(RECIPES / "vision" / f"{name}-cifar10.toml")
        atk = cfg.train_attack()
        assert (atk.name, atk.eps, atk.norm, atk.n_steps, atk.start) == ("pgd", 8 / 255, "linf", 10, start), name
        assert atk.step_size == pytest.approx(2 / 255), name
    fast = load_recipe(RECIPES / "vision" / "fast-at-cifar10.toml").train_attack()
    assert (fast.name, fast.n_steps, fast.start) == ("fgsm", 1, "uniform")
    assert fast.step_size == pytest.approx(1.25 * 8 / 255)


def test_autoattack_takes_no_objective(trained_cnn, digits):
    x, y = digits.test[0][:4], digits.test[1][:4]
    with pytest.raises(ValueError, match="objective"):
        Attack("autoattack", eps=0.1)(trained_cnn, x, y, objective=lambda logits, _y: logits.sum(1))
