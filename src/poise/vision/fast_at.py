"""Fast adversarial training with FGSM-RS (Wong, Rice & Kolter, ICLR 2020) and its overfitting check.

Each batch: δ ~ U(−eps, eps), one signed-gradient step of ``step_factor``·eps (1.25 in the paper),
projection onto the eps ball and the image box, then a cross-entropy step on x + δ.

Catastrophic overfitting — FGSM-trained models suddenly losing all PGD robustness — is watched at the
end of every epoch: PGD (``co_steps`` steps) accuracy on the first ``co_n`` validation examples is
logged as ``train.co_pgd_acc``; a drop of more than ``co_drop`` below the best seen so far is
catastrophic overfitting. The best weights so far are kept, and with ``on_overfit = "stop"`` training
stops and the best weights are restored (the paper's early stopping); with ``"warn"`` it is only
logged (``train.catastrophic_overfitting`` = 1).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field

from poise.batching import batch_indices, steps_per_epoch
from poise.context import RunContext
from poise.recipes import TrainCfg, kind
from poise.vision.attacks import Attack
from poise.vision.base import VisionRecipe, build_model, finish, load_data
from poise.vision.data import train_batch
from poise.vision.evaluators import robust_accuracy


class FastAtTrainCfg(TrainCfg):
    step_factor: float = Field(1.25, gt=0.0, description="FGSM step = step_factor·eps")
    co_steps: int = Field(10, ge=1, description="PGD steps of the per-epoch overfitting check")
    co_n: int = Field(256, gt=0, description="validation examples of the overfitting check")
    co_drop: float = Field(0.2, gt=0.0, le=1.0, description="PGD accuracy drop that counts as overfitting")
    on_overfit: Literal["stop", "warn"] = "stop"


class FastAtRecipe(VisionRecipe):
    train: FastAtTrainCfg = Field(default_factory=FastAtTrainCfg)

    def train_attack(self) -> Attack:
        """FGSM-RS: a uniform start in the eps ball, one signed step of step_factor·eps."""
        eps = self.threat.eps
        return Attack("fgsm", eps=eps, norm=self.threat.norm, step_size=self.train.step_factor * eps, start="uniform")


@kind("vision.fast_at", FastAtRecipe)
def run(cfg: FastAtRecipe, ctx: RunContext) -> None:
    """Fast FGSM-RS adversarial training with a per-epoch PGD check for catastrophic overfitting."""
    data = load_data(ctx, cfg)
    model = build_model(cfg.model, data).to(ctx.device)
    n, bs, threat, t, attack = len(data.train[0]), cfg.train.batch_size, cfg.threat, cfg.train, cfg.train_attack()
    per_epoch = steps_per_epoch(n, bs)
    meter = ctx.meter(per_epoch)
    opt = ctx.optimizer(model.parameters())
    sched = ctx.scheduler(opt, meter)
    watch = {
        "best_acc": -1.0,
        "best": {k: v.clone() for k, v in model.state_dict().items()},
        "overfit": False,
    }
    ctx.track(model=model, optimizer=opt, scheduler=sched, watch=watch)
    check = Attack("pgd", eps=threat.eps, norm=threat.norm, steps=t.co_steps)
    x_val, y_val = data.val if len(data.val[0]) else data.train
    for step in ctx.steps(meter):
        xb, yb = train_batch(data, batch_indices(step, n, bs, cfg.seed), cfg.data, ctx.device)
        with ctx.count_flops(), ctx.phase("update"):
            with ctx.autocast():
                with ctx.phase("attack"):
                    x_adv = attack(model, xb, yb)
                model.train()
                loss = F.cross_entropy(model(x_adv), yb)
            ctx.optimizer_step(loss, opt, sched)
        if step % 10 == 0:
            ctx.log_metrics({"loss": loss.item(), "lr": sched.get_last_lr()[0]}, step=step)
        if (step + 1) % per_epoch == 0 or meter.done(step + 1):
            acc = robust_accuracy(model, x_val[: t.co_n], y_val[: t.co_n], check, ctx.device, seed=cfg.seed)
            ctx.log_metric("co_pgd_acc", acc, step=step + 1, direction="max")
            if acc > watch["best_acc"]:
                watch["best_acc"] = acc
                watch["best"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif acc < watch["best_acc"] - t.co_drop:
                watch["overfit"] = True
                ctx.info(
                    f"catastrophic overfitting at step {step + 1}: PGD accuracy {acc:.3f} "
                    f"(best {watch['best_acc']:.3f})"
                )
                if t.on_overfit == "stop":
                    break
    ctx.log_metric("catastrophic_overfitting", float(watch["overfit"]))
    if watch["overfit"] and t.on_overfit == "stop":
        model.load_state_dict(watch["best"])
    finish(ctx, cfg, model, data)
