"""study.schedules: input checks, ranks and the claim's verdict, the report page, and a tiny real study."""

from __future__ import annotations

import json
import math

import pytest

from poise.errors import UserError
from poise.recipes import build_recipe, load_recipe
from poise.study.schedules import (
    SCHEDULES,
    budget_override,
    check_budgets,
    check_phis,
    check_schedules,
    load_schedules,
    parse_list,
    rows,
    summarise,
)
from tests.conftest import RECIPES

ERM = RECIPES / "vision" / "erm-digits.toml"


def test_budget_fractions_scale_the_recipes_own_budget():
    steps = load_recipe(ERM, {"train.budget": {"steps": 10}})
    assert budget_override(steps, 0.25)["train.budget"]["steps"] == 2
    assert budget_override(steps, 0.01)["train.budget"]["steps"] == 1
    epochs = load_recipe(ERM, {"train.budget": {"epochs": 3}})
    assert budget_override(epochs, 0.5)["train.budget"]["epochs"] == 1.5


def test_input_checks_name_the_valid_choices():
    assert check_budgets(parse_list("1,0.25,0.5", "--budgets", float)) == [0.25, 0.5, 1.0]
    for bad in (0.0, 1.5, -0.1, math.nan, math.inf):
        with pytest.raises(UserError, match=r"outside \(0, 1\]"):
            check_budgets([bad])
    with pytest.raises(UserError, match="expected one of: " + ", ".join(SCHEDULES)):
        check_schedules(["cosine", "exp"])
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(UserError, match="φ must be > 0"):
            check_phis([bad])
    with pytest.raises(UserError, match="separated by commas"):
        parse_list("0.5,x", "--budgets", float)
    cfg = build_recipe({"kind": "study.schedules", "schedules": {"targets": [{"recipe": str(ERM)}],
                                                                 "schedules": ["uba", "cosine"], "phi": [0.5, 2]}})
    assert rows(cfg.schedules) == [("uba", 0.5), ("uba", 2.0), ("cosine", None)]


def test_cli_bad_input_is_one_line_exit_2(cli):
    for args, expect in ((["--budgets", "0,1"], "(0, 1]"), (["--budgets", "1.2"], "(0, 1]"),
                         (["--schedules", "cosine,cyclic"], "expected one of"), (["--phi", "0"], "φ must be > 0"),
                         (["--phi", "-2"], "φ must be > 0"), (["--seeds", "0"], "--seeds"),
                         (["--lr-range", "1..0.1"], "LOW < HIGH"), (["--metric", "utility.nope"], "nope")):
        code, _, err = cli("study", "schedules", ERM, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and expect in err, (args, err)


def _study(means: dict[str, list[float]], recommended: str = "uba φ=1") -> dict:
    """A synthetic study: one target, one cell per budget with the given means per row."""
    labels = list(means)
    n = len(next(iter(means.values())))
    budgets = [(j + 1) / n for j in range(n)]
    cells = [{"budget": budgets[j], "row": k, "interval": {"mean": means[k][j], "low": means[k][j] - 0.01,
                                                          "high": means[k][j] + 0.01, "n": 3}, "lr": 0.01}
             for k in labels for j in range(n)]
    return {"name": "demo", "budgets": budgets, "seeds": [0, 1, 2], "trials": 4,
            "rows": [{"label": k, "schedule": "uba" if k.startswith("uba") else k,
                      "phi": float(k.split("=")[1]) if k.startswith("uba") else None} for k in labels],
            "targets": [{"name": "erm <digits>", "metric": "utility.clean_acc", "direction": "max",
                         "recommended_uba": recommended, "cells": cells,
                         "schedule": {"name": "cosine", "warmup_frac": 0.1}}]}


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


def test_report_page_shows_metric_vs_budget_lr_curves_and_ranks(store, tmp_path):
    from poise.report import write_report
    from poise.study.schedules_report import lr_curves

    study = _study({"uba φ=1": [0.9, 0.8], "cosine": [0.5, 0.6]})
    study.update(summarise(study))
    rid = store.create_run(kind="study.schedules", name="demo", config={}, config_hash="h", seed=0)
    store.save_file(rid, "schedules", json.dumps(study).encode(), "application/json")
    store.set_status(rid, "done")
    html = write_report(store, tmp_path / "rep").read_text()
    assert "Schedules under a fixed budget" in html and "learning rate over the budget" in html
    assert "erm <digits>" not in html and "mean rank over recipes and budgets" in html
    curves = lr_curves(study, study["targets"][0], points=11)
    uba, cosine = curves["uba φ=1"], curves["cosine"]
    assert uba[0] == pytest.approx(1 / 2) and cosine[0] == pytest.approx(1 / 2)  # one warm-up step to the peak
    assert uba[-1] == cosine[-1] == 0.0 and uba[5] > cosine[5]  # φ = 1 keeps the rate higher than cosine


def test_a_tiny_study_tunes_on_validation_tests_on_seeds_and_resumes(runner, store):
    data = {"kind": "study.schedules", "name": "tiny", "schedules": {
        "targets": [{"recipe": str(ERM), "set": {"train.budget": {"steps": 6}, "model.width": 4,
                                                 "eval": [{"name": "vision.clean_accuracy", "n": 60}]}}],
        "budgets": [0.5], "schedules": ["uba", "constant"], "phi": [2.0], "seeds": [0, 1], "trials": 1}}
    rec = runner.run(build_recipe(data))
    assert rec.status == "done"
    out = load_schedules(store, rec)
    (t,) = out["targets"]
    assert t["metric"] == "utility.clean_acc" and t["recommended_uba"] == "uba φ=2"
    assert {(c["row"], c["budget"]) for c in t["cells"]} == {("uba φ=2", 0.5), ("constant", 0.5)}
    runs = {r.id: r for r in store.list_runs()}
    test_ids = {i for c in t["cells"] for i in c["runs"].values()}
    test_runs = [runs[i] for i in test_ids]
    assert sorted(r.seed for r in test_runs) == [0, 0, 1, 1]
    assert all(r.config["eval_split"] == "test" and r.config["train"]["budget"]["steps"] == 3 for r in test_runs)
    assert {r.config["train"]["schedule"]["name"] for r in test_runs} == {"uba", "constant"}
    tuning = [r for r in runs.values() if r.kind == "vision.erm" and r.id not in test_ids]
    assert len(tuning) == 2 and all(r.config["eval_split"] == "val" and r.seed == 10_000 for r in tuning)
    for c in t["cells"]:
        assert c["interval"]["mean"] == pytest.approx(sum(c["values"].values()) / 2)
    n = len(store.list_runs())
    again = runner.run(build_recipe(data))  # the comparison and its runs are reused
    assert len(store.list_runs()) == n + 1 and load_schedules(store, again)["mean_ranks"] == out["mean_ranks"]


def test_overrides_are_not_edited_by_later_dotted_overrides():
    evals = [{"name": "vision.clean_accuracy", "n": 60}]
    cfg = load_recipe(ERM, {"eval": evals, "eval.0.split": "val"})
    assert cfg.eval[0].model_extra["split"] == "val" and evals == [{"name": "vision.clean_accuracy", "n": 60}]
