"""The shipped vision reproduction study, run at a tiny size: every row tuned with the same budget on val,
the final seeds on test, MTARD with both balances beside its ablation, a verdict for every claim."""

from __future__ import annotations

import re
import tomllib

from poise.recipes import build_recipe, load_recipe

from ..conftest import RECIPES

VISION = RECIPES / "vision"
STUDY = VISION / "study-mtard-digits.toml"


def _tiny_teacher(tmp_path, name: str) -> str:
    """The shipped teacher recipe with a tiny model, budget and evaluation."""
    text = (VISION / f"{name}.toml").read_text().split("[[eval]]")[0]
    text = re.sub(r"width = \d+", "width = 8", text)
    text = re.sub(r"budget = \{[^}]*\}", "budget = { steps = 6 }", text)
    text = re.sub(r"\nsteps = \d+", "\nsteps = 1", text)
    path = tmp_path / f"{name}.toml"
    path.write_text(text + '[[eval]]\nname = "vision.clean_accuracy"\nn = 40\n')
    return str(path)


def test_shipped_study_loads_and_gives_every_row_the_same_budget():
    for quick in (False, True):
        cfg = load_recipe(STUDY, quick=quick)
        cfg.preflight()  # every row's recipe loads with both ends of its space
        names = [r.name for r in cfg.study.rows]
        assert names == ["PGD-AT", "TRADES", "ARD", "RSLAD", "MTARD", "MTARD w/o entropy balance"]
        assert all("train.lr" in r.space and len(r.space) == 2 for r in cfg.study.rows)  # lr + its own key setting
        assert len(cfg.study.seeds) >= 3 and cfg.study.trials >= 2
        rows = {r.name: r for r in cfg.study.rows}
        assert rows["MTARD"].set["train.entropy_balance"] is True
        assert rows["MTARD w/o entropy balance"].set["train.entropy_balance"] is False
        assert rows["MTARD w/o entropy balance"].ablation_of == "MTARD"
        assert rows["MTARD"].space == rows["MTARD w/o entropy balance"].space


def test_tiny_study_runs_end_to_end(runner, store, tmp_path):
    data = tomllib.loads(STUDY.read_text())
    data.pop("quick")
    s = data["study"]
    s["trials"], s["seeds"] = 1, [0, 1]
    s["set"] = {
        "model.width": 4,
        "train.budget": {"steps": 4},
        "train.attack.steps": 1,
        "train.checkpoint_every": 100,
        "eval": [
            {"name": "vision.clean_accuracy", "n": 60},
            {"name": "vision.robust_accuracy", "attack": "pgd", "steps": 20, "n": 20},
            {"name": "vision.robust_accuracy", "attack": "autoattack", "n": 8, "steps": 2, "n_targets": 1,
             "square_queries": 5},
        ],
    }
    clean, robust = _tiny_teacher(tmp_path, "teacher-clean-digits"), _tiny_teacher(tmp_path, "teacher-robust-digits")
    for row in s["rows"]:
        row["recipe"] = str(VISION / row["recipe"])
        if row["name"] in ("ARD", "RSLAD"):
            row.setdefault("set", {})["model.teacher"] = robust
        if row["name"].startswith("MTARD"):
            row["set"].update({"model.clean_teacher": clean, "model.robust_teacher": robust})
    rec = runner.run(build_recipe(data, where="tiny study", source=tmp_path / "study.toml"))
    assert rec.status == "done"
    from poise.study.report import load_comparison

    result = load_comparison(store, rec)
    rows = {r["name"]: r for r in result["rows"]}
    assert len(rows) == 6
    for name, row in rows.items():
        assert row["tuning"]["trials"] == 1, name  # the same budget for every row
        assert set(row["chosen"]) == set(row["tuning"]["space"]), name
        assert set(row["runs"]) == {"0", "1"}, name
        for seed, run_id in row["runs"].items():
            r = store.get_run(run_id)
            assert r.config["eval_split"] == "test" and r.config["seed"] == int(seed)
            assert r.config["train"]["lr"] == row["chosen"]["train.lr"]
        assert {"utility.clean_acc", "robustness.pgd20_acc", "robustness.autoattack_acc"} <= set(row["metrics"])
    for name, flag in (("MTARD", True), ("MTARD w/o entropy balance", False)):
        run = store.get_run(rows[name]["runs"]["0"])
        assert run.config["train"]["entropy_balance"] is flag
    assert len(result["claims"]) == 6
    assert all(c["verdict"] in ("held", "not held", "inconclusive") for c in result["claims"])
