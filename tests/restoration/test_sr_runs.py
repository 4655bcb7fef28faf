"""Restoration kinds end to end on tiny budgets: the GAN is trained once and shared, every evaluator
logs its metrics with axes, artifacts reload, and a run interrupted mid-way resumes to the same result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from poise.recipes import load_recipe
from poise.restoration.sr import load_sr_model, variant
from tests.conftest import resume_matches

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "restoration"
TINY = {
    "train.budget.steps": 6,
    "train.batch_size": 8,
    "model.width": 8,
    "model.feature_blocks": 1,
    "model.sr_blocks": 1,
    "data.eval_limit": 6,
    "train.checkpoint_every": 3,
}
GAN_TINY = {
    "train.budget.steps": 4,
    "train.batch_size": 8,
    "model.width": 8,
    "model.d_width": 8,
    "model.blocks": 1,
}


def tiny(tmp_path: Path) -> Path:
    """The shipped GAN recipe with a tiny budget, next to copies of the SR recipes that point at it."""
    gan = (RECIPES / "degradation-gan.toml").read_text()
    gan = gan.replace("budget = { steps = 600 }", "budget = { steps = 4 }").replace(
        "batch_size = 32", "batch_size = 8"
    )
    (tmp_path / "degradation-gan.toml").write_text(gan + "\n[model]\nwidth = 8\nd_width = 8\nblocks = 1\n")
    for f in ("sr-robust.toml", "sr-clean.toml", "bicubic.toml"):
        (tmp_path / f).write_text((RECIPES / f).read_text())
    return tmp_path


def test_robust_run_shares_the_gan_and_logs_every_metric(runner, store, tmp_path):
    root = tiny(tmp_path)
    rec = runner.run(load_recipe(root / "sr-robust.toml", TINY))
    assert rec.status == "done", rec.error
    runs = store.list_runs()
    gans = [r for r in runs if r.kind == "restoration.degradation_gan"]
    assert len(gans) == 1 and gans[0].status == "done"
    finals = store.final_metrics([rec.id])[rec.id]
    for key in (
        "utility.psnr_y",
        "utility.ssim",
        "utility.psnr_y_photo",
        "robustness.psnr_y_held_out",
        "robustness.psnr_y_motion_blur",
        "robustness.psnr_y_poisson_noise",
        "robustness.psnr_y_compound",
        "robustness.psnr_y_pgd",
        "robustness.ssim_pgd",
        "robustness.feature_smoothness",
        "train.sinkhorn",
        "train.adv",
        "train.pixel",
    ):
        assert key in finals, key
    assert 5 < finals["utility.psnr_y"].value < 60
    assert finals["robustness.psnr_y_pgd"].value < finals["utility.psnr_y"].value
    gan_finals = store.final_metrics([gans[0].id])[gans[0].id]
    assert {"utility.lr_gap_gan", "utility.hf_gap_gan"} <= set(gan_finals)
    model = load_sr_model(store, rec.id)
    assert model(torch.rand(2, 1, 12, 12)).shape == (2, 1, 24, 24)
    # a second SR run reuses the GAN (same config hash)
    runner.run(load_recipe(root / "sr-robust.toml", TINY | {"seed": 1, "eval": []}))
    assert len([r for r in store.list_runs() if r.kind == "restoration.degradation_gan"]) == 1
    # the report section: a PNG face grid and one table row per SR run
    from poise.restoration.report import section

    blocks = section(store, store.list_runs())
    assert blocks[0].png is not None and blocks[0].png.startswith(b"\x89PNG")
    table = blocks[1].table
    assert table is not None and [row[2] for row in table[1]] == ["robust", "robust"]


def test_bicubic_and_variants(runner, store, tmp_path):
    root = tiny(tmp_path)
    rec = runner.run(load_recipe(root / "bicubic.toml", {"data.eval_limit": 6}))
    finals = store.final_metrics([rec.id])[rec.id]
    assert finals["utility.psnr_y"].value > finals["robustness.psnr_y_held_out"].value
    # the selection criterion weighs clean faces as much as all held-out degradations together
    overall = (finals["utility.psnr_y"].value + finals["robustness.psnr_y_held_out"].value) / 2
    assert finals["robustness.psnr_y_overall"].value == pytest.approx(overall, abs=1e-9)
    assert variant(load_recipe(root / "sr-clean.toml")) == "clean-trained"
    assert variant(load_recipe(root / "sr-robust.toml")) == "robust"
    assert variant(load_recipe(root / "sr-robust.toml", {"loss.sinkhorn": 0})) == "robust w/o Sinkhorn"
    assert (
        variant(load_recipe(root / "sr-robust.toml", {"mix.low": 1, "loss.sinkhorn": 0}))
        == "degraded-trained"
    )


def test_interrupted_run_resumes_to_the_same_weights(runner, store, tmp_path, monkeypatch):
    root = tiny(tmp_path)
    over = TINY | {"degrade.gan": "", "eval": []}
    full = runner.run(load_recipe(root / "sr-robust.toml", over))
    from poise.restoration import sr as sr_mod

    calls = {"n": 0}
    real = sr_mod.bicubic_down

    def crash_at_step_4(hr, scale):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return real(hr, scale)

    monkeypatch.setattr(sr_mod, "bicubic_down", crash_at_step_4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        runner.run(load_recipe(root / "sr-robust.toml", over | {"name": "crashy"}))
    monkeypatch.setattr(sr_mod, "bicubic_down", real)
    resume_matches(runner, store, full)


def test_the_tour_says_where_a_quick_recipe_differs_in_kind(cli):
    """Quick SR models learn a residual over bicubic while the full recipes keep the paper's form: the tour
    table says so beside the run, and the note is not part of what the run trains."""
    import json

    from poise.recipes import load_recipe

    from ..conftest import RECIPES

    code, out, _ = cli("--json", "tour", "--quick", "--only", "restoration/sr-clean.toml")
    assert code == 0
    items = {i["recipe"]: i for i in json.loads(out)["recipes"]}
    assert items["restoration/sr-clean.toml"]["status"] == "ran"
    assert "residual over bicubic" in items["restoration/sr-clean.toml"]["note"]
    full, quick = (load_recipe(RECIPES / "restoration" / "sr-clean.toml", quick=q) for q in (False, True))
    assert full.quick_note == quick.quick_note and not full.model.global_skip and quick.model.global_skip
    assert full.config_hash() == full.model_copy(update={"quick_note": ""}).config_hash()
