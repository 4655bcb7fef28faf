"""The seed's two Sinkhorn terms (each switchable, each feeding gradient to the extractor), the geomloss
divergence against an independent log-domain Sinkhorn, and the two forms of the degradation GAN."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from poise.recipes import load_recipe
from poise.restoration.degradation_gan import GanModelCfg, LearnedDegradation, build_generator
from poise.restoration.degradations import bicubic_down, generator, quantize, resize
from poise.restoration.losses import SinkhornAlign, SinkhornCfg
from poise.restoration.models import BicubicToDegraded, HighToLow, SmoothSR
from poise.restoration.sr import variant

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "restoration"


def _log_domain_sinkhorn(x: torch.Tensor, y: torch.Tensor, eps: float, iters: int = 2000) -> float:
    """OT_eps(x, y) with uniform weights and cost |x - y|^2 / 2, by plain symmetric log-domain iterations."""
    x, y = x.double(), y.double()
    c = 0.5 * torch.cdist(x, y) ** 2
    la = torch.full((len(x),), -math.log(len(x)), dtype=torch.double)
    lb = torch.full((len(y),), -math.log(len(y)), dtype=torch.double)
    f = torch.zeros(len(x), dtype=torch.double)
    g = torch.zeros(len(y), dtype=torch.double)
    for _ in range(iters):
        f = -eps * torch.logsumexp(lb[None, :] + (g[None, :] - c) / eps, dim=1)
        g = -eps * torch.logsumexp(la[:, None] + (f[:, None] - c) / eps, dim=0)
    return float(la.exp() @ f + lb.exp() @ g)


@pytest.mark.parametrize("points", ["image", "location"])
def test_geomloss_divergence_matches_an_independent_sinkhorn(points):
    blur = 0.5
    align = SinkhornAlign(SinkhornCfg(points=points, blur=blur, scaling=0.95))
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, 2, 2, generator=g)
    b = 0.7 * torch.randn(6, 3, 2, 2, generator=g) + 0.4
    ours = align(a, b).item()
    pa, pb = align.points(a), align.points(b)
    pairs = [(pa, pb)] if points == "image" else list(zip(pa, pb, strict=True))
    eps = blur**2
    ref = sum(
        _log_domain_sinkhorn(u, v, eps) - 0.5 * _log_domain_sinkhorn(u, u, eps) - 0.5 * _log_domain_sinkhorn(v, v, eps)
        for u, v in pairs
    ) / len(pairs)
    assert ref > 0.01
    assert ours == pytest.approx(ref, rel=2e-3, abs=1e-5)


def _batch():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(8, 1, 24, 24, generator=g)
    clean = bicubic_down(hr, 2)
    degraded = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    lam = torch.rand(8, 1, 1, 1, generator=g)
    return clean, degraded, lam * degraded + (1 - lam) * clean


@pytest.mark.parametrize(("clean_term", "degraded_term"), [(True, True), (True, False), (False, True)])
def test_each_alignment_term_switches_and_feeds_the_extractor(clean_term, degraded_term):
    torch.manual_seed(0)
    model = SmoothSR(1, 2, width=8, feature_blocks=1, sr_blocks=1)
    align = SinkhornAlign(SinkhornCfg(clean_term=clean_term, degraded_term=degraded_term))
    clean, degraded, interp = _batch()
    fc, fd, fi = model.features(clean), model.features(degraded), model.features(interp)
    terms = align.terms(fc, fd, fi)
    want = {"sinkhorn_clean"} if clean_term else set()
    want |= {"sinkhorn_degraded"} if degraded_term else set()
    assert set(terms) == want
    both = SinkhornAlign(SinkhornCfg()).terms(fc, fd, fi)
    for name, value in terms.items():
        assert value.item() == pytest.approx(both[name].item())  # the same term, whichever else is on
        assert value.item() > 0
        model.zero_grad()
        value.backward(retain_graph=True)
        grad = sum(p.grad.abs().sum() for p in model.extractor.parameters() if p.grad is not None)
        assert grad > 0, name
    # the two terms are different quantities: switching one off changes the total
    assert both["sinkhorn_clean"].item() != pytest.approx(both["sinkhorn_degraded"].item(), rel=1e-3)


def test_detach_anchor_stops_gradient_through_the_interpolated_features():
    clean, degraded, interp = _batch()
    fi = interp.repeat(1, 2, 1, 1).requires_grad_(True)
    fc = clean.repeat(1, 2, 1, 1).requires_grad_(True)
    SinkhornAlign(SinkhornCfg(detach_anchor=True))(fc, fi).backward()
    assert fi.grad is None and fc.grad.abs().sum() > 0
    fi.grad = None
    SinkhornAlign(SinkhornCfg())(fc, fi).backward()
    assert fi.grad.abs().sum() > 0


def test_the_training_step_logs_exactly_the_switched_on_terms(runner, store, tmp_path):
    over = {
        "train.budget.steps": 3, "train.batch_size": 8, "model.width": 8, "model.feature_blocks": 1,
        "model.sr_blocks": 1, "degrade.gan": "", "eval": [], "train.checkpoint_every": 10,
        "loss.adversarial": 0.0,
    }
    got = {}
    for name, terms in {"both": {}, "clean": {"sinkhorn.degraded_term": False},
                        "degraded": {"sinkhorn.clean_term": False}}.items():
        rec = runner.run(load_recipe(RECIPES / "sr-robust.toml", over | terms))
        assert rec.status == "done", rec.error
        got[name] = store.final_metrics([rec.id])[rec.id]
    assert {"train.sinkhorn_clean", "train.sinkhorn_degraded"} <= set(got["both"])
    assert "train.sinkhorn_degraded" not in got["clean"] and "train.sinkhorn_clean" in got["clean"]
    assert "train.sinkhorn_clean" not in got["degraded"] and "train.sinkhorn_degraded" in got["degraded"]
    b = got["both"]
    assert b["train.sinkhorn"].value == pytest.approx(
        b["train.sinkhorn_clean"].value + b["train.sinkhorn_degraded"].value, rel=1e-4
    )
    assert variant(load_recipe(RECIPES / "sr-robust.toml", {"sinkhorn.degraded_term": False})) == (
        "robust (clean term only)"
    )


def _zero_last(net: torch.nn.Module) -> None:
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)


def test_the_seed_form_degrades_the_bicubic_clean_lr_and_the_other_form_the_hr_face():
    hr = torch.rand(4, 1, 24, 24, generator=torch.Generator().manual_seed(2))
    lr_net = build_generator(GanModelCfg(input="bicubic_lr", width=8, blocks=1), 1, 2)
    hr_net = build_generator(GanModelCfg(width=8, blocks=1), 1, 2)
    assert isinstance(lr_net, BicubicToDegraded) and isinstance(hr_net, HighToLow)
    # with a zero residual each form returns exactly what it starts from
    _zero_last(lr_net)
    _zero_last(hr_net)
    lr_op, hr_op = LearnedDegradation(lr_net, 2), LearnedDegradation(hr_net, 2)
    assert lr_op.input == "bicubic_lr" and hr_op.input == "hr"
    assert torch.equal(lr_op(hr, generator(0), 12), quantize(bicubic_down(hr, 2)))
    assert torch.equal(hr_op(hr, generator(0), 12), quantize(resize(hr, 12, "area")))
    # an untrained generator: the LR form sees the bicubic clean LR (LR-sized input and noise map)
    torch.manual_seed(0)
    lr_net = build_generator(GanModelCfg(input="bicubic_lr", width=8, blocks=1), 1, 2)
    seen = []
    lr_net.head.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    out = LearnedDegradation(lr_net, 2)(hr, generator(5), 12)
    assert out.shape == (4, 1, 12, 12) and not torch.equal(out, bicubic_down(hr, 2))
    assert seen[0].shape == (4, 2, 12, 12) and torch.equal(seen[0][:, :1], bicubic_down(hr, 2))


def test_the_robust_recipe_trains_its_gan_in_the_seed_form(runner, store, tmp_path):
    gan = (RECIPES / "degradation-gan.toml").read_text()
    (tmp_path / "degradation-gan.toml").write_text(
        gan.replace("budget = { steps = 600 }", "budget = { steps = 3 }").replace("batch_size = 32", "batch_size = 8")
        + "\n[model]\nwidth = 8\nd_width = 8\nblocks = 1\n"
    )
    (tmp_path / "sr-robust.toml").write_text((RECIPES / "sr-robust.toml").read_text())
    over = {"train.budget.steps": 2, "train.batch_size": 8, "model.width": 8, "model.feature_blocks": 1,
            "model.sr_blocks": 1, "eval": [], "train.checkpoint_every": 10}
    rec = runner.run(load_recipe(tmp_path / "sr-robust.toml", over))
    assert rec.status == "done", rec.error
    gans = [r for r in store.list_runs() if r.kind == "restoration.degradation_gan"]
    assert [r.config["model"]["input"] for r in gans] == ["bicubic_lr"]
    assert store.artifact(gans[0].id, "model").meta["model"]["input"] == "bicubic_lr"
    # the high-to-low form is the other GAN run, kept apart by its config
    runner.run(load_recipe(tmp_path / "sr-robust.toml", over | {"degrade.gan_input": "hr"}))
    gans = [r for r in store.list_runs() if r.kind == "restoration.degradation_gan"]
    assert sorted(r.config["model"]["input"] for r in gans) == ["bicubic_lr", "hr"]


def test_residual_learning_starts_exactly_at_the_bicubic_upsample():
    from poise.restoration.degradations import bicubic_up

    lr = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    model = SmoothSR(1, 2, width=8, feature_blocks=1, sr_blocks=1, global_skip=True)
    with torch.no_grad():
        assert torch.equal(model(lr), bicubic_up(lr, 2))
    plain = SmoothSR(1, 2, width=8, feature_blocks=1, sr_blocks=1)
    assert plain.sr.up[-1].weight.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sr-clean.toml", "sr-robust.toml"])
def test_the_quick_sr_models_pass_bicubic_on_clean_faces(runner, store, name):
    bic = runner.run(load_recipe(RECIPES / "bicubic.toml", quick=True))
    rec = runner.run(load_recipe(RECIPES / name, {"eval": [{"name": "restoration.clean"}]}, quick=True))
    finals = store.final_metrics([bic.id, rec.id])
    assert finals[rec.id]["utility.psnr_y"].value > finals[bic.id]["utility.psnr_y"].value


def test_tuning_runs_score_the_validation_faces_never_the_test_faces(runner, store):
    from poise.restoration.data import FaceDataCfg, load_faces
    from poise.restoration.degradations import bicubic_up
    from poise.restoration.metrics import psnr_ssim

    data = load_faces(FaceDataCfg())
    expect = {split: psnr_ssim(bicubic_up(bicubic_down(hr, 2), 2), hr, 2)[0]
              for split, hr in (("val", data.val), ("test", data.test))}
    assert abs(expect["val"] - expect["test"]) > 1e-3
    for split in ("val", "test"):
        rec = runner.run(load_recipe(RECIPES / "bicubic.toml", {"eval_split": split, "eval": [
            {"name": "restoration.clean"}, {"name": "restoration.held_out", "families": ["motion_blur"]}]}))
        finals = store.final_metrics([rec.id])[rec.id]
        assert finals["utility.psnr_y"].value == pytest.approx(expect[split], abs=1e-6), split
