"""Random δ, MAS and LAS: PGD finds the analytic optimum, budgets hold, LAS(H=1) is MAS, copies agree."""

from __future__ import annotations

import math
import threading

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.pendulum import PendulumEnv
from hypothesis import given, settings
from hypothesis import strategies as st

from poise.control.action_attacks import ActionAttack, LASAttacker, MASAttacker, make_attacker, pgd, temporal_shares
from poise.control.envs import ActionBox, EnvCfg, resolve_copy_mode
from poise.control.evaluation import rollout
from poise.errors import UserError


class LinearView:
    """A stand-in agent: acts ``a = clip(k·obs)`` and its objective is linear in the action, ``w·u``."""

    def __init__(self, w, box: ActionBox, gain: float = 0.0):
        self.w = torch.as_tensor(w, dtype=torch.float32)
        self.box, self.device, self.gain = box, torch.device("cpu"), gain

    def obs_tensor(self, obs):
        return torch.as_tensor(np.asarray(obs), dtype=torch.float32)

    def act(self, obs):
        obs = np.asarray(obs, dtype=np.float64)
        return np.clip(self.gain * obs[:, : self.box.dim], -1, 1)

    def objective(self, obs, u):
        return (u * self.w).sum(-1) + 0.0 * obs.sum(-1)


BOX3 = ActionBox(-np.ones(3), np.ones(3))


@pytest.mark.parametrize("p, expected", [(2.0, [-3.0, -4.0, 0.5]), (math.inf, [-1.0, -1.0, 1.0]),
                                         (1.0, [0.0, -1.0, 0.0])])
def test_pgd_reaches_the_analytic_minimiser_of_a_linear_objective(p, expected):
    view = LinearView([3.0, 4.0, -0.5], BOX3)
    g = torch.Generator().manual_seed(0)
    delta = pgd(view, torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([0.1]), p, steps=50, step_size=0.1,
                random_start=True, generator=g)
    direction = np.asarray(expected) / np.linalg.norm(expected, ord=p)
    np.testing.assert_allclose(delta.numpy()[0], 0.1 * direction, atol=2e-3 if p != 1.0 else 2e-2)


def test_mas_beats_random_delta_on_a_real_sac_critic():
    from stable_baselines3 import SAC

    from poise.control.agents import AgentView

    model = SAC("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [16]}, seed=0, buffer_size=10, device="cpu")
    view = AgentView.of(model)
    obs = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    u = view.act(obs)
    o = view.obs_tensor(obs)
    q = {}
    for name in ("random", "mas"):
        atk = make_attacker(name, view, view.box, 0.25, 2, steps=10, seed=1)
        executed = atk.perturb(obs, u, range(64))
        assert np.all(np.linalg.norm(executed - u, axis=1) <= 0.5 + 1e-6)
        with torch.no_grad():
            q[name] = view.objective(o, torch.as_tensor(executed, dtype=torch.float32)).numpy()
    assert np.mean(q["mas"] <= q["random"] + 1e-6) > 0.8 and q["mas"].mean() < q["random"].mean()


@settings(max_examples=50, deadline=None)
@given(damage=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=8), remaining=st.floats(0.1, 5),
       q=st.sampled_from([1.0, 2.0, 3.0]), seed=st.integers(0, 1000))
def test_temporal_shares_are_hoelder_optimal(damage, remaining, q, seed):
    d = np.asarray(damage)
    m = temporal_shares(d, remaining, q)
    assert np.all(m >= 0) and np.linalg.norm(m, ord=q) == pytest.approx(remaining, rel=1e-6)
    other = np.abs(np.random.default_rng(seed).normal(size=len(d)))
    other = remaining * other / max(np.linalg.norm(other, ord=q), 1e-12)
    assert d @ m >= d @ other - 1e-6


PENDULUM = EnvCfg(env="Pendulum-v1", max_episode_steps=30)


def _pendulum_view():
    box = ActionBox(np.array([-2.0]), np.array([2.0]))
    return LinearView([1.0], box, gain=0.8)


def test_las_with_horizon_one_is_mas():
    view = _pendulum_view()
    seeds = [1, 2, 3]
    mas = MASAttacker(view, view.box, 0.3, 2, steps=5, seed=7)
    las = LASAttacker(view, view.box, 0.3, 2, horizon=1, steps=5, seed=7)
    a, b = rollout(view, PENDULUM, seeds, mas), rollout(view, PENDULUM, seeds, las)
    assert a["returns"] == pytest.approx(b["returns"], rel=1e-6)
    assert a["returns"] != rollout(view, PENDULUM, seeds)["returns"]


@pytest.mark.parametrize("q", [1.0, 2.0, math.inf])
def test_las_keeps_the_spatio_temporal_budget_of_each_window(q):
    view = _pendulum_view()
    env = ActionAttack(gym.make("Pendulum-v1", max_episode_steps=20), view, 0.2, 2, attack="las", horizon=4,
                       temporal_norm=q, steps=5, seed=0)
    env.reset(seed=5)
    norms = []
    for _ in range(20):
        obs = env.unwrapped._get_obs()
        _, _, term, trunc, info = env.step(view.box.to_env(view.act(obs[None])[0]))
        norms.append(info["action_attack"]["norm"])
    eps = 0.4  # radius of b = 0.2 in the normalised box
    for w in range(0, 20, 4):
        window = np.asarray(norms[w : w + 4])
        assert np.linalg.norm(window, ord=q) <= eps * (1 if math.isinf(q) else 4 ** (1 / q)) + 1e-5
    assert max(norms) > 0


def test_replay_copies_act_like_deep_copies():
    view = _pendulum_view()
    out = [rollout(view, PENDULUM, [11, 12], LASAttacker(view, view.box, 0.4, 2, horizon=3, steps=4, seed=3),
                   copy_mode=mode)["returns"] for mode in ("deepcopy", "replay")]
    assert out[0] == pytest.approx(out[1])


class _Uncopyable(PendulumEnv):
    """An env holding a lock: deep copies fail, so look-ahead must replay."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()


def test_uncopyable_env_falls_back_to_replay_and_says_so_once():
    gym.register("PoiseUncopyable-v0", entry_point=_Uncopyable, max_episode_steps=15)
    said = []
    modes = [resolve_copy_mode(gym.make("PoiseUncopyable-v0"), lambda: gym.make("PoiseUncopyable-v0"),
                               notify=said.append) for _ in range(3)]
    assert modes == ["replay"] * 3 and len(said) == 1 and "replay" in said[0]
    view = _pendulum_view()
    env = ActionAttack(gym.make("PoiseUncopyable-v0"), view, 0.3, 2, attack="las", horizon=3, steps=3,
                       make_env=lambda: gym.make("PoiseUncopyable-v0"), notify=said.append)
    env.reset()
    for _ in range(5):
        _, _, _, _, info = env.step(np.array([0.5], dtype=np.float32))
    assert info["action_attack"]["attacked"] and len(said) == 1


def test_bad_attack_arguments_are_user_errors():
    view = _pendulum_view()
    pend = gym.make("Pendulum-v1")
    with pytest.raises(UserError, match="continuous"):
        ActionAttack(gym.make("CartPole-v1"), view, 0.1)
    with pytest.raises(UserError, match="budget > 0"):
        ActionAttack(pend, view, 0.0)
    with pytest.raises(UserError, match="1, 2 or inf"):
        ActionAttack(pend, view, 0.1, 3)
    with pytest.raises(UserError, match="H >= 1"):
        ActionAttack(pend, view, 0.1, attack="las", horizon=0)
