"""poise study schedules: input checks, ranks and intervals, the claim's verdict, and a tiny real study."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from poise.errors import UserError
from poise.schedule_study import (
    SCHEDULES,
    TUNE_SEED,
    Spec,
    mean_interval,
    mean_ranks,
    parse_budgets,
    parse_phis,
    parse_schedules,
    run_study,
    study_rows,
    summarise,
)
from tests.conftest import RECIPES


def test_budget_fractions_scale_the_recipes_own_budget():
    from poise.recipes import load_recipe
    from poise.schedule_study import budget_override

    steps = load_recipe(RECIPES / "vision" / "erm-digits.toml", {"train.budget": {"steps": 10}})
    assert budget_override(steps, 0.25)["train.budget"]["steps"] == 2
    assert budget_override(steps, 0.01)["train.budget"]["steps"] == 1
    epochs = load_recipe(RECIPES / "vision" / "erm-digits.toml", {"train.budget": {"epochs": 3}})
    assert budget_override(epochs, 0.5)["train.budget"]["epochs"] == 1.5


def test_parsers_reject_bad_input_naming_the_valid_choices():
    assert parse_budgets("1,0.25,0.5") == [0.25, 0.5, 1.0]
    for bad in ("0", "1.5", "-0.1", "nan", "inf", "a"):
        with pytest.raises(UserError):
            parse_budgets(bad)
    with pytest.raises(UserError, match=r"outside \(0, 1\]"):
        parse_budgets("0.5,2")
    with pytest.raises(UserError, match="expected one of: " + ", ".join(SCHEDULES)):
        parse_schedules("cosine,exp")
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(UserError, match="φ must be > 0"):
            parse_phis(bad)
    assert [r.label for r in study_rows(["uba", "cosine"], [0.5, 2.0])] == ["uba φ=0.5", "uba φ=2", "cosine"]


def test_cli_bad_input_is_one_line_exit_2(cli):
    recipe = RECIPES / "vision" / "erm-digits.toml"
    for args, expect in ((["--budgets", "0,1"], "(0, 1]"), (["--budgets", "1.2"], "(0, 1]"),
                         (["--schedules", "cosine,cyclic"], "expected one of"), (["--phi", "0"], "φ must be > 0"),
                         (["--phi", "-2"], "φ must be > 0"), (["--seeds", "0"], "--seeds"),
                         (["--lr-range", "1..0.1"], "LOW < HIGH")):
        code, _, err = cli("study", "schedules", recipe, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and expect in err, (args, err)


@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=20))
def test_mean_interval_matches_scipy(xs):
    iv = mean_interval(xs)
    sem = stats.sem(xs)
    if sem > 0:
        lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=sum(xs) / len(xs), scale=sem)
        assert iv.low == pytest.approx(lo, rel=1e-6, abs=1e-9) and iv.high == pytest.approx(hi, rel=1e-6, abs=1e-9)


def test_mean_ranks_share_ties_and_follow_direction():
    scores = {"a": [0.9, 0.5], "b": [0.9, 0.7], "c": [0.1, 0.7]}
    assert mean_ranks(scores, True) == {"a": (1.5 + 3) / 2, "b": (1.5 + 1.5) / 2, "c": (3 + 1.5) / 2}
    assert mean_ranks({"a": [1.0], "b": [2.0]}, False) == {"a": 1.0, "b": 2.0}


def _study(means: dict[str, list[float]], recommended: str = "uba φ=1") -> dict:
    """A synthetic study: one recipe, one cell per budget with the given means per row."""
    labels = list(means)
    n = len(next(iter(means.values())))
    rows = [{"label": k, "schedule": "uba" if k.startswith("uba") else k, "phi": None} for k in labels]
    cells = [{"budget": (j + 1) / n, "row": k, "mean": means[k][j], "values": {0: means[k][j]}}
             for k in labels for j in range(n)]
    return {"rows": rows, "recipes": [{"direction": "max", "recommended_uba": recommended, "cells": cells}]}


def test_claim_verdicts():
    held = summarise(_study({"uba φ=1": [0.9, 0.9, 0.7, 0.9], "uba φ=2": [0.1] * 4,
                             "cosine": [0.5, 0.6, 0.7, 0.5], "linear": [0.4, 0.5, 0.6, 0.4]}))
    assert held["claim"]["verdict"] == "held"  # first, or tied with cosine once
    assert held["claim"]["mean_ranks"]["uba"]["mean"] == pytest.approx((1 + 1 + 1.5 + 1) / 4)
    assert "uba φ=2" not in held["claim"]["mean_ranks"]  # UBA enters the claim at its validation φ only
    assert held["mean_ranks"]["uba φ=2"]["mean"] == 4.0
    not_held = summarise(_study({"uba φ=1": [0.1, 0.2, 0.1, 0.2], "cosine": [0.5, 0.6, 0.7, 0.5]}))
    assert not_held["claim"]["verdict"] == "not held"
    mixed = summarise(_study({"uba φ=1": [0.9, 0.1, 0.9, 0.1], "cosine": [0.5, 0.6, 0.5, 0.6]}))
    assert mixed["claim"]["verdict"] == "inconclusive"
    assert math.isfinite(mixed["claim"]["differences"]["cosine"]["low"])


def test_a_tiny_study_tunes_on_validation_tests_on_seeds_and_resumes(store):
    overrides = {"train.budget": {"steps": 6}, "model.width": 4,
                 "eval": [{"name": "vision.clean_accuracy", "n": 60}]}
    spec = Spec(recipes=[RECIPES / "vision" / "erm-digits.toml"], budgets=[0.5], schedules=["uba", "constant"],
                phis=[2.0], seeds=2, tune_trials=1, overrides=overrides, name="tiny")
    out = run_study(store, spec)
    (rec,) = out["recipes"]
    assert rec["tuned_on"] == "val" and rec["recommended_uba"] == "uba φ=2"
    assert {(c["row"], c["budget"]) for c in rec["cells"]} == {("uba φ=2", 0.5), ("constant", 0.5)}
    runs = {r.id: r for r in store.list_runs()}
    test_runs = [runs[i] for c in rec["cells"] for i in c["runs"]]
    assert sorted({r.seed for r in test_runs}) == [0, 1]
    assert all(r.config["eval"][0].get("split", "test") == "test" for r in test_runs)
    assert {r.config["train"]["budget"]["steps"] for r in test_runs} == {3}  # half the recipe's 6 steps
    tuning = [r for r in runs.values() if r.id not in {t.id for t in test_runs}]
    assert len(tuning) == 2 and all(r.seed == TUNE_SEED and r.config["eval"][0]["split"] == "val" for r in tuning)
    for c in rec["cells"]:
        assert c["mean"] == pytest.approx(sum(c["values"].values()) / 2)
    n = len(store.list_runs())
    again = run_study(store, spec)  # finished runs and trials are reused
    assert len(store.list_runs()) == n and again["mean_ranks"] == out["mean_ranks"]


def test_overrides_are_not_edited_by_later_dotted_overrides():
    from poise.recipes import load_recipe

    evals = [{"name": "vision.clean_accuracy", "n": 60}]
    cfg = load_recipe(RECIPES / "vision" / "erm-digits.toml", {"eval": evals, "eval.0.split": "val"})
    assert cfg.eval[0].model_extra["split"] == "val" and evals == [{"name": "vision.clean_accuracy", "n": 60}]


def test_report_page_shows_metric_vs_budget_lr_curves_and_ranks(store, tmp_path):
    import json

    from poise.report import write_report
    from poise.report.schedules import lr_figure
    from poise.schedule_study import study_path

    study = _study({"uba φ=1": [0.9, 0.8], "cosine": [0.5, 0.6]})
    study["rows"][0]["phi"] = 1.0
    for c in study["recipes"][0]["cells"]:
        c.update(low=c["mean"] - 0.01, high=c["mean"] + 0.01)
    study["recipes"][0].update(name="erm <digits>", metric="utility.clean_acc", tuned_on="val",
                               tuned={"uba φ=1": {"lr": 0.01}, "cosine": {"lr": 0.02}},
                               schedule={"name": "cosine", "warmup_frac": 0.1})
    study.update(name="demo", spec={"seeds": 3, "tune_trials": 4}, created=0.0, **summarise(study))
    path = study_path(store, "demo")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(study))
    _run = store.create_run(kind="vision.erm", name="r", config={}, config_hash="h", seed=0)
    html = write_report(store, tmp_path / "rep").read_text()
    assert "Schedules under a fixed budget" in html and "learning rate over the budget" in html
    assert "erm <digits>" not in html and "mean rank over recipes and budgets" in html
    fig = lr_figure(study, study["recipes"][0], points=11)
    uba, cosine = (list(t.y) for t in fig.data)
    assert uba[0] == pytest.approx(1 / 2) and cosine[0] == pytest.approx(1 / 2)  # one warm-up step to the peak
    assert uba[-1] == cosine[-1] == 0.0 and uba[5] > cosine[5]  # φ = 1 keeps the rate higher than cosine
