"""``poise sweep``: search spaces, directions, a study whose trials are runs, shared by worker processes."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poise.errors import UserError
from poise.recipes import load_recipe
from poise.sweep import objective_direction, parse_param

from ..conftest import RECIPES

ERM = RECIPES / "vision" / "erm-digits.toml"
TINY = ["--set", "train.budget={steps = 3}", "--set", "model.width=4",
        "--set", 'eval=[{name = "vision.clean_accuracy"}]']


@settings(deadline=None, max_examples=50)
@given(st.floats(1e-6, 1e3), st.floats(1.01, 1e3))
def test_log_ranges_parse_and_suggest_inside(low, factor):
    import optuna

    p = parse_param(f"train.lr=log:{low!r}..{low * factor!r}")
    assert (p.kind, p.low) == ("log", low) and p.high == pytest.approx(low * factor)
    trial = optuna.trial.FixedTrial({"train.lr": low * 1.001})
    assert p.low <= p.suggest(trial) <= p.high


def test_spaces_of_every_kind():
    assert parse_param("model.width=int:8..64").kind == "int"
    assert parse_param("t=0..1").kind == "float"
    assert parse_param("train.schedule.name=choice:uba,cosine").choices == ("uba", "cosine")


@pytest.mark.parametrize("text, message", [
    ("train.lr", "FIELD=SPACE"),
    ("train.lr=log:0..1", "LOW > 0"),
    ("train.lr=1..0.5", "LOW < HIGH"),
    ("train.lr=cubic:1..2", "unknown space"),
    ("model.width=int:1.5..4", "whole numbers"),
    ("a=choice:x", "at least two"),
])
def test_bad_spaces_name_what_was_expected(text, message):
    with pytest.raises(UserError, match=message):
        parse_param(text)


def test_directions_come_from_the_recipes_evaluators():
    cfg = load_recipe(ERM)
    assert objective_direction(cfg, "utility.clean_acc") == ("utility.clean_acc", "max")
    assert objective_direction(cfg, "cost.co2_g") == ("cost.co2_g", "min")
    assert objective_direction(cfg, "robustness.x:min") == ("robustness.x", "min")
    with pytest.raises(UserError, match="no evaluator"):
        objective_direction(cfg, "safety.harmful_compliance")


def test_a_sweep_is_a_study_of_runs(cli):
    code, out, err = cli("--json", "sweep", ERM, "-p", "train.lr=log:1e-3..1e-1", "--objective", "utility.clean_acc",
                         "--objective", "cost.flops", "--trials", "2", "--study", "s", *TINY)
    assert code == 0, err
    res = json.loads(out)
    assert res["trials"] == 2 and res["best"]
    code, out, _ = cli("--json", "runs", "ls")
    runs = {r["id"] for r in json.loads(out)}
    assert len(runs) == 2 and {b["run"] for b in res["best"]} <= runs
    code, out, _ = cli("--json", "runs", "ls", "--study", "s")  # trials carry their study
    assert {r["id"] for r in json.loads(out)} == runs
    code, out, _ = cli("--json", "runs", "ls", "--study", "other")
    assert json.loads(out) == []
    # the same study again: already has its trials, runs nothing new
    code, out, _ = cli("--json", "sweep", ERM, "-p", "train.lr=log:1e-3..1e-1", "--objective", "utility.clean_acc",
                       "--objective", "cost.flops", "--trials", "2", "--study", "s", *TINY)
    assert json.loads(out)["trials"] == 2


def test_workers_share_one_study(cli):
    code, out, err = cli("--json", "sweep", ERM, "-p", "model.width=int:2..6", "--objective", "utility.clean_acc",
                         "--trials", "3", "--study", "w", "--jobs", "2", *TINY)
    assert code == 0, err
    res = json.loads(out)
    code, out, _ = cli("--json", "runs", "ls")
    runs = json.loads(out)
    assert res["trials"] >= 3 and len(runs) >= 3  # two processes may each finish the last trial
    assert all(r["status"] == "done" for r in runs)


@pytest.mark.parametrize("args, where", [
    (["-p", "train.nope=0..1", "--objective", "utility.clean_acc"], "train.nope"),
    (["-p", "train.lr=0..1", "--objective", "utility.clean_acc"], "train.lr: input should be greater than 0"),
    (["-p", "train.lr=0.1..1", "--objective", "clean_acc"], "--objective"),
    (["-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--trials", "0"], "--trials"),
    (["-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--jobs", "-1"], "--jobs"),
])
def test_bad_sweeps_are_one_line(cli, args, where):
    code, out, err = cli("sweep", ERM, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and where in err, err


# --------------------------------------------------------------------------- spaces: files, conditions, samplers

SPACE = """
[[param]]
field = "kind"
choices = ["vision.erm", "vision.trades"]

