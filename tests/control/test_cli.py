"""Bad input to the control recipes through the CLI: exit code 2 and exactly one line on stderr."""

from __future__ import annotations

from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "recipes"

AGENT = RECIPES / "control" / "sac-pendulum.toml"
ADV = RECIPES / "control" / "sac-pendulum-las-at.toml"


@pytest.mark.parametrize("recipe, setting, needle", [
    (AGENT, "data.env=NoSuchEnv-v9", "unknown gymnasium env"),
    (AGENT, "data.env=CartPole-v1", "continuous"),
    (AGENT, "eval.1.budgets=[0.0, 0.5]", "budgets > 0"),
    (AGENT, "eval.1.norm=3", "1, 2 or inf"),
    (AGENT, "eval.1.horizon=0", "horizon"),
    (ADV, "adversary.budget=-0.1", "adversary.budget"),
    (ADV, "adversary.norm=l3", "1, 2 or inf"),
    (ADV, "adversary.horizon=0", "adversary.horizon"),
    (AGENT, "model.hyper={learning_rate = 0.1}", "train.lr"),
    (ADV, "model.init_seed=other", "model.init_seed"),
    (AGENT, "eval.0.split=train", "split"),
])
def test_bad_control_input_is_one_line(cli, recipe, setting, needle):
    code, _, err = cli("run", str(recipe), "--quick", "--set", setting)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err
