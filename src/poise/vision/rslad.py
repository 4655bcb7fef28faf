"""RSLAD — robust soft label adversarial distillation (Zi et al., ICCV 2021).

Loss ``5/6·KL(T(x) ‖ S(x′)) + 1/6·KL(T(x) ‖ S(x))``: the robust teacher's clean soft labels replace
the hard labels everywhere, and x′ maximises the summed KL(T(x) ‖ S(x′)) from x + 0.001·N(0, 1) with
the student in eval mode. KL is averaged over batch × classes as in the authors' code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from poise.batching import batch_indices, steps_per_epoch
from poise.context import RunContext
from poise.recipes import TrainCfg, kind
from poise.vision.ard import DistillModelCfg
from poise.vision.attacks import GaussianStartAttackCfg, kl_to
from poise.vision.base import VisionRecipe, build_model, finish, load_data, load_teacher
from poise.vision.data import train_batch
from poise.vision.losses import KLReduction, soft_kl


class RsladTrainCfg(TrainCfg):
    attack: GaussianStartAttackCfg = Field(default_factory=GaussianStartAttackCfg)
    adv_weight: float = Field(
        5 / 6, ge=0.0, le=1.0, description="weight of the adversarial term (clean: 1 − it)"
    )
    kl_reduction: KLReduction = "mean"


class RsladRecipe(VisionRecipe):
    model: DistillModelCfg = Field(default_factory=DistillModelCfg)
    train: RsladTrainCfg = Field(default_factory=RsladTrainCfg)


@kind("vision.rslad", RsladRecipe)
def run(cfg: RsladRecipe, ctx: RunContext) -> None:
    """RSLAD: the robust teacher's clean soft labels supervise the student on clean and adversarial inputs."""
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
                with ctx.phase("teacher"), torch.no_grad():
                    soft = F.softmax(teacher(xb), dim=1)
                with ctx.phase("attack"):
                    x_adv = attack(model, xb, yb, objective=kl_to(soft))
                model.train()
                adv = soft_kl(soft, model(x_adv), t.kl_reduction)
                nat = soft_kl(soft, model(xb), t.kl_reduction)
                loss = t.adv_weight * adv + (1.0 - t.adv_weight) * nat
            ctx.optimizer_step(loss, opt, sched)
        if step % 10 == 0:
            ctx.log_metrics(
                {"loss": loss.item(), "adv": adv.item(), "nat": nat.item(), "lr": sched.get_last_lr()[0]},
                step=step,
            )
    finish(ctx, cfg, model, data)