[[param]]
field = "train.beta"
range = [0.5, 8.0]
log = true
when = { kind = "vision.trades" }

[[param]]
field = "train.attack.steps"
value = 1
when = { kind = "vision.trades" }

[[param]]
field = "model.width"
range = [2, 6]
integer = true
"""


def test_space_files_parse_into_params_with_conditions(tmp_path):
    import optuna

    from poise.space import load_space_file, suggest_all

    path = tmp_path / "space.toml"
    path.write_text(SPACE)
    params = load_space_file(path)
    assert [(p.field, p.kind) for p in params] == [("kind", "choice"), ("train.beta", "log"),
                                                    ("train.attack.steps", "fixed"), ("model.width", "int")]
    erm = suggest_all(optuna.trial.FixedTrial({"kind": "vision.erm", "model.width": 3}), params)
    assert erm == {"kind": "vision.erm", "model.width": 3}  # β and the attack only under TRADES
    trades = suggest_all(optuna.trial.FixedTrial({"kind": "vision.trades", "train.beta": 2.0, "model.width": 3}),
                         params)
    assert trades == {"kind": "vision.trades", "train.beta": 2.0, "train.attack.steps": 1, "model.width": 3}
    # the same conditional on the command line
    p = parse_param("train.beta=log:0.5..8 if kind=vision.trades")
    assert (p.kind, p.when) == ("log", (("kind", "vision.trades"),))
    assert parse_param("train.attack.start=fixed:gaussian if kind=vision.trades").value == "gaussian"


@pytest.mark.parametrize("text, field, message", [
    ('[[param]]\nfield = "a"\nrange = [1, 2]\nchoices = [1, 2]', "param[0]", "exactly one of"),
    ('[[param]]\nfield = "a"\nrange = [2, 1]', "param[0].range", "LOW < HIGH"),
    ('[[param]]\nfield = "a"\nrange = [0, inf]', "param[0].range", "finite"),
    ('[[param]]\nfield = "a"\nrange = [1, 2]\ncolour = 1', "param[0].colour", "unknown field"),
    ('[[param]]\nfield = "a"\nchoices = [1]', "param[0].choices", "at least 2"),
    ("[space]\nx = 1", None, "expected [[param]] tables"),
])
def test_bad_space_files_are_one_line_naming_file_and_field(tmp_path, text, field, message):
    from poise.space import load_space_file

    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)) as e:
        load_space_file(path)
    assert str(path) in e.value.line() and (field is None or e.value.field == field)


def test_conditions_must_follow_a_choice(cli, tmp_path):
    code, _, err = cli("sweep", ERM, "-p", "train.beta=0.5..8 if kind=vision.trades", "--objective",
                       "utility.clean_acc")
    assert code == 2 and "not a choice param before it" in err
    code, _, err = cli("sweep", ERM, "-p", "kind=choice:vision.erm,vision.pgd_at", "-p",
                       "train.beta=0.5..8 if kind=vision.trades", "--objective", "utility.clean_acc")
    assert code == 2 and "not one of kind's choices" in err


def test_a_conditional_space_sets_only_active_fields(cli, tmp_path):
    (tmp_path / "space.toml").write_text(SPACE)
    code, out, err = cli("--json", "sweep", ERM, "--space", tmp_path / "space.toml", "--objective",
                         "utility.clean_acc", "--objective", "cost.flops", "--sampler", "random", "--seed", "1",
                         "--trials", "4", "--study", "c", *TINY)
    assert code == 0, err
    from poise.store import Store

    store = Store(root=tmp_path / ".poise")
    runs = store.list_runs()
    assert len(runs) == 4 and {r.kind for r in runs} == {"vision.erm", "vision.trades"}  # seed 1 draws both
    study = _load(tmp_path, "c")
    for t in study.trials:
        cfg = store.get_run(t.user_attrs["run"]).config
        assert cfg["kind"] == t.params["kind"] and cfg["model"]["width"] == t.params["model.width"]
        if t.params["kind"] == "vision.trades":
            assert cfg["train"]["beta"] == t.params["train.beta"] and cfg["train"]["attack"]["steps"] == 1
        else:
            assert "train.beta" not in t.params and "beta" not in cfg["train"]


def _load(tmp_path, name):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / '.poise' / 'optuna.db'}")


def test_grid_sampler_walks_the_grid_once(cli, tmp_path):
    code, out, err = cli("--json", "sweep", ERM, "-p", "model.width=int:2..3", "-p",
                         "train.schedule.name=choice:uba,cosine", "--objective", "utility.clean_acc", "--sampler",
                         "grid", "--pruner", "none", "--trials", "4", "--study", "g", *TINY)
    assert code == 0, err
    points = {(t.params["model.width"], t.params["train.schedule.name"]) for t in _load(tmp_path, "g").trials}
    assert points == {(2, "uba"), (2, "cosine"), (3, "uba"), (3, "cosine")}
    code, _, err = cli("sweep", ERM, "-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--sampler", "grid")
    assert code == 2 and "choice or int" in err


def test_trials_pruned_from_intermediate_values_end_pruned(cli, tmp_path, monkeypatch):
    """vision.erm reports validation accuracy each epoch; a pruner that prunes every value stops each run
    at its first epoch end, and the run ends with status pruned (the median pruner needs more trials)."""
    import optuna

    import poise.sweep

    monkeypatch.setattr(poise.sweep, "make_pruner", lambda spec: optuna.pruners.ThresholdPruner(lower=2.0))
    code, out, err = cli("--json", "sweep", ERM, "-p", "train.lr=log:1e-3..1e-1", "--objective", "utility.clean_acc",
                         "--trials", "2", "--study", "p", "--set", "train.batch_size=512",
                         "--set", "train.budget={steps = 6}", "--set", "model.width=4",
                         "--set", 'eval=[{name = "vision.clean_accuracy"}]')
    assert code == 0, err
    study = _load(tmp_path, "p")
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"]
    assert all(list(t.intermediate_values) == [2] for t in study.trials)  # first epoch end: 2 steps of 512
    code, out, _ = cli("--json", "runs", "ls", "--status", "pruned")
    runs = json.loads(out)
    assert len(runs) == 2 and {r["id"] for r in runs} == {t.user_attrs["run"] for t in study.trials}


def test_a_pruned_run_keeps_its_checkpoint_and_resumes(runner, store):
    from poise.errors import Pruned

    cfg = load_recipe(ERM, {"train.batch_size": 512, "train.budget": {"steps": 6}, "model.width": 4,
                            "train.checkpoint_every": 1, "eval": [{"name": "vision.clean_accuracy"}]})
    seen = []

    def hook(name, value, step):
        seen.append((name, step))
        raise Pruned(f"pruned at step {step}")

    rec = runner.run(cfg, intermediate=hook)
    assert rec.status == "pruned" and rec.error == "pruned at step 2" and seen == [("utility.clean_acc", 2)]
    assert store.latest_checkpoint(rec.id)[0] == 1  # pruned in step 2's body, before its checkpoint
    assert runner.resume(rec.id).status == "done"  # no sweep listening: it trains to the end
    assert runner.run(cfg).status == "done"  # and outside a sweep the report costs nothing


# --------------------------------------------------------------------------- workers and the study's record


def test_a_worker_needs_only_the_study_name_and_storage(cli, tmp_path):
    url = f"sqlite:///{tmp_path / '.poise' / 'optuna.db'}"
    code, out, err = cli("--json", "sweep", ERM, "-p", "model.width=int:2..6", "--objective", "utility.clean_acc",
                         "--objective", "cost.flops", "--trials", "3", "--study", "w0", "--jobs", "0", *TINY)
    assert code == 0 and json.loads(out)["trials"] == 0, err
    spec = _load(tmp_path, "w0").user_attrs["poise"]
    assert spec["trials"] == 3 and spec["objectives"] == [["utility.clean_acc", "max"], ["cost.flops", "min"]]
    assert spec["params"][0]["field"] == "model.width" and spec["recipe_data"]["kind"] == "vision.erm"
    code, out, err = cli("--json", "worker", "--study", "w0", "--storage", url)
    assert code == 0, err
    assert json.loads(out)["states"] == {"complete": 3}
    # another sweep with the same name but another space is refused, before any trial
    code, _, err = cli("sweep", ERM, "-p", "train.lr=0.1..0.2", "--objective", "utility.clean_acc", "--study", "w0",
                       *TINY)
    assert code == 2 and "already runs a different sweep" in err
    code, _, err = cli("worker", "--study", "nope", "--storage", url)
    assert code == 2 and "no study 'nope'" in err


def test_workers_claim_exactly_the_trial_count(cli, tmp_path):
    code, out, err = cli("--json", "sweep", ERM, "-p", "model.width=int:2..6", "--objective", "utility.clean_acc",
                         "--trials", "3", "--study", "x", "--jobs", "2", "--pruner", "none", *TINY)
    assert code == 0, err
    study = _load(tmp_path, "x")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    runs = [t.user_attrs["run"] for t in study.trials]
    code, out, _ = cli("--json", "runs", "ls")
    assert sorted(r["id"] for r in json.loads(out)) == sorted(runs)  # one run per trial, none twice


def test_jobs_share_the_cores_and_both_processes_run_trials(cli, tmp_path):
    import torch

    from poise.store import Store
    from poise.sweep import threads_per_worker

    assert threads_per_worker(1) >= 1 and threads_per_worker(10_000) == 1
    assert threads_per_worker(2) == max(1, threads_per_worker(1) // 2)
    before = torch.get_num_threads()
    code, out, err = cli("--json", "sweep", ERM, "-p", "model.width=int:2..6", "--objective", "utility.clean_acc",
                         "--trials", "4", "--study", "y", "--jobs", "2", "--pruner", "none", *TINY)
    assert code == 0, err
    assert torch.get_num_threads() == before  # the sweep's per-worker thread count does not leak
    study = _load(tmp_path, "y")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    store = Store(root=tmp_path / ".poise")
    pids = {store.get_run(t.user_attrs["run"]).pid for t in study.trials}
    assert len(pids) == 2 and os.getpid() in pids  # this process and one worker each ran trials


# --------------------------------------------------------------------------- the report's Sweeps section


def test_report_shows_trials_front_hypervolume_and_importances(cli, tmp_path):
    import optuna

    from poise.frontier import hypervolume
    from poise.report.sweep import hypervolume_history, importances

    code, out, err = cli("--json", "sweep", ERM, "-p", "train.lr=log:1e-3..1e-1", "-p", "model.width=int:2..8",
                         "--objective", "utility.clean_acc", "--objective", "cost.flops", "--trials", "5",
                         "--study", "<b>evil</b>", *TINY)
    assert code == 0, err
    study = _load(tmp_path, "<b>evil</b>")  # plain optuna storage: what optuna-dashboard reads
    history = hypervolume_history(study)
    values = np.array([t.values for t in study.trials])
    ref = [values[:, 0].min(), values[:, 1].max()]
    assert len(history) == 5 and history[-1][1] == pytest.approx(hypervolume(values, [True, False], ref))
    assert all(a[1] <= b[1] for a, b in zip(history, history[1:], strict=False))  # never falls
    # optuna's own hypervolume history against the same reference point agrees
    fig = optuna.visualization.plot_hypervolume_history(study, reference_point=np.array(ref))
    assert list(fig.data[0].y) == pytest.approx([h for _, h in history])
    imp = importances(study)
    assert set(imp["utility.clean_acc"]) == {"train.lr", "model.width"}
    code, out, err = cli("--json", "report", "-o", tmp_path / "rep")
    assert code == 0, err
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "<h2>Sweeps</h2>" in html and "hypervolume as trials accrue" in html
    assert "parameter importances" in html and "fANOVA" in html
    assert "<b>evil</b>" not in html and "&lt;b&gt;evil&lt;/b&gt;" in html


# --------------------------------------------------------------------------- bad input: one line, before any trial


@pytest.mark.parametrize("args, where", [
    (["-p", "train.nope=0..1", "--objective", "utility.clean_acc"], "train.nope"),
    (["-p", "train.beta=0.5..2 if kind=vision.trades", "-p", "kind=choice:vision.erm,vision.trades",
      "--objective", "utility.clean_acc"], "not a choice param before it"),
    (["-p", "train.lr=0.1..1", "--objective", "safety.harmful_compliance"], "no evaluator"),
    (["-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--storage", "nonsense"], "--storage"),
    (["-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--storage", "mysql://u@h/db"], "unsupported"),
    (["-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--storage", "sqlite://"], "not memory"),
    (["-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--storage",
      "postgresql://poise@127.0.0.1:{port}/x"], "cannot open"),
    (["-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--executor", "ray", "--address",
      "127.0.0.1:{port}"], "cannot reach a Ray cluster"),
    (["-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--executor", "ray", "--address", "x"],
     "HOST:PORT"),
    (["-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--address", "127.0.0.1:1"], "--executor ray"),
    (["-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--sampler", "cmaes"], "--sampler"),
    (["-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--objective", "cost.flops", "--pruner",
      "median"], "single objective"),
    (["-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--on-worker-death", "ignore"], "retry or fail"),
    (["-p", "train.lr=0.1..1", "--objective", "utility.clean_acc", "--gpus-per-trial", "nan", "--executor", "ray"],
     "--gpus-per-trial"),
])
def test_bad_scale_out_input_is_one_line_before_any_trial(cli, tmp_path, args, where):
    from ..pg import free_port

    port = str(free_port())  # nothing listens there
    code, out, err = cli("sweep", ERM, *[a.replace("{port}", port) for a in args], *TINY)
    assert code == 2 and len(err.strip().splitlines()) == 1 and where in err, err
    assert not (tmp_path / ".poise" / "checkpoints").exists()
    code, out, _ = cli("--json", "runs", "ls")
    assert json.loads(out) == []
