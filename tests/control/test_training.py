"""Training through recipes: an adversarially trained SAC resumes after a crash to the very same weights,
and its artifact reloads into an agent that acts the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from poise.recipes import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "control"
TINY = {"train.budget": {"steps": 300}, "train.checkpoint_every": 100, "model.net_arch": [8],
        "model.hyper": {"learning_starts": 50, "batch_size": 32}, "model.init_from": "",
        "data.max_episode_steps": 60, "adversary.steps": 3, "adversary.sync_every": 100,
        "adversary.curriculum": 0.5, "seed": 3,
        "eval": [{"name": "control.nominal_return", "seeds": 1, "episodes": 1}]}


def _weights(store, run_id):
    tensors, _ = store.load_tensors(run_id, "model")
    return tensors


def test_adversarial_training_resumes_after_a_crash_to_the_same_weights(runner, store, monkeypatch):
    from poise.control import sb3_loop

    cfg = load_recipe(RECIPES / "sac-pendulum-mas-at.toml", TINY)
    reference = runner.run(cfg)
    assert reference.status == "done"

    original = sb3_loop._PoiseCallback._on_step

    def crash(self):
        if self.model.num_timesteps == 230:
            raise RuntimeError("simulated crash")
        return original(self)

    monkeypatch.setattr(sb3_loop._PoiseCallback, "_on_step", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        runner.run(load_recipe(RECIPES / "sac-pendulum-mas-at.toml", TINY))
    crashed = next(r for r in store.list_runs() if r.status == "failed")
    monkeypatch.setattr(sb3_loop._PoiseCallback, "_on_step", original)
    resumed = runner.resume(crashed.id)
    assert resumed.status == "done"

    a, b = _weights(store, reference.id), _weights(store, resumed.id)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    finals = store.final_metrics([reference.id, resumed.id])
    assert finals[reference.id]["utility.return_mean"].value == finals[resumed.id]["utility.return_mean"].value


def test_stored_agent_reloads_and_acts_the_same(runner, store):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from poise.control.agents import AgentView, build_model, load_agent, load_weights, resolve_hyper
    from poise.control.envs import make_env

    cfg = load_recipe(RECIPES / "sac-pendulum.toml",
                      {k: v for k, v in TINY.items() if not k.startswith("adversary") and k != "model.init_from"})
    rec = runner.run(cfg)
    tensors, meta = store.load_tensors(rec.id, "model")
    model, env_cfg = load_agent(tensors, meta)
    assert env_cfg.env == "Pendulum-v1" and env_cfg.max_episode_steps == 60
    obs = np.random.default_rng(0).normal(size=(16, 3))
    again = build_model("sac", DummyVecEnv([lambda: make_env(env_cfg)]),
                        {**resolve_hyper(cfg.model, "Pendulum-v1"), "buffer_size": 1}, lr=1e-3, seed=9, device="cpu")
    load_weights(again, tensors)
    np.testing.assert_array_equal(AgentView.of(model).act(obs), AgentView.of(again).act(obs))
    finals = store.final_metrics([rec.id])[rec.id]
    assert finals["utility.return_mean"].axis == "utility" and finals["utility.return_mean"].value < 0
