"""Recipes: loading, typed --set overrides, quick tables, kinds registry, and one clear line on bad input."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poise.errors import UserError
from poise.recipes import load_recipe, parse_set_options, shipped_recipes
from poise.registry import get_kind, load_all_kinds

from ..conftest import RECIPES

ERM = RECIPES / "vision" / "erm-digits.toml"


def to_toml(data: dict) -> str:
    """Tiny TOML writer (quoted keys, inline tables) for generated recipes."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v) if isinstance(v, float) else str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    return "\n".join(f"{json.dumps(k)} = {value(v)}" for k, v in data.items()) + "\n"


def base_recipe() -> dict:
    return tomllib.loads(ERM.read_text())


def test_shipped_recipe_loads_with_defaults_and_quick(tmp_path):
    r = load_recipe(ERM)
    assert r.kind == "vision.erm" and r.train.budget.epochs == 20 and r.display_name == "erm-digits"
    q = load_recipe(ERM, quick=True)
    assert q.train.budget.epochs == base_recipe()["quick"]["train.budget.epochs"] and q.is_quick
    assert r.config_hash() != q.config_hash()
    # names, descriptions, eval lists and devices don't change what is trained
    renamed = load_recipe(ERM, {"name": "other", "device": "cpu"})
    assert renamed.config_hash() == r.config_hash()


def test_set_overrides_are_typed():
    r = load_recipe(ERM, parse_set_options(["train.lr=3e-4", "train.schedule.name=wsd", "seed=7",
                                            "train.schedule.milestones=[0.3, 0.6]", "model.name=mlp"]))
    assert r.train.lr == 3e-4 and r.train.schedule.name == "wsd" and r.seed == 7
    assert r.train.schedule.milestones == [0.3, 0.6] and r.model.name == "mlp"
    r = load_recipe(ERM, parse_set_options(["train.budget={steps = 5}"]))
    assert r.train.budget.steps == 5 and r.train.budget.epochs is None


@pytest.mark.parametrize(
    "sets,field,expect",
    [
        (["train.lrr=1"], "train.lrr", "unknown field"),
        (["train.lr=abc"], "train.lr", "valid number"),
        (["train.lr=-1"], "train.lr", "greater than 0"),
        (["model.name=resnet9000"], "model.name", "unknown model"),
        (["train.budget.seconds=5"], "train.budget", "exactly one"),
        (["cost.country=XXX"], "cost.country", "unknown grid country"),
        (["eval.0.split=train"], "eval[0].split", "test"),
        (["kind=vision.nope"], "kind", "unknown kind"),
    ],
)
def test_bad_overrides_name_the_field(sets, field, expect):
    with pytest.raises(UserError) as e:
        load_recipe(ERM, parse_set_options(sets))
    assert e.value.field == field
    assert expect in e.value.message


def test_set_needs_key_value():
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_set_options(["train.lr"])


def test_every_shipped_recipe_validates():
    assert shipped_recipes(), "no shipped recipes found"
    for path in shipped_recipes():
        load_recipe(path)
        load_recipe(path, quick=True)


def test_kinds_registry_and_entry_point_error():
    kinds = load_all_kinds()
    assert "vision.erm" in kinds
    with pytest.raises(UserError, match="unknown kind 'vision.none'"):
        get_kind("vision.none")


# ----------------------------------------------------------------------------- generated broken recipes

FIELDS_WRONG = [
    ("train", "lr", "fast", "train.lr"),
    ("train", "lr", -0.5, "train.lr"),
    ("train", "batch_size", 0, "train.batch_size"),
    ("train", "batch_size", "big", "train.batch_size"),
    ("train", "optimizer", "lbfgs", "train.optimizer"),
    ("train", "checkpoint_every", -3, "train.checkpoint_every"),
    ("train", "weight_decay", -1.0, "train.weight_decay"),
    ("train", "momentum", 1.5, "train.momentum"),
    ("model", "width", -4, "model.width"),
    ("model", "name", "vgg-infinite", "model.name"),
    ("data", "name", 12, "data.name"),
    ("cost", "country", "France", "cost.country"),
    ("cost", "pue", 0.5, "cost.pue"),
]


