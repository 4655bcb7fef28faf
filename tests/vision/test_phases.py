"""Every vision trainer splits its run into phases: attack generation, the teacher's forward (the
distillation kinds) and the weight update; their times add up to no more than the run's."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from poise.recipes import load_recipe
from tests.phases_check import check_phases

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "vision"
TINY = {"train.budget": {"steps": 6}, "train.batch_size": 32, "model.width": 8, "train.checkpoint_every": 100,
        "eval": [{"name": "vision.clean_accuracy", "n": 40}]}
ATTACK = {"train.attack.steps": 2}
EXPECTED = {
    "erm-digits": ({}, {"update"}),
    "fast-at-digits": ({"train.co_n": 20, "train.co_steps": 2}, {"attack", "update"}),
    "trades-digits": (ATTACK, {"attack", "update"}),
    "ard-digits": (ATTACK, {"attack", "teacher", "update"}),
    "rslad-digits": (ATTACK, {"attack", "teacher", "update"}),
    "mtard-digits": (ATTACK, {"attack", "teacher", "update"}),
}


@pytest.fixture(scope="module")
def teacher_store(tmp_path_factory):
    """A store holding one tiny ERM run that serves as every distillation kind's teacher."""
    from poise.runner import Runner
    from poise.store import Store
    from poise.ui import UI

    store = Store(root=tmp_path_factory.mktemp("phases") / ".poise")
    runner = Runner(store, UI(quiet=True))
    teacher = runner.run(load_recipe(RECIPES / "erm-digits.toml", TINY))
    assert teacher.status == "done", teacher.error
    yield store, runner, f"run:{teacher.id}"
    store.close()


@pytest.mark.parametrize("recipe", list(EXPECTED))
def test_vision_kind_records_its_phases(teacher_store, recipe):
    store, runner, teacher = teacher_store
    over, expected = EXPECTED[recipe]
    teachers = {"ard-digits": {"model.teacher": teacher}, "rslad-digits": {"model.teacher": teacher},
                "mtard-digits": {"model.clean_teacher": teacher, "model.robust_teacher": teacher}}
    cfg = load_recipe(RECIPES / f"{recipe}.toml", {**TINY, **over, **teachers.get(recipe, {})})
    t0 = time.perf_counter()
    rec = runner.run(cfg)
    check_phases(store, rec, expected, time.perf_counter() - t0)
