"""Control runs split into phases: SB3's rollouts (acting, the adversary included) vs learning (the
gradient updates), marked from SB3's own loop by poise's callback; behaviour cloning into its update."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from poise.recipes import load_recipe
from tests.control.lipschitz.test_sweep_report import _bc_recipe
from tests.control.test_training import TINY
from tests.phases_check import check_phases

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "control"


@pytest.mark.parametrize("recipe", ["sac-pendulum.toml", "sac-pendulum-mas-at.toml"])
def test_sb3_runs_record_rollout_and_learn(runner, store, recipe):
    over = dict(TINY) if "mas" in recipe else {k: v for k, v in TINY.items() if not k.startswith("adversary")}
    t0 = time.perf_counter()
    rec = runner.run(load_recipe(RECIPES / recipe, over))
    rows = check_phases(store, rec, {"rollout", "learn"}, time.perf_counter() - t0)
    if "mas" not in recipe:  # 250 gradient steps on batches of 32 cost more CPU than 300 single-observation acts
        assert rows["learn"].cpu_s > rows["rollout"].cpu_s


def test_a_stop_from_a_callback_inside_a_rollout_closes_the_phase(runner, store, monkeypatch):
    """A resource budget stops SB3 from a callback mid-rollout: the phase is closed, so the evaluation
    after the loop is not charged to ``rollout``."""
    from poise.control import sb3_loop

    calls: list[tuple[str | None, int]] = []
    enter, on_step = sb3_loop._PoiseCallback.enter, sb3_loop._PoiseCallback._on_step

    def record(self, name):
        calls.append((name, int(self.model.num_timesteps)))
        enter(self, name)

    def stop_at_200(self):
        return on_step(self) and self.model.num_timesteps < 200

    monkeypatch.setattr(sb3_loop._PoiseCallback, "enter", record)
    monkeypatch.setattr(sb3_loop._PoiseCallback, "_on_step", stop_at_200)
    over = {k: v for k, v in TINY.items() if not k.startswith("adversary")}
    t0 = time.perf_counter()
    rec = runner.run(load_recipe(RECIPES / "sac-pendulum.toml", over))
    check_phases(store, rec, {"rollout", "learn"}, time.perf_counter() - t0)
    named = [(n, t) for n, t in calls if n is not None]
    assert named[-1] == ("rollout", 199)  # stopped inside the rollout that reached step 200
    assert calls[-1][0] is None  # ... and that phase was closed before the evaluation


def test_behaviour_cloning_records_its_update(runner, store, tmp_path):
    t0 = time.perf_counter()
    bc = _bc_recipe(tmp_path, constraint="none")
    rec = runner.run(load_recipe(bc, {"eval": [{"name": "control.lipschitz_nominal"}]}))
    check_phases(store, rec, {"update"}, time.perf_counter() - t0)
