"""PGD-AT (Madry et al., ICLR 2018): train on the PGD example of each batch, cross-entropy loss.

The attack runs with the model in eval mode (BatchNorm statistics are not updated by attack passes);
the training forward on x′ runs in train mode. The run's time and energy are split into the phases
``attack`` (generating x′) and ``update`` (forward, backward and optimiser step on x′).
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from poise.batching import batch_indices, steps_per_epoch
from poise.context import RunContext
from poise.recipes import TrainCfg, kind
from poise.vision.attacks import TrainAttackCfg
from poise.vision.base import VisionRecipe, build_model, finish, load_data
from poise.vision.data import train_batch


class PgdAtTrainCfg(TrainCfg):
    attack: TrainAttackCfg = Field(default_factory=TrainAttackCfg)


class PgdAtRecipe(VisionRecipe):
    train: PgdAtTrainCfg = Field(default_factory=PgdAtTrainCfg)


@kind("vision.pgd_at", PgdAtRecipe)
def run(cfg: PgdAtRecipe, ctx: RunContext) -> None:
    """PGD adversarial training (Madry): minimise cross-entropy on the PGD example of each batch."""
    data = load_data(ctx, cfg)
    model = build_model(cfg.model, data).to(ctx.device)
    n, bs, attack = len(data.train[0]), cfg.train.batch_size, cfg.train_attack()
    meter = ctx.meter(steps_per_epoch(n, bs))
    opt = ctx.optimizer(model.parameters())
    sched = ctx.scheduler(opt, meter)
    ctx.track(model=model, optimizer=opt, scheduler=sched)
    for step in ctx.steps(meter):
        xb, yb = train_batch(data, batch_indices(step, n, bs, cfg.seed), cfg.data, ctx.device)
        with ctx.count_flops():
            with ctx.phase("attack"), ctx.autocast():
                x_adv = attack(model, xb, yb)
            with ctx.phase("update"):
                with ctx.autocast():
                    model.train()
                    loss = F.cross_entropy(model(x_adv), yb)
                ctx.optimizer_step(loss, opt, sched)
        if step % 10 == 0:
            ctx.log_metrics({"loss": loss.item(), "lr": sched.get_last_lr()[0]}, step=step)
    finish(ctx, cfg, model, data)
