"""Restoration runs split into phases: the degraded inputs (the learned GAN's forward), the SR update and
the discriminator's update; the degradation GAN into its generator and discriminator updates."""

from __future__ import annotations

import time

from poise.recipes import load_recipe
from tests.phases_check import check_phases
from tests.restoration.test_sr_runs import TINY, tiny


def test_sr_and_gan_runs_record_their_phases(runner, store, tmp_path):
    root = tiny(tmp_path)
    t0 = time.perf_counter()
    rec = runner.run(load_recipe(root / "sr-robust.toml", TINY | {"eval": []}))
    outer = time.perf_counter() - t0
    check_phases(store, rec, {"degradation", "update", "discriminator"}, outer)
    (gan,) = [r for r in store.list_runs() if r.kind == "restoration.degradation_gan"]
    check_phases(store, gan, {"generator", "discriminator"}, outer)
    # the clean-trained model has no GAN and no discriminator: its degradation is the bicubic input
    t0 = time.perf_counter()
    clean = runner.run(load_recipe(root / "sr-clean.toml", TINY | {"eval": []}))
    check_phases(store, clean, {"degradation", "update"}, time.perf_counter() - t0)
