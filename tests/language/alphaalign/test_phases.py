"""Language RL splits each run into generation (sampling completions), reward (scoring them) and update
(log-probs, values, advantages and the optimiser steps), with PPO's own loop and with TRL's GRPO."""

from __future__ import annotations

import time

import pytest

from poise.recipes import load_recipe
from tests.phases_check import check_phases


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_rl_run_records_generation_reward_and_update(runner, store, tiny_alphaalign, algo):
    cfg = load_recipe(tiny_alphaalign, {"algo": algo, "reward.helpfulness": False, "eval": []})
    t0 = time.perf_counter()
    rec = runner.run(cfg)
    rows = check_phases(store, rec, {"generation", "reward", "update"}, time.perf_counter() - t0)
    # each phase encloses the block its step timing measures (summed over the steps)
    timings = {m.name: 0.0 for m in store.metrics([rec.id]) if m.name.startswith("time_")}
    for m in store.metrics([rec.id]):
        if m.name in timings:
            timings[m.name] += m.value
    assert rows["generation"].wall_s >= timings["time_generation"] > 0
    assert rows["reward"].wall_s >= timings["time_reward"] > 0
