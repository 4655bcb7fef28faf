"""The shipped comparisons of action-space adversarial training and Lipschitz BC: the robust rows train as
long as the nominal one (from scratch and as a fine-tune), a fine-tune of seed s starts from the nominal
agent of seed s, and tuning episodes (val) never are the test episodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poise.recipes import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "control"
ACTION_STUDIES = ["study-action-at-pendulum.toml", "study-action-at-mountaincar.toml"]


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("name", ACTION_STUDIES)
def test_robust_rows_train_as_long_as_the_nominal_one_from_scratch_and_as_a_fine_tune(name, quick):
    study = load_recipe(RECIPES / name, quick=quick)
    study.preflight()
    assert len(study.study.seeds) >= 3
    rows = {r.name: study.row_recipe(r, {}) for r in study.study.rows}
    nominal = rows["nominal"]
    assert nominal.kind == "control.agent"
    for label in ("MAS-AT fine-tune", "MAS-AT scratch"):
        robust = rows[label]
        assert robust.kind == "control.adversarial" and robust.adversary.method == "mas"
        assert robust.train.budget == nominal.train.budget, label
        assert robust.data == nominal.data and robust.model.net_arch == nominal.model.net_arch
    assert rows["MAS-AT scratch"].model.init_from == ""
    fine = rows["MAS-AT fine-tune"]
    assert fine.model.init_seed == "same"
    # equal tuning: every row searches its lr (and the adversarial rows the MAS probability) on val
    assert study.study.trials == (2 if quick else 8)
    spaces = {r.name: set(r.space) for r in study.study.rows}
    assert spaces == {"nominal": {"train.lr"}, "MAS-AT fine-tune": {"train.lr", "adversary.probability"},
                      "MAS-AT scratch": {"train.lr", "adversary.probability"}}
    # the fine-tune of seed s starts from the nominal row's own run of seed s
    assert {r.name: r.start_from for r in study.study.rows}["MAS-AT fine-tune"] == {"model.init_from": "nominal"}
    assert load_recipe(RECIPES / fine.model.init_from, quick=quick).config_hash() == nominal.config_hash()
    metrics = {c.metric for c in study.study.claims}
    assert "robustness.auc_mas_mean" in metrics


def test_the_lipschitz_study_has_three_seeds_or_more_and_the_trade_off_claims():
    for quick in (False, True):
        study = load_recipe(RECIPES / "study-lipschitz-linear.toml", quick=quick)
        study.preflight()
        assert len(study.study.seeds) >= 3
    rows = {r.name: study.row_recipe(r, {}) for r in study.study.rows}
    assert rows["unconstrained"].model.constraint == "none"
    assert sorted(r.model.alpha for n, r in rows.items() if n != "unconstrained") == [0.5, 2.0, 8.0]
    assert {(c.metric, c.relation) for c in study.study.claims} >= {
        ("utility.nominal_cost", "less"), ("robustness.worst_degradation", "less")}


NOMINAL = """
kind = "control.agent"
seed = 0
[model]
algo = "sac"
net_arch = [8]
hyper = { learning_starts = 25, batch_size = 16 }
[data]
env = "Pendulum-v1"
max_episode_steps = 20
[train]
budget = { steps = 50 }
checkpoint_every = 1000
[[eval]]
name = "control.nominal_return"
seeds = 1
episodes = 1
"""
FINE_TUNE = NOMINAL.replace('kind = "control.agent"', 'kind = "control.adversarial"').replace(
    'algo = "sac"', 'algo = "sac"\ninit_from = "nominal.toml"') + "[adversary]\nmethod = 'mas'\nsteps = 2\n"


def test_a_fine_tune_starts_from_the_nominal_agent_of_its_own_seed(runner, store, tmp_path):
    (tmp_path / "nominal.toml").write_text(NOMINAL)
    (tmp_path / "fine.toml").write_text(FINE_TUNE)
    rec = runner.run(load_recipe(tmp_path / "fine.toml", {"seed": 2}))
    assert rec.status == "done", rec.error
    nominal = [r for r in store.list_runs() if r.kind == "control.agent"]
    assert [r.config["seed"] for r in nominal] == [2]
    # the nominal row of seed 2 is that very run (same config hash), so the pair shares its start
    assert nominal[0].config_hash == load_recipe(tmp_path / "nominal.toml", {"seed": 2}).config_hash()
    # init_seed = "recipe": the seed the nominal recipe names
    runner.run(load_recipe(tmp_path / "fine.toml", {"seed": 2, "model.init_seed": "recipe"}))
    assert sorted(r.config["seed"] for r in store.list_runs() if r.kind == "control.agent") == [0, 2]


def test_validation_episodes_are_not_the_test_episodes(runner, store, tmp_path):
    (tmp_path / "nominal.toml").write_text(NOMINAL)
    seeds = {}
    for split in ("val", "test"):
        rec = runner.run(load_recipe(tmp_path / "nominal.toml", {"eval_split": split}))
        seeds[split] = json.loads(store.read_bytes(rec.id, "eval_nominal.json"))["reset_seeds"]
    assert seeds["test"] == [1000 * 1000] and not set(seeds["val"]) & set(seeds["test"])


def test_the_attacker_copies_a_gsde_agent_after_it_has_acted():
    """gSDE (SAC on MountainCarContinuous) keeps tensors of an autograd graph on its actor; the attacker's
    frozen copy must still be made and synced."""
    import numpy as np

    from poise.control.agents import AgentView, build_model
    from poise.control.training import build_envs, resolved_train

    cfg = load_recipe(RECIPES / "sac-mountaincar-mas-at.toml",
                      {"model.hyper": {"batch_size": 16, "train_freq": 8, "gradient_steps": 2}}, quick=True)
    h, _ = resolved_train(cfg)
    assert h["use_sde"] is True
    model = build_model("sac", build_envs(cfg, 1), h, lr=1e-3, seed=0, device="cpu")
    model.learn(24)
    live = AgentView.of(model)
    frozen = live.frozen()
    obs = np.zeros((3, 2))
    np.testing.assert_array_equal(frozen.act(obs), live.act(obs))
    assert not any(p.requires_grad for p in frozen.policy.parameters())
    model.learn(16, reset_num_timesteps=False)
    frozen.sync(live)
    np.testing.assert_array_equal(frozen.act(obs), live.act(obs))


START_STUDY = """
kind = "study.compare"
name = "tiny-action-at"
[study]
seeds = [0, 1]
trials = 2
tune_seed = 5
objective = "utility.return_mean"
[study.set]
"train.budget" = { steps = 40 }
[[study.rows]]
name = "nominal"
recipe = "nominal.toml"
space = { "train.lr" = "log:1e-4..3e-3" }
[[study.rows]]
name = "fine-tune"
recipe = "fine.toml"
start_from = { "model.init_from" = "nominal" }
space = { "adversary.probability" = "0.1..0.9" }
"""


def test_a_study_fine_tune_starts_from_the_nominal_rows_own_agent_of_each_seed(runner, store, tmp_path):
    """The study's set, the nominal row's chosen settings and the seed reach the start of the fine-tune: it
    starts from the nominal row's run of its seed (the best nominal trial while tuning), never a retrained one."""
    from poise.study.report import load_comparison

    (tmp_path / "nominal.toml").write_text(NOMINAL)
    (tmp_path / "fine.toml").write_text(FINE_TUNE)
    (tmp_path / "study.toml").write_text(START_STUDY)
    rec = runner.run(load_recipe(tmp_path / "study.toml"))
    assert rec.status == "done", rec.error
    nominal, fine = load_comparison(store, rec)["rows"]
    agents = [r for r in store.list_runs() if r.kind == "control.agent"]
    # only the nominal row's own runs were trained (2 trials + 2 seeds), all with the study's 40 steps
    assert len(agents) == 4 and {r.config["train"]["budget"]["steps"] for r in agents} == {40}
    lr = nominal["chosen"]["train.lr"]
    for seed, run_id in fine["runs"].items():
        start = store.get_run(nominal["runs"][seed])
        assert store.get_run(run_id).config["model"]["init_from"] == f"run:{start.id}"
        assert start.config["seed"] == int(seed) and start.config["train"]["lr"] == pytest.approx(lr)
    best = store.get_run(nominal["tuning"]["best_run"])
    assert best.config["seed"] == 5 and best.config["eval_split"] == "val"
    assert fine["tuning"]["starts"] == {"model.init_from": f"run:{best.id}"}
    trials = [store.get_run(t["run"]) for t in fine["tuning"]["all"]]
    assert len(trials) == 2 and {t.config["model"]["init_from"] for t in trials} == {f"run:{best.id}"}


@pytest.mark.parametrize(("start_from", "expected"), [
    ('{ "model.init_from" = "later" }', "expected a row listed before it"),
    ('{ "model.nope" = "nominal" }', "start_from.model.nope"),
])
def test_a_bad_start_from_fails_before_any_run(cli, tmp_path, start_from, expected):
    (tmp_path / "nominal.toml").write_text(NOMINAL)
    (tmp_path / "fine.toml").write_text(FINE_TUNE)
    text = START_STUDY.replace('start_from = { "model.init_from" = "nominal" }', f"start_from = {start_from}")
    (tmp_path / "study.toml").write_text(text + '[[study.rows]]\nname = "later"\nrecipe = "nominal.toml"\n')
    code, out, err = cli("run", tmp_path / "study.toml")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert expected in err
    code, out, _ = cli("--json", "runs", "ls")
    assert json.loads(out) == []
