"""ERM: standard training of an image classifier (the clean baseline and the clean teacher).

At each epoch end it reports ``utility.clean_acc`` on the validation split as an intermediate value,
so a sweep over ERM recipes whose single objective is clean accuracy can prune poor trials early.
"""

from __future__ import annotations

import torch.nn.functional as F

from poise.batching import batch_indices, steps_per_epoch
from poise.context import RunContext
from poise.recipes import kind
from poise.vision.base import VisionRecipe, build_model, finish, load_data
from poise.vision.data import train_batch
from poise.vision.evaluators import accuracy


class ErmRecipe(VisionRecipe):
    """Standard training; ``[threat]`` only sets the eps its robustness evaluators use."""


@kind("vision.erm", ErmRecipe)
def run(cfg: ErmRecipe, ctx: RunContext) -> None:
    """Standard training (empirical risk minimisation) of an image classifier."""
    data = load_data(ctx, cfg)
    model = build_model(cfg.model, data).to(ctx.device)
    n, bs = len(data.train[0]), cfg.train.batch_size
    per_epoch = steps_per_epoch(n, bs)
    meter = ctx.meter(per_epoch)
    opt = ctx.optimizer(model.parameters())
    sched = ctx.scheduler(opt, meter)
    ctx.track(model=model, optimizer=opt, scheduler=sched)
    for step in ctx.steps(meter):
        xb, yb = train_batch(data, batch_indices(step, n, bs, cfg.seed), cfg.data, ctx.device)
        with ctx.count_flops(), ctx.phase("update"):
            model.train()
            with ctx.autocast():
                loss = F.cross_entropy(model(xb), yb)
            ctx.optimizer_step(loss, opt, sched)
        if step % 10 == 0:
            ctx.log_metrics({"loss": loss.item(), "lr": sched.get_last_lr()[0]}, step=step)
        if (step + 1) % per_epoch == 0:
            ctx.report_intermediate("utility.clean_acc", lambda: accuracy(model, *data.val, ctx.device), step + 1)
    finish(ctx, cfg, model, data)
