"""Measurement attacks: ‖δ‖ ≤ ε; deviations stay under lip·ε; PGD beats random; the models match gym."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from poise.control.lipschitz import one_thread
from poise.control.lipschitz.experts import ExpertCfg, lqr_gain, make_expert
from poise.control.lipschitz.measurement_attacks import MeasurementAttack, rollout
from poise.control.lipschitz.policies import PolicyCfg, build_policy, settle
from poise.control.lipschitz.systems import SystemCfg, make_system


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    pol = build_policy(PolicyCfg(constraint="spectral", alpha=2.0, hidden=[16, 16]), 2, 1)
    settle(pol)
    return pol.double().eval()


@pytest.mark.parametrize("name", ["random", "pgd_action", "pgd_cost"])
def test_attacks_respect_eps_and_the_certified_bound(policy, name: str) -> None:
    system = make_system(SystemCfg(horizon=20))
    x0 = system.sample_initial(8, 0)
    eps = 0.3
    with one_thread():
        ro = rollout(system, policy, x0, attack=MeasurementAttack(name, eps, steps=4, horizon=3, seed=1))
    assert float(ro.delta_norm.max()) <= eps * (1 + 1e-9)
    assert float(ro.deviation.max()) <= 2.0 * eps * (1 + 1e-6)  # α·ε
    assert float(ro.deviation.max()) > 0


def test_pgd_action_deviates_more_than_random(policy) -> None:
    system = make_system(SystemCfg(horizon=15))
    x0 = system.sample_initial(8, 0)
    with one_thread():
        rnd = rollout(system, policy, x0, attack=MeasurementAttack("random", 0.2, seed=0)).deviation.mean()
        pgd = rollout(
            system, policy, x0, attack=MeasurementAttack("pgd_action", 0.2, steps=8, seed=0)
        ).deviation.mean()
    assert pgd > rnd


def test_negative_eps_is_rejected() -> None:
    with pytest.raises(ValueError, match="eps"):
        MeasurementAttack("random", -0.1)


def test_lqr_matches_scipy_riccati_and_stabilises() -> None:
    system = make_system(SystemCfg())
    expert = make_expert(ExpertCfg(), system)
    K = lqr_gain(system.A_np, system.B_np, system.Q_np, system.R_np)
    assert np.abs(np.linalg.eigvals(system.A_np - system.B_np @ K)).max() < 1
    ro = rollout(system, expert, system.sample_initial(16, 0), horizon=200)
    assert float(ro.final_state.norm(dim=1).max()) < 1e-3


def test_linear_model_matches_its_gym_env() -> None:
    system = make_system(SystemCfg(horizon=10))
    env = system.gym_env()
    obs, _ = env.reset(seed=0, options={"state": [0.5, -0.3]})
    x = torch.tensor([[0.5, -0.3]], dtype=torch.float64)
    for u in [0.7, -20.0, 3.0]:
        obs, r, *_ = env.step(np.array([u]))
        ut = torch.tensor([[u]], dtype=torch.float64)
        assert -r == pytest.approx(float(system.cost(x, ut)), rel=1e-9)
        x = system.step(x, ut)
        assert np.allclose(obs, x[0].numpy(), atol=1e-6)


def test_pendulum_model_matches_gymnasium_and_the_expert_swings_up() -> None:
    system = make_system(SystemCfg(name="pendulum"))
    env = gym.make("Pendulum-v1")
    env.reset(seed=0)
    env.unwrapped.state = np.array([2.5, 0.3])
    x = torch.tensor([[2.5, 0.3]], dtype=torch.float64)
    for u in [1.5, -2.0, 3.0, 0.2]:
        obs, r, *_ = env.step(np.array([u], np.float32))
        ut = torch.tensor([[u]], dtype=torch.float64)
        assert -r == pytest.approx(float(system.cost(x, ut)), rel=1e-5)
        x = system.step(x, ut)
        assert np.allclose(obs, system.observe(x)[0].numpy(), atol=1e-5)
    expert = make_expert(ExpertCfg(name="energy_lqr"), system)
    ro = rollout(system, expert, system.sample_initial(8, 0), horizon=200)
    upright = ((ro.final_state[:, 0] + math.pi) % (2 * math.pi) - math.pi).abs()
    assert float(upright.max()) < 0.05
