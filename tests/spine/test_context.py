"""The run context's verbs (the one door a kind has into poise) and the registries behind it."""

from __future__ import annotations

import math

import pytest
import torch

from poise.context import DivergedError, RunContext
from poise.recipes import load_recipe
from poise.registry import get_kind, get_rebuilder

from ..conftest import RECIPES

ERM = RECIPES / "vision" / "erm-digits.toml"
SMALL = {"train.budget": {"steps": 20}, "model.width": 8, "train.checkpoint_every": 10,
         "eval": [{"name": "vision.clean_accuracy"}]}


def _execute(runner, store, fn, cfg):
    return runner._execute(fn, cfg, store.create_run(kind=cfg.kind, name=cfg.display_name, config=cfg.resolved(),
                                                     config_hash=cfg.config_hash(), seed=cfg.seed))


def test_child_runs_are_reused_and_their_metrics_and_artifacts_are_readable(runner, store):
    cfg = load_recipe(ERM, SMALL)
    seen = {}

    def parent(cfg, ctx: RunContext):
        child = load_recipe(ERM, SMALL)
        first = ctx.child_run(child)
        again = ctx.child_run(child)
        seen["ids"] = (first.id, again.id)
        seen["parent"] = first.parent_id
        seen["metrics"] = ctx.final_metrics(first)
        seen["by_prefix"] = ctx.run_record(first.id[:6]).id
        seen["artifact"] = ctx.artifact(first).media
        tensors, meta = ctx.load_artifact(first)
        seen["classes"] = meta["num_classes"]

    rec = _execute(runner, store, parent, cfg)
    assert rec.status == "done"
    assert seen["ids"][0] == seen["ids"][1] and seen["parent"] == rec.id
    assert seen["by_prefix"] == seen["ids"][0]
    assert 0.0 <= seen["metrics"]["utility.clean_acc"].value <= 1.0
    assert seen["artifact"] == "safetensors" and seen["classes"] == 10


def test_scratch_dir_survives_a_resume_and_goes_with_the_run(runner, store):
    cfg = load_recipe(ERM, SMALL)
    paths = []

    def kind_run(cfg, ctx: RunContext):
        d = ctx.scratch_dir("cache")
        paths.append(d)
        marker = d / "seen"
        if not marker.exists():
            marker.write_text("1")
            raise RuntimeError("killed")

    rid = store.create_run(kind=cfg.kind, name="s", config=cfg.resolved(), config_hash="x", seed=0)
    with pytest.raises(RuntimeError):
        runner._execute(kind_run, cfg, rid)
    assert runner._execute(kind_run, cfg, rid).status == "done"  # the second segment sees the first's file
    assert paths[0] == paths[1] and (paths[1] / "seen").read_text() == "1"
    store.delete_run(rid)
    assert not paths[0].exists()


def test_adopted_files_become_content_addressed_artifacts(runner, store):
    cfg = load_recipe(ERM, SMALL)

    def kind_run(cfg, ctx: RunContext):
        tmp = ctx.incoming_path(".bin")
        tmp.write_bytes(b"merged weights")
        art = ctx.adopt_file("blob", tmp, "application/octet-stream")
        assert not tmp.exists() and art.path.read_bytes() == b"merged weights"

    rec = _execute(runner, store, kind_run, cfg)
    assert rec.status == "done" and store.artifact(rec.id, "blob").sha256


def test_optimizer_step_steps_clips_and_schedules(runner, store):
    cfg = load_recipe(ERM, {**SMALL, "train.grad_clip": 0.5, "train.lr": 0.1})
    out = {}

    def kind_run(cfg, ctx: RunContext):
        w = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.SGD([w], lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
        ctx.optimizer_step((100 * w).sum(), opt, sched)  # gradient 100 per entry, clipped to norm 0.5
        out["w"] = w.detach().clone()
        out["lr"] = opt.param_groups[0]["lr"]

    _execute(runner, store, kind_run, cfg)
    assert torch.allclose(out["w"], torch.full((3,), 1 - 0.1 * 0.5 / math.sqrt(3)), atol=1e-6)
    assert out["lr"] == pytest.approx(0.05)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_the_run_before_it_reaches_the_weights(runner, store, bad):
    cfg = load_recipe(ERM, SMALL)
    w = torch.nn.Parameter(torch.ones(2))

    def kind_run(cfg, ctx: RunContext):
        opt = torch.optim.SGD([w], lr=0.1)
        ctx.optimizer_step(w.sum() * bad, opt)

    rid = store.create_run(kind=cfg.kind, name="s", config=cfg.resolved(), config_hash="y", seed=0)
    with pytest.raises(DivergedError, match="loss became (nan|inf) at step 0"):
        runner._execute(kind_run, cfg, rid)
    assert torch.equal(w.detach(), torch.ones(2))
    rec = store.get_run(rid)
    assert rec.status == "failed" and "loss became" in rec.error and "\n" not in rec.error


def test_phases_are_charged_to_the_innermost_one():
    from poise.carbon import CostTracker

    tracker = CostTracker("FRA", track_energy=False)
    with tracker.phase("update"), tracker.phase("attack"):
        sum(i * i for i in range(200_000))
    wall, _cpu = tracker.phases.totals()
    attack, update = wall["attack"], wall.get("update", 0.0)
    assert attack > 0 and update >= 0 and update < attack


def test_a_domains_kinds_inherit_its_rebuilder():
    from poise.vision.base import rebuild

    for name in ("vision.erm", "vision.pgd_at", "vision.trades", "vision.fast_at", "vision.ard", "vision.rslad",
                 "vision.mtard"):
        assert get_kind(name).rebuild is rebuild
        assert get_rebuilder(name) is rebuild
    assert get_kind("language.sft").rebuild is get_kind("language.dpo").rebuild is not None


def test_a_kind_without_a_rebuilder_is_a_user_error():
    from poise.errors import UserError

    with pytest.raises(UserError, match="cannot rebuild its model"):
        get_rebuilder("control.agent")


def test_domains_register_their_commands():
    from poise.registry import commands

    assert "merge" in commands()
