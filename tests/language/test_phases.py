"""Language training kinds charge their optimiser steps to the phase ``update``: the tiny LM's
pretraining, SFT and DPO (evaluation and loading stay in ``other``)."""

from __future__ import annotations

import time

from poise.recipes import load_recipe
from tests.language.conftest import TINY_TOML, WORLD
from tests.language.test_finetune import _recipes
from tests.phases_check import check_phases


def test_base_sft_and_dpo_record_their_update(runner, store, tmp_path, tiny_model_dir):
    base = tmp_path / "base.toml"
    base.write_text("\n".join(['kind = "language.base"', "[model]", TINY_TOML, *WORLD,
                               "[train]", "batch_size = 8", "budget = { steps = 3 }"]) + "\n")
    t0 = time.perf_counter()
    rec = runner.run(load_recipe(base, {"eval": []}))
    check_phases(store, rec, {"update"}, time.perf_counter() - t0)
    _, dpo = _recipes(tmp_path, tiny_model_dir)
    t0 = time.perf_counter()
    rec = runner.run(load_recipe(dpo, {"eval": []}))
    outer = time.perf_counter() - t0
    check_phases(store, rec, {"update"}, outer)
    (sft,) = store.list_runs(kind="language.sft")
    check_phases(store, sft, {"update"}, outer)
