"""MTARD — multi-teacher adversarial robustness distillation (Zhao et al., ECCV 2022) and B-MTARD's
Entropy-Based Balance (Zhao, Wang & Wei, TPAMI 2024).

Per batch, as in the authors' code:

1. x′ = PGD on the **student** with cross-entropy against the labels, from x + 0.001·N(0, 1), student
   in eval mode (``[train.attack]``, eps and norm from ``[threat]``);
2. the **robust teacher** and the student both see x′, the **clean teacher** and the student both see x:
   ``loss = w_adv·KL(T_adv(x′)/τ_adv ‖ S(x′)) + w_nat·KL(T_nat(x)/τ_nat ‖ S(x))`` (KL averaged over
   batch × classes, as the authors' code does; the student's logits are never tempered);
3. **Normalization Loss Balance**: with each term's first-batch value L⁰ and r = L/L⁰,
   ``w_nat ← w_nat − λ_w·(w_nat − r_nat/(r_adv + r_nat))``, ``w_adv = 1 − w_nat`` (start 0.5/0.5):
   the term that has fallen less (relative to its start) gets more weight;
4. **Entropy-Based Balance** (``entropy_balance = true``, the default): with H = batch × class mean of
   p·log p of each tempered teacher, ``τ_adv ← τ_adv − λ_τ·sign(H_adv/H_nat − 1)`` and symmetrically
   for τ_nat, both clamped to [τ_min, τ_max] = [1, 10]: it pulls the teachers' output entropies together.
   The seed's abstract names both balances, so both are on; ``entropy_balance = false`` is the ablation
   "without entropy balance" (the ECCV version's fixed temperatures). A saturated teacher (one-hot soft
   labels) has H = 0 exactly; the ratio's sign is taken as ``sign(H_nat − H_adv)`` (the same for H < 0, and
   defined at 0), so the saturated teacher's temperature rises instead of the update dividing by zero.

Open detail, our choice: the authors cut λ_w and λ_τ by 10 at each learning-rate milestone. With
poise's budget-aware schedules we scale both by lr_t / lr_max at every step (``balance_follows_lr``),
which is the same thing for the step schedule and its natural extension for the others.

Open detail, our choice: λ_τ = 0.001 is a per-step rate for the paper's ~117,300 steps (300 CIFAR epochs
× 391 batches), over which τ can travel 117 units across its range [1, 10]. On a run of a few hundred
steps the same rate leaves τ within 0.2–0.6 of 1, so the balance never acts (quick digits MTARD under
AutoAttack: 1.7 % with it, 28.3 % with the travel kept). ``temp_lr_steps`` keeps the travel: a run of N
steps uses λ_τ·temp_lr_steps/N; the digits recipes set it to the paper's 117,300.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from poise.batching import batch_indices, steps_per_epoch
from poise.context import RunContext
from poise.recipes import TrainCfg, kind
from poise.vision.attacks import GaussianStartAttackCfg
from poise.vision.base import (
    VisionModelCfg,
    VisionRecipe,
    build_model,
    finish,
    load_data,
    load_teacher,
)
from poise.vision.data import train_batch
from poise.vision.losses import KLReduction, mean_plogp, soft_kl


class MtardModelCfg(VisionModelCfg):
    """The student and its two teachers: ``run:<id>`` or recipe files (trained first when missing)."""

    clean_teacher: str = "teacher-clean-digits.toml"
    robust_teacher: str = "teacher-robust-digits.toml"


class MtardTrainCfg(TrainCfg):
    attack: GaussianStartAttackCfg = Field(default_factory=GaussianStartAttackCfg)
    weight_lr: float = Field(
        0.025, ge=0.0, le=1.0, description="λ_w of Normalization Loss Balance (0: fixed)"
    )
    init_nat_weight: float = Field(0.5, ge=0.0, le=1.0, description="w_nat at the start (w_adv = 1 − w_nat)")
    entropy_balance: bool = Field(
        True, description="Entropy-Based Balance of the temperatures (false: the ablation without it)"
    )
    temp_lr: float = Field(0.001, ge=0.0, description="λ_τ of Entropy-Based Balance")
    temp_lr_steps: int | None = Field(
        None, gt=0, description="the run length temp_lr is meant for: a run of N steps uses temp_lr·temp_lr_steps/N "
        "(none: temp_lr per step as given)")
    temp_min: float = Field(1.0, gt=0.0)
    temp_max: float = Field(10.0, gt=0.0)
    balance_follows_lr: bool = Field(True, description="scale λ_w and λ_τ by lr_t / lr_max")
    kl_reduction: KLReduction = "mean"

    @model_validator(mode="after")
    def _temps(self) -> MtardTrainCfg:
        if self.temp_min > self.temp_max:
            raise ValueError(f"expected temp_min <= temp_max (got {self.temp_min} > {self.temp_max})")
        return self


class MtardRecipe(VisionRecipe):
    model: MtardModelCfg = Field(default_factory=MtardModelCfg)
    train: MtardTrainCfg = Field(default_factory=MtardTrainCfg)


def balance_weights(w_nat: float, r_adv: float, r_nat: float, lam: float) -> float:
    """One Normalization Loss Balance update of w_nat (w_adv = 1 − w_nat)."""
    return w_nat - lam * (w_nat - r_nat / (r_adv + r_nat))


def balance_temperatures(
    t_adv: float, t_nat: float, h_adv: float, h_nat: float, lam: float, lo: float, hi: float
) -> tuple[float, float]:
    """One Entropy-Based Balance update of (τ_adv, τ_nat) from the teachers' mean p·log p (each ≤ 0).

    ``sign(H_adv/H_nat − 1)`` equals ``sign(H_nat − H_adv)`` whenever both are negative; the difference
    form is also defined when a saturated teacher's H is 0 (its temperature then rises, the other's falls;
    both saturated: no change). A non-finite H leaves the temperatures as they are."""
    if not (math.isfinite(h_adv) and math.isfinite(h_nat)):
        return t_adv, t_nat
    sign = lambda v: (v > 0) - (v < 0)  # noqa: E731
    t_adv = t_adv - lam * sign(h_nat - h_adv)
    t_nat = t_nat - lam * sign(h_adv - h_nat)
    return min(max(t_adv, lo), hi), min(max(t_nat, lo), hi)


def entropy_rate(temp_lr: float, meant_steps: int | None, total_steps: int | None) -> float:
    """λ_τ per step for a run of ``total_steps`` when ``temp_lr`` is meant for ``meant_steps`` (the same
    travel of τ over the whole run); the rate as given without either (a resource budget calibrating)."""
    return temp_lr * meant_steps / total_steps if meant_steps and total_steps else temp_lr


@kind("vision.mtard", MtardRecipe)
def run(cfg: MtardRecipe, ctx: RunContext) -> None:
    """MTARD: distil a clean teacher (on x) and a robust teacher (on x′) into one student, balanced."""
    data = load_data(ctx, cfg)
    t_nat_model = load_teacher(ctx, cfg.model.clean_teacher, "model.clean_teacher", data)
    t_adv_model = load_teacher(ctx, cfg.model.robust_teacher, "model.robust_teacher", data)
    model = build_model(cfg.model, data).to(ctx.device)
    n, bs, t, attack = len(data.train[0]), cfg.train.batch_size, cfg.train, cfg.train_attack()
    meter = ctx.meter(steps_per_epoch(n, bs))
    opt = ctx.optimizer(model.parameters())
    sched = ctx.scheduler(opt, meter)
    bal = {"w_nat": t.init_nat_weight, "l0_adv": None, "l0_nat": None, "tau_adv": 1.0, "tau_nat": 1.0}
    ctx.track(model=model, optimizer=opt, scheduler=sched, balance=bal)
    for step in ctx.steps(meter):
        xb, yb = train_batch(data, batch_indices(step, n, bs, cfg.seed), cfg.data, ctx.device)
        with ctx.count_flops(), ctx.phase("update"):
            with ctx.autocast():
                with ctx.phase("attack"):
                    x_adv = attack(model, xb, yb)
                with ctx.phase("teacher"), torch.no_grad():
                    logits_t_adv, logits_t_nat = t_adv_model(x_adv), t_nat_model(xb)
                model.train()
                kl_adv = soft_kl(
                    F.softmax(logits_t_adv / bal["tau_adv"], dim=1), model(x_adv), t.kl_reduction
                )
                kl_nat = soft_kl(F.softmax(logits_t_nat / bal["tau_nat"], dim=1), model(xb), t.kl_reduction)
                loss = (1.0 - bal["w_nat"]) * kl_adv + bal["w_nat"] * kl_nat
            ctx.optimizer_step(loss, opt, sched)
        # balance the two teachers for the next step (the scales follow the lr schedule)
        scale = sched.get_last_lr()[0] / t.lr if t.balance_follows_lr else 1.0
        l_adv, l_nat = kl_adv.item(), kl_nat.item()
        if t.entropy_balance:
            temp_lr = entropy_rate(t.temp_lr, t.temp_lr_steps, meter.total_steps)
            h_adv = mean_plogp(logits_t_adv.float(), bal["tau_adv"]).item()
            h_nat = mean_plogp(logits_t_nat.float(), bal["tau_nat"]).item()
            bal["tau_adv"], bal["tau_nat"] = balance_temperatures(
                bal["tau_adv"], bal["tau_nat"], h_adv, h_nat, temp_lr * scale, t.temp_min, t.temp_max
            )
        if bal["l0_adv"] is None:
            bal["l0_adv"], bal["l0_nat"] = max(l_adv, 1e-12), max(l_nat, 1e-12)
        bal["w_nat"] = balance_weights(
            bal["w_nat"], l_adv / bal["l0_adv"], l_nat / bal["l0_nat"], t.weight_lr * scale
        )
        if step % 10 == 0:
            ctx.log_metrics(
                {
                    "loss": loss.item(),
                    "kl_adv": l_adv,
                    "kl_nat": l_nat,
                    "w_nat": bal["w_nat"],
                    "tau_adv": bal["tau_adv"],
                    "tau_nat": bal["tau_nat"],
                    "lr": sched.get_last_lr()[0],
                },
                step=step,
            )
    finish(ctx, cfg, model, data)
