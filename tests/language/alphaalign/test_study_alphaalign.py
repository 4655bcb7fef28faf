"""The AlphaAlign reproduction study (recipes/language/study-alphaalign.toml): it validates, is shaped as the issue
asks (five rows from one aware base, equal lr tuning on val, >= 3 seeds, a claim on each metric), and a tiny copy of
it — same rows, spaces and claims on a tiny model and world — runs end to end with a verdict per claim."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

import poise.language.alphaalign.kinds  # noqa: F401
import poise.language.kinds  # noqa: F401
import poise.study.kinds  # noqa: F401
from poise.recipes import load_recipe
from tests.language.conftest import TINY_TOML

pytest.importorskip("poise.language.evaluators", reason="needs the language lab (branch language)")

STUDY = Path(__file__).resolve().parents[3] / "recipes" / "language" / "study-alphaalign.toml"
ROWS = ["AlphaAlign", "AlphaAlign-Zero", "AlphaAlign (GRPO)", "SFT", "DPO"]


@pytest.mark.parametrize("quick", [False, True])
def test_the_study_recipe_validates_and_has_the_shape_of_the_reproduction(quick):
    study = load_recipe(STUDY, quick=quick)
    study.preflight()  # every row loads with the ends of its lr space; the objective is a metric of every row
    s = study.study
    assert [r.name for r in s.rows] == ROWS
    assert len(s.seeds) >= 3 and s.trials >= 2 and s.objective.startswith("safety.balanced_safety_error")
    assert all(set(r.space) == {"train.lr"} for r in s.rows)  # equal tuning: the same trials, over lr
    assert s.set["model.base"] == "language/base-aware.toml"
    for row in s.rows:
        recipe = study.row_recipe(row, {})
        assert recipe.model.base == "language/base-aware.toml"
        assert {e.name for e in recipe.eval} >= {"language.safety", "language.prefill"}
    metrics = {c.metric for c in s.claims}
    assert {"safety.harmful_compliance", "safety.over_refusal", "safety.jailbreak_asr_unseen"} <= metrics
    assert any(m.startswith("safety.prefill_compliance_k") for m in metrics)
    assert metrics <= set(s.metrics)


def test_a_row_tuned_on_a_metric_no_row_produces_exits_2(cli):
    code, _, err = cli("--quiet", "run", STUDY, "--set", "study.objective='safety.no_such_metric'")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "study.objective" in err


def _tiny_copy(folder: Path) -> Path:
    """The shipped study with its rows, spaces and claims, on a tiny base and world (1 trial, 2 seeds)."""
    world = {"seed": 0, "languages": ["en", "fr"], "benign": {"train": 16, "val": 2, "test": 4},
             "harmful": {"train": 16, "val": 2, "test": 4}, "borderline": {"train": 8, "val": 2, "test": 2},
             "jailbreaks": {"train": 4, "val": 1, "test": 1}}
    base = folder / "tiny-base.toml"
    base.write_text("\n".join(['kind = "language.base"', "[model]", TINY_TOML, "refusal_share = 0.3",
                               "[data]", f"world = {_toml(world)}", "[train]", "lr = 3e-3", "batch_size = 8",
                               "budget = { steps = 2 }"]) + "\n", encoding="utf-8")
    data = tomllib.loads(STUDY.read_text(encoding="utf-8"))
    s = data["study"]
    s.update(trials=1, seeds=[0, 1])
    s["set"] = {"model.base": str(base), "data.world": world, "train.budget": {"steps": 1}, "train.batch_size": 2,
                "train.checkpoint_every": 100,
                "eval": [{"name": "language.safety", "max_new_tokens": 4},
                         {"name": "language.prefill", "k": [1, 3, 10], "max_new_tokens": 4}]}
    rl = {"n": 2, "reward.template": "{prompt}"}
    extra = {"alphaalign.toml": {**rl, "ppo.max_new_tokens": 4, "ppo.minibatch_size": 4, "ppo.ppo_epochs": 1},
             "alphaalign-zero.toml": {**rl, "ppo.max_new_tokens": 4, "ppo.minibatch_size": 4, "ppo.ppo_epochs": 1},
             "alphaalign-grpo.toml": {**rl, "grpo.max_new_tokens": 4},
             "sft.toml": {"mix.max_examples": 16}, "dpo.toml": {"mix.max_examples": 16}}
    for row in s["rows"]:
        row["recipe"] = str(STUDY.parent / row["recipe"])
        row["set"] = {**row.get("set", {}), **extra[Path(row["recipe"]).name]}
    data.pop("quick", None)
    out = folder / "study.toml"
    out.write_text(_dump(data), encoding="utf-8")
    return out


def _toml(v) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)


def _dump(data: dict) -> str:
    lines = [f"{k} = {_toml(v)}" for k, v in data.items() if k != "study"]
    study = data["study"]
    lines.append("[study]")
    lines += [f"{k} = {_toml(v)}" for k, v in study.items() if k not in ("rows", "claims")]
    for key in ("rows", "claims"):
        for item in study[key]:
            lines.append(f"[[study.{key}]]")
            lines += [f"{k} = {_toml(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def test_a_tiny_copy_of_the_study_runs_every_row_and_judges_every_claim(cli, tmp_path):
    study = _tiny_copy(tmp_path)
    code, _, err = cli("--quiet", "run", study)
    assert code == 0, err
    from poise.store import Store

    store = Store(root=tmp_path / ".poise")
    (run,) = store.list_runs(kind="study.compare")
    result = store.read_json(run.id, "comparison")
    assert [r["name"] for r in result["rows"]] == ROWS
    for row in result["rows"]:
        assert row["tuning"]["trials"] == 1 and set(row["chosen"]) == {"train.lr"}
        assert set(row["runs"]) == {"0", "1"}
        assert {"safety.harmful_compliance", "safety.over_refusal", "safety.prefill_compliance_k10"} <= set(
            row["metrics"])
    assert len(result["claims"]) == len(tomllib.loads(STUDY.read_text())["study"]["claims"])
    assert all(c["verdict"] in ("held", "not held", "inconclusive") for c in result["claims"])
    bases = store.list_runs(kind="language.base")
    assert len(bases) == 1  # every row started from the one base
    store.close()
