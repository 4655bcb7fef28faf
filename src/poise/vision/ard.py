"""ARD — adversarially robust distillation (Goldblum et al., AAAI 2020).

Loss ``α·τ²·KL(T(x)/τ ‖ S(x′)/τ) + (1 − α)·CE(S(x), y)`` with x′ a cross-entropy PGD attack on the
student (uniform random start, student in eval mode) and the robust teacher seeing the clean x. KL is
averaged over batch × classes as in the authors' code (``kl_reduction``). With α = 1 (the default,
as in the MTARD paper's baseline) the student's clean forward pass is skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from poise.batching import batch_indices, steps_per_epoch
from poise.context import RunContext
from poise.recipes import TrainCfg, kind
from poise.vision.attacks import TrainAttackCfg
from poise.vision.base import (
    VisionModelCfg,
    VisionRecipe,
    build_model,
    finish,
    load_data,
    load_teacher,
)
from poise.vision.data import train_batch
from poise.vision.losses import KLReduction, soft_kl


class DistillModelCfg(VisionModelCfg):
    """The student, and its robust teacher: ``run:<id>`` or a recipe file (trained first when missing)."""

    teacher: str = "teacher-robust-digits.toml"


class ArdTrainCfg(TrainCfg):
    attack: TrainAttackCfg = Field(default_factory=TrainAttackCfg)
    alpha: float = Field(1.0, ge=0.0, le=1.0, description="weight of the distillation term")
    temperature: float = Field(30.0, gt=0.0, description="τ of both soft labels")
    kl_reduction: KLReduction = "mean"


class ArdRecipe(VisionRecipe):
    model: DistillModelCfg = Field(default_factory=DistillModelCfg)
    train: ArdTrainCfg = Field(default_factory=ArdTrainCfg)


@kind("vision.ard", ArdRecipe)
def run(cfg: ArdRecipe, ctx: RunContext) -> None:
    """ARD: distil a robust teacher's clean soft labels into the student's outputs on adversarial inputs."""
    data = load_data(ctx, cfg)
    teacher = load_teacher(ctx, cfg.model.teacher, "model.teacher", data)
    model = build_model(cfg.model, data).to(ctx.device)
    n, bs, t, attack = len(data.train[0]), cfg.train.batch_size, cfg.train, cfg.train_attack()
    meter = ctx.meter(steps_per_epoch(n, bs))
    opt = ctx.optimizer(model.parameters())
    sched = ctx.scheduler(opt, meter)
    ctx.track(model=model, optimizer=opt, scheduler=sched)
    for step in ctx.steps(meter):
        xb, yb = train_batch(data, batch_indices(step, n, bs, cfg.seed), cfg.data, ctx.device)
        with ctx.count_flops(), ctx.phase("update"):
            with ctx.autocast():
                with ctx.phase("attack"):
                    x_adv = attack(model, xb, yb)
                with ctx.phase("teacher"), torch.no_grad():
                    soft = F.softmax(teacher(xb) / t.temperature, dim=1)
                model.train()
                distill = soft_kl(soft, model(x_adv) / t.temperature, t.kl_reduction) * t.temperature**2
                loss = t.alpha * distill
                if t.alpha < 1.0:
                    loss = loss + (1.0 - t.alpha) * F.cross_entropy(model(xb), yb)
            ctx.optimizer_step(loss, opt, sched)
        if step % 10 == 0:
            ctx.log_metrics({"loss": loss.item(), "lr": sched.get_last_lr()[0]}, step=step)
    finish(ctx, cfg, model, data)
