"""``poise sweep``: search spaces, directions, a study whose trials are runs, shared by worker processes."""

from __future__ import annotations

import json

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
