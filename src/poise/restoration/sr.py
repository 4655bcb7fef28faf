"""Robust face SR with smooth features, its baselines and bicubic upsampling (recipe kinds).

``restoration.sr`` trains a feature extractor f and an SR module g on inputs ``x = λ·degraded + (1 − λ)·
clean`` (λ per sample, :class:`~poise.restoration.losses.MixCfg`), where the clean LR is the bicubic
downsampled HR face and the degraded LR comes from the training degradation families and the learned
degradation GAN (trained once, shared through ``ctx.dependency``). By default the GAN has the seed's
form — it turns the *bicubic clean LR* into a degraded LR (``degrade.gan_input = "bicubic_lr"``); the
high-to-low form of Bulat et al. (HR → degraded LR, ``"hr"``) is offered beside it.

Loss = ``loss.pixel`` · L1(g(f(x)), hr) + ``loss.adversarial`` · (a PatchGAN on SR outputs vs HR faces)
+ ``loss.sinkhorn`` · (S(f(clean), f(x)) + S(f(degraded), f(x))): the seed's two Sinkhorn terms pull the
features of the clean LR and of the degraded LR towards those of the interpolated LR;
``sinkhorn.clean_term`` and ``sinkhorn.degraded_term`` switch each one (see
:mod:`poise.restoration.losses`). Every weight can be 0. The same kind gives the baselines:

=====================  ==================================================================
variant                recipe fields
=====================  ==================================================================
clean-trained          ``mix.high = 0`` (clean LR only), pixel loss only
degraded-trained       ``mix.low = mix.high = 1`` (degraded LR only), pixel loss only
robust                 ``mix`` uniform on [0, 1], pixel + adversarial + both Sinkhorn terms
robust w/o Sinkhorn    the robust recipe with ``loss.sinkhorn = 0`` (the ablation)
robust (… term only)   one of the two Sinkhorn terms switched off (ablations)
=====================  ==================================================================

``model.global_skip`` adds the bicubic upsample of the input to the output (residual learning, the model
starting exactly as bicubic). The shipped recipes keep it off, as in the paper (the output depends on
the input only through the aligned features); their ``[quick]`` tables switch it on and train 300 steps,
so the tour's small models pass bicubic on clean faces (without it, 30 steps left every one below).

``restoration.bicubic`` evaluates bicubic upsampling with the same evaluators (nothing to train).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from poise.batching import batch_indices, steps_per_epoch
from poise.context import RunContext
from poise.recipes import BudgetCfg, ModelCfg, Recipe, Section, TrainCfg, kind
from poise.restoration.data import FaceDataCfg, load_faces, small_image_threads
from poise.restoration.degradation_gan import load_learned_degradation
from poise.restoration.degradations import (
    FAMILIES,
    TRAIN_FAMILIES,
    Mixture,
    Op,
    bicubic_down,
    build_family,
    check_family,
    generator,
)
from poise.restoration.losses import (
    LossCfg,
    MixCfg,
    SinkhornAlign,
    SinkhornCfg,
    discriminator_step,
    g_loss,
    sample_lambda,
)
from poise.restoration.models import Bicubic, PatchDiscriminator, SRModelCfg, build_sr


class DegradeCfg(Section):
    """Where the degraded training LR comes from: named families plus, optionally, the learned GAN."""

    families: list[str] = Field(default_factory=lambda: list(TRAIN_FAMILIES))
    gan: str | None = Field(
        "degradation-gan.toml", description="recipe of the learned degradation (None: no GAN)"
    )
    gan_weight: float = Field(1.0, ge=0.0, description="how often the GAN is picked, relative to one family")
    gan_input: Literal["bicubic_lr", "hr"] = Field(
        "bicubic_lr",
        description="what the degradation GAN degrades: the bicubic clean LR (the seed's form) or the HR "
        "face (high-to-low, Bulat et al.); sets model.input of the GAN recipe",
    )

    @field_validator("families")
    @classmethod
    def _train_side(cls, v: list[str]) -> list[str]:
        for name in v:
            check_family(name)
            if FAMILIES[name].split == "held_out":
                train = ", ".join(n for n, f in FAMILIES.items() if f.split == "train")
                raise ValueError(f"degradation {name!r} is held out for evaluation; expected one of: {train}")
        return v


def _sr_train() -> TrainCfg:
    return TrainCfg(
        optimizer="adam", lr=2e-3, batch_size=32, budget=BudgetCfg(steps=1500), checkpoint_every=250
    )


class SRRecipe(Recipe):
    model: SRModelCfg = Field(default_factory=SRModelCfg)
    data: FaceDataCfg = Field(default_factory=FaceDataCfg)
    degrade: DegradeCfg = Field(default_factory=DegradeCfg)
    mix: MixCfg = Field(default_factory=MixCfg)
    loss: LossCfg = Field(default_factory=LossCfg)
    sinkhorn: SinkhornCfg = Field(default_factory=SinkhornCfg)
    d_width: int = Field(32, gt=0, description="width of the discriminator on SR outputs")
    train: TrainCfg = Field(default_factory=_sr_train)

    @model_validator(mode="after")
    def _some_term(self) -> SRRecipe:
        if self.loss.sinkhorn > 0 and not (self.sinkhorn.clean_term or self.sinkhorn.degraded_term):
            raise ValueError(
                "loss.sinkhorn > 0 but sinkhorn.clean_term and sinkhorn.degraded_term are both false; "
                "expected at least one term on (or loss.sinkhorn = 0)"
            )
        return self


def variant(cfg: SRRecipe) -> str:
    """The method a recipe trains, read from its fields (reports and the benchmark group by it)."""
    if cfg.mix.high == 0:
        return "clean-trained"
    if cfg.loss.sinkhorn > 0:
        if not cfg.sinkhorn.degraded_term:
            return "robust (clean term only)"
        if not cfg.sinkhorn.clean_term:
            return "robust (degraded term only)"
        return "robust"
    if cfg.mix.low == 1:
        return "degraded-trained"
    return "robust w/o Sinkhorn"


def gan_overrides(data: FaceDataCfg, gan_input: str = "hr") -> dict[str, Any]:
    """The degradation GAN must see the same faces at the same geometry as the SR run, in its form."""
    out: dict[str, Any] = {"model.input": gan_input} | {
        f"data.{k}": v
        for k, v in data.model_dump(mode="json").items()
        if k not in ("root", "eval_limit") and v is not None
    }
    if data.root is not None:
        out["data.root"] = str(data.root)
    return out


def degradation_source(cfg: SRRecipe, ctx: RunContext) -> Op | None:
    """Mixture of the training families and the learned GAN (None when training sees no degraded LR)."""
    if cfg.mix.high == 0:
        return None
    sources: list[Op] = [build_family(f, cfg.data.scale) for f in cfg.degrade.families]
    weights = [1.0] * len(sources)
    if cfg.degrade.gan and cfg.degrade.gan_weight > 0:
        over = gan_overrides(cfg.data, cfg.degrade.gan_input)
        run = ctx.dependency(cfg.degrade.gan, field="degrade.gan", overrides=over)
        sources.append(load_learned_degradation(ctx, run))
        weights.append(cfg.degrade.gan_weight)
    if not sources:
        from poise.errors import UserError

        raise UserError(
            "mix.high > 0 needs degraded inputs; expected degrade.families or degrade.gan",
            where=cfg.source or "recipe",
            field="degrade.families",
        )
    return Mixture(sources, weights)


@kind("restoration.sr", SRRecipe)
def run(cfg: SRRecipe, ctx: RunContext) -> None:
    """Face SR with smooth features: λ-interpolated inputs, pixel + adversarial + Sinkhorn losses."""
    with small_image_threads(ctx.device, cfg.data.hr_size):
        _run(cfg, ctx)


def _run(cfg: SRRecipe, ctx: RunContext) -> None:
    data = load_faces(cfg.data)
    dev, scale, lr_side = ctx.device, data.scale, data.lr_size
    model = build_sr(cfg.model, data.channels, scale).to(dev)
    source = degradation_source(cfg, ctx)
    align = SinkhornAlign(cfg.sinkhorn) if cfg.loss.sinkhorn > 0 else None
    disc = PatchDiscriminator(data.channels, cfg.d_width).to(dev) if cfg.loss.adversarial > 0 else None
    n, bs = len(data.train), cfg.train.batch_size
    meter = ctx.meter(steps_per_epoch(n, bs))
    opt = ctx.optimizer(model.parameters())
    sched = ctx.scheduler(opt, meter)
    tracked: dict[str, Any] = {"model": model, "optimizer": opt, "scheduler": sched}
    if disc is not None:
        d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.loss.d_lr or cfg.train.lr, betas=(0.5, 0.999))
        tracked |= {"discriminator": disc, "d_optimizer": d_opt}
    ctx.track(**tracked)
    for step in ctx.steps(meter):
        # data: a step-indexed batch of HR crops, its clean LR and (seeded per step) its degraded LR
        g_data = generator(cfg.seed * 1_000_003 + step)
        g_deg = generator(cfg.seed * 1_000_003 + step + 7_777_777, dev)
        hr = data.train_batch(batch_indices(step, n, bs, cfg.seed), g_data).to(dev)
        clean = bicubic_down(hr, scale)
        with ctx.phase("degradation"):
            degraded = source(hr, g_deg, lr_side) if source is not None else clean
        lam = sample_lambda(len(hr), cfg.mix, g_data).to(dev)[:, None, None, None]
        x = lam * degraded + (1 - lam) * clean
        model.train()
        logs: dict[str, float] = {}
        with ctx.count_flops(), ctx.phase("update"), ctx.autocast():
            f = model.features(x)
            sr = model.upsample(f, x)
            loss = torch.zeros((), device=dev)
            if cfg.loss.pixel > 0:
                pix = F.l1_loss(sr, hr)
                loss = loss + cfg.loss.pixel * pix
                logs["pixel"] = pix.item()
            if disc is not None:
                adv = g_loss(disc(sr), cfg.loss.adv_loss)
                loss = loss + cfg.loss.adversarial * adv
                logs["adv"] = adv.item()
            if align is not None:
                # the seed's two terms: f(clean) -> f(interp) and f(degraded) -> f(interp)
                want = [t for t, on in ((clean, cfg.sinkhorn.clean_term), (degraded, cfg.sinkhorn.degraded_term)) if on]
                feats = model.features(torch.cat(want)).split(len(hr)) if want else []
                it = iter(feats)
                f_clean = next(it) if cfg.sinkhorn.clean_term else None
                f_deg = next(it) if cfg.sinkhorn.degraded_term else None
                terms = align.terms(f_clean, f_deg, f)
                sk = sum(terms.values(), torch.zeros((), device=dev))
                loss = loss + cfg.loss.sinkhorn * sk
                logs["sinkhorn"] = sk.item()
                logs |= {k: v.item() for k, v in terms.items()}
            ctx.optimizer_step(loss, opt, sched)
        if disc is not None:
            dl = discriminator_step(ctx, disc, d_opt, hr, sr, cfg.loss.adv_loss)
            logs["d_loss"] = dl.item()
        if step % 10 == 0:
            ctx.log_metrics({"loss": loss.item(), **logs, "lr": sched.get_last_lr()[0]}, step=step)
    model.eval()
    ctx.evaluate(model, data)
    ctx.save_artifact(
        "model",
        model.state_dict(),
        meta={
            "variant": variant(cfg),
            "model": cfg.model.model_dump(),
            "data": cfg.data.model_dump(mode="json"),
            "channels": data.channels,
            "scale": scale,
        },
    )


def load_sr_model(store: Any, run_id: str, device: str = "cpu") -> torch.nn.Module:
    """Rebuild a trained SR model from its artifact (safetensors and the config in its metadata)."""
    tensors, meta = store.load_tensors(run_id, "model")
    model = build_sr(SRModelCfg(**meta["model"]), meta["channels"], meta["scale"])
    model.load_state_dict(tensors)
    return model.to(device).eval()


class BicubicRecipe(Recipe):
    model: ModelCfg = Field(default_factory=lambda: ModelCfg(name="bicubic"))
    data: FaceDataCfg = Field(default_factory=FaceDataCfg)


@kind("restoration.bicubic", BicubicRecipe)
def run_bicubic(cfg: BicubicRecipe, ctx: RunContext) -> None:
    """Bicubic upsampling of the LR faces, evaluated like the trained models (the no-learning floor)."""
    with small_image_threads(ctx.device, cfg.data.hr_size):
        data = load_faces(cfg.data)
        ctx.evaluate(Bicubic(data.scale).to(ctx.device), data)
