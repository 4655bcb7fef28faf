"""``study.compare``: equal tuning on val, seeds on test, verdicts from intervals, resume, report, bad input."""

from __future__ import annotations

import json

import pytest

from poise.recipes import load_recipe
from poise.stats import difference, verdict

from ..conftest import RECIPES

STUDY = f'''
kind = "study.compare"
name = "tiny"
description = "ERM against PGD-AT on digits, tiny budgets"

[study]
seeds = [0, 1, 2]
trials = 2
objective = "utility.clean_acc"

[study.set]
"train.budget" = {{ steps = 12 }}
"model.width" = 4
"train.checkpoint_every" = 100
"eval" = [{{ name = "vision.clean_accuracy", n = 200 }}]

[[study.rows]]
name = "ERM"
recipe = "{RECIPES / 'vision' / 'erm-digits.toml'}"
space = {{ "train.lr" = "log:1e-3..1e-1" }}

[[study.rows]]
name = "ERM-fixed"
recipe = "{RECIPES / 'vision' / 'erm-digits.toml'}"
set = {{ "train.lr" = 0.0001 }}
ablation_of = "ERM"

[[study.claims]]
text = "tuned ERM beats ERM at a tiny learning rate"
metric = "utility.clean_acc"
a = "ERM"
b = "ERM-fixed"
relation = "greater"
'''


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "study.toml"
    p.write_text(STUDY)
    return p


def test_a_study_tunes_on_val_runs_seeds_on_test_and_judges_by_interval(runner, store, study_file):
    rec = runner.run(load_recipe(study_file))
    assert rec.status == "done"
    from poise.study.report import load_comparison

    result = load_comparison(store, rec)
    children = [r for r in store.list_runs() if r.parent_id == rec.id]
    tuning = [r for r in children if r.config["eval_split"] == "val"]
    final = [r for r in children if r.config["eval_split"] == "test"]
    assert len(tuning) == 2 and {r.config["seed"] for r in tuning} == {0}  # ERM's two trials; ERM-fixed has none
    assert len(final) == 6 and sorted(r.config["seed"] for r in final) == [0, 0, 1, 1, 2, 2]
    erm, fixed = result["rows"]
    assert erm["tuning"]["trials"] == 2 and set(erm["chosen"]) == {"train.lr"}
    assert fixed["tuning"]["trials"] == 0 and fixed["chosen"] == {}
    # the final runs train the chosen settings, and the table's numbers are theirs
    for seed, run_id in erm["runs"].items():
        r = store.get_run(run_id)
        assert r.config["train"]["lr"] == pytest.approx(erm["chosen"]["train.lr"]) and r.config["seed"] == int(seed)
        got = store.final_metrics([run_id])[run_id]["utility.clean_acc"].value
        assert erm["metrics"]["utility.clean_acc"]["values"][seed] == pytest.approx(got)
    claim = result["claims"][0]
    a = {int(k): v for k, v in erm["metrics"]["utility.clean_acc"]["values"].items()}
    b = {int(k): v for k, v in fixed["metrics"]["utility.clean_acc"]["values"].items()}
    d = difference(a, b)
    assert claim["difference"]["paired"] is True
    assert claim["verdict"] == verdict(d, "greater") and claim["difference"]["mean"] == pytest.approx(d.mean)

    # a second run of the same study reuses its tuning study and every final run (nothing retrained)
    before = len(store.list_runs())
    again = runner.run(load_recipe(study_file))
    assert again.status == "done"
    assert len(store.list_runs()) == before + 1  # only the new study run itself
    result2 = load_comparison(store, again)
    assert result2["rows"][0]["chosen"] == erm["chosen"] and result2["rows"][0]["runs"] == erm["runs"]
    assert result2["rows"][1]["runs"] == fixed["runs"]


def test_the_report_shows_the_claims(cli, tmp_path, study_file):
    code, out, err = cli("--json", "study", "compare", study_file)
    assert code == 0, err
    shown = json.loads(out)
    assert [c["text"] for c in shown["claims"]] == ["tuned ERM beats ERM at a tiny learning rate"]
    assert shown["claims"][0]["verdict"] in ("held", "not held", "inconclusive")
    code, out, err = cli("study", "show", shown["run"])
    assert code == 0 and "claims" in out and "tuned settings" in out
    code, out, err = cli("report", "-o", tmp_path / "rep")
    assert code == 0, err
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "tuned ERM beats ERM at a tiny learning rate" in html and "Claims" in html
    # tuning runs scored the validation split: they are kept off the frontier
    code, out, err = cli("--json", "frontier", "--x", "utility.clean_acc", "--y", "cost.wall_s")
    assert code == 0, err
    assert len(json.loads(out)["runs"]) == 6


@pytest.mark.parametrize(("change", "field"), [
    (('a = "ERM"', 'a = "NOPE"'), "study"),
    (('"train.lr" = "log:1e-3..1e-1"', '"train.nope" = "log:1e-3..1e-1"'), "train.nope"),
    (('"train.lr" = "log:1e-3..1e-1"', '"train.lr" = "log:0..1e-1"'), "space.train.lr"),
    (('objective = "utility.clean_acc"', 'objective = "utility.nope"'), "study.objective"),
    (('seeds = [0, 1, 2]', 'seeds = [0, 0]'), "study.seeds"),
    (('relation = "greater"', 'relation = "bigger"'), "relation"),
])
def test_bad_studies_fail_before_any_run(cli, tmp_path, change, field):
    p = tmp_path / "bad.toml"
    p.write_text(STUDY.replace(*change))
    code, out, err = cli("run", p)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert field in err
    code, out, _ = cli("--json", "runs", "ls")
    assert json.loads(out) == []


def test_a_finished_run_is_reused_only_when_scored_by_the_same_evaluations(runner, store, study_file):
    from poise.study.report import load_comparison

    first = load_comparison(store, runner.run(load_recipe(study_file)))
    other = load_recipe(study_file, {"study.set.eval": '[{ name = "vision.clean_accuracy", n = 100 }]'})
    second = load_comparison(store, runner.run(other))
    # the same training, but another evaluation list: the seeds train and score again rather than
    # showing numbers (or blanks) from evaluations the study did not ask for
    assert set(second["rows"][1]["runs"].values()).isdisjoint(first["rows"][1]["runs"].values())
    for run_id in second["rows"][1]["runs"].values():
        assert store.get_run(run_id).config["eval"][0]["n"] == 100