@st.composite
def broken_recipes(draw):
    """(toml text or None for raw text, raw text, extra --set args, field expected in the message)."""
    data = base_recipe()
    mode = draw(st.sampled_from(["wrong", "unknown", "missing_kind", "bad_kind", "schedule", "budget", "eval",
                                 "syntax", "set_unknown", "set_bad", "seed", "device"]))
    sets: list[str] = []
    field = None
    if mode == "wrong":
        table, key, bad, field = draw(st.sampled_from(FIELDS_WRONG))
        data.setdefault(table, {})[key] = bad
    elif mode == "unknown":
        table = draw(st.sampled_from(["train", "model", "data", "cost", None]))
        key = "x_" + draw(st.text(alphabet="abcdefghij_", min_size=1, max_size=8))
        if table is None:
            data[key] = draw(st.integers())
            field = key
        else:
            data.setdefault(table, {})[key] = draw(st.integers())
            field = f"{table}.{key}"
    elif mode == "missing_kind":
        del data["kind"]
        field = "kind"
    elif mode == "bad_kind":
        data["kind"] = draw(st.sampled_from(["vision.nope", "nodomain.x", "x", "vision"]))
        field = "kind"
    elif mode == "schedule":
        key, bad = draw(st.sampled_from([("name", "cyclic"), ("phi", 0.0), ("phi", -2.0), ("warmup_frac", 1.5),
                                         ("min_lr_ratio", 2.0), ("decay_frac", 0.0), ("gamma", 0.0),
                                         ("milestones", [1.5])]))
        data["train"]["schedule"][key] = bad
        field = f"train.schedule.{key}"
    elif mode == "budget":
        data["train"]["budget"] = draw(st.sampled_from([{}, {"steps": 10, "epochs": 1}, {"steps": 0},
                                                        {"seconds": -1.0}, {"kwh": "lots"}]))
        field = "train.budget"
    elif mode == "eval":
        data["eval"] = draw(st.sampled_from([[{"name": "vision.nothing"}], [{"name": "vision.clean_accuracy",
                                             "split": "everything"}], [{"name": "vision.clean_accuracy", "bogus": 1}],
                                             [{"split": "test"}]]))
        field = "eval[0]"
    elif mode == "syntax":
        text = to_toml(data)
        cut = draw(st.integers(1, len(text) - 1))
        junk = draw(st.sampled_from(["= =", "[[[", '"unterminated', "key = ", "]]"]))
        return text[:cut] + "\n" + junk + "\n" + text[cut:], [], None
    elif mode == "set_unknown":
        key = draw(st.sampled_from(["train.lrr", "model.depth", "nothing", "train.schedule.tau", "data.x.y"]))
        sets = [f"{key}=1"]
        field = key.split(".")[0]
    elif mode == "set_bad":
        sets = [draw(st.sampled_from(["train.lr=abc", "train.batch_size=1.5", "train.amp=maybe", "seed=x",
                                      "train.schedule.phi=-1", "train.lr", "=3"]))]
        field = None
    elif mode == "seed":
        data["seed"] = draw(st.sampled_from(["one", 1.5, [1]]))
        field = "seed"
    elif mode == "device":
        data["device"] = draw(st.sampled_from(["tpu", "gpu0", "cuda:x", ""]))
        field = "device"
    return to_toml(data), sets, field


@settings(max_examples=220, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=broken_recipes())
def test_broken_recipes_get_one_line_and_exit_2(case, cli, tmp_path):
    text, sets, field = case
    path = Path(tmp_path) / "broken.toml"
    path.write_text(text)
    args = ["run", str(path)]
    for s in sets:
        args += ["--set", s]
    code, out, err = cli(*args)
    lines = err.strip().splitlines()
    assert code == 2, (text, sets, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("poise: error: ")
    assert "Traceback" not in err
    assert str(path) in lines[0] or "--set" in lines[0]
    if field:
        assert field in lines[0], (field, lines[0])


def test_a_recipe_names_the_command_that_builds_it():
    import shlex

    from poise.recipes import load_recipe

    path = RECIPES / "vision" / "study-mtard-digits.toml"
    r = load_recipe(path, {"study.trials": "8", "study.seeds": "[0, 1, 2, 3, 4]"}, quick=True)
    argv = shlex.split(r.command())
    assert argv[:3] == ["poise", "run", str(path)] and "--quick" in argv
    again = load_recipe(argv[2], dict(a.split("=", 1) for a in argv[argv.index("--set") + 1::2]), quick=True)
    assert again.study.trials == 8 and again.study.seeds == [0, 1, 2, 3, 4]
    assert "--set" not in load_recipe(path).command() and "--quick" not in load_recipe(path).command()


def test_cost_accounting_does_not_change_what_a_run_is():
    from poise.recipes import load_recipe

    a = load_recipe(ERM, {"cost.country": "FRA"})
    b = load_recipe(ERM, {"cost.country": "USA"})
    assert a.config_hash() == b.config_hash()  # a teacher trained under one grid is reused under another
    assert a.config_hash() != load_recipe(ERM, {"train.lr": 0.5}).config_hash()
