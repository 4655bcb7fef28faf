"""TRADES (Zhang et al., ICML 2019): ``CE(f(x), y) + β·KL(f(x) ‖ f(x′))``, x′ maximising that KL.

As in the authors' code: the attack starts at x + 0.001·N(0, 1) and maximises the summed KL to the
model's (fixed) clean prediction with the model in eval mode; the training loss averages the KL over
the batch (``batchmean``) and lets gradients flow through both f(x) and f(x′).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from poise.batching import batch_indices, steps_per_epoch
from poise.context import RunContext
from poise.recipes import TrainCfg, kind
from poise.vision.attacks import GaussianStartAttackCfg, attack_mode, kl_to
from poise.vision.base import VisionRecipe, build_model, finish, load_data
from poise.vision.data import train_batch
from poise.vision.losses import KLReduction, soft_kl


class TradesTrainCfg(TrainCfg):
    attack: GaussianStartAttackCfg = Field(default_factory=GaussianStartAttackCfg)
    beta: float = Field(6.0, ge=0.0, description="weight of the robustness (KL) term")
    kl_reduction: KLReduction = Field("batchmean", description="batchmean as in the TRADES code")


class TradesRecipe(VisionRecipe):
    train: TradesTrainCfg = Field(default_factory=TradesTrainCfg)


@kind("vision.trades", TradesRecipe)
def run(cfg: TradesRecipe, ctx: RunContext) -> None:
    """TRADES: clean cross-entropy plus β times the KL between clean and adversarial predictions."""
    data = load_data(ctx, cfg)
    model = build_model(cfg.model, data).to(ctx.device)
    n, bs, attack = len(data.train[0]), cfg.train.batch_size, cfg.train_attack()
    meter = ctx.meter(steps_per_epoch(n, bs))
    opt = ctx.optimizer(model.parameters())
    sched = ctx.scheduler(opt, meter)
    ctx.track(model=model, optimizer=opt, scheduler=sched)
    for step in ctx.steps(meter):
        xb, yb = train_batch(data, batch_indices(step, n, bs, cfg.seed), cfg.data, ctx.device)
        with ctx.count_flops(), ctx.phase("update"):
            with ctx.autocast():
                with ctx.phase("attack"), attack_mode(model), torch.no_grad():
                    p_nat = F.softmax(model(xb), dim=1)
                with ctx.phase("attack"):
                    x_adv = attack(model, xb, yb, objective=kl_to(p_nat))
                model.train()
                logits_nat = model(xb)
                natural = F.cross_entropy(logits_nat, yb)
                robust = soft_kl(F.softmax(logits_nat, dim=1), model(x_adv), cfg.train.kl_reduction)
                loss = natural + cfg.train.beta * robust
            ctx.optimizer_step(loss, opt, sched)
        if step % 10 == 0:
            ctx.log_metrics(
                {
                    "loss": loss.item(),
                    "natural": natural.item(),
                    "robust": robust.item(),
                    "lr": sched.get_last_lr()[0],
                },
                step=step,
            )
    finish(ctx, cfg, model, data)
