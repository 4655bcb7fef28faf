"""The learned degradation: a GAN that makes LR faces look like an *unpaired* set of real LR faces, usable
as one more degradation source. Two forms (``model.input``):

* ``"bicubic_lr"`` — the seed's form: the generator turns the **bicubically downsampled clean** LR face
  (plus a noise map) into a degraded LR face, a residual on its input; its pixel term is
  ``MSE(G(lr, z), lr)``. The robust SR recipe uses this form (``degrade.gan_input``).
* ``"hr"`` (the kind's default) — high-to-low after Bulat et al. (ECCV 2018): HR face + noise → LR, a
  residual on top of area downsampling; its pixel term is ``MSE(G(hr, z), area_down(hr))``.

Unpaired data: the training faces are split in two halves by the data split. The generator sees HR faces
of one half; the discriminator sees real LR faces made from the other half — either a folder of real LR
images (``target.root``: any size, centre-cropped and resized to the LR side) or, by default, the other
half's faces (8 crops/flips each) degraded once by the ``target.family`` pipeline (``sensor``), standing
in for camera LR faces whose degradation nobody wrote down. The generator's loss is
``adversarial · GAN + pixel · MSE(...)`` (above), the GAN term dominant as in Bulat et al. (their
β = 0.05 on the pixel term).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from poise.batching import batch_indices, steps_per_epoch
from poise.context import RunContext
from poise.errors import UserError
from poise.evaluators import MetricSpec, evaluator
from poise.recipes import BudgetCfg, ModelCfg, Recipe, Section, TrainCfg, kind
from poise.restoration.data import (
    FaceData,
    FaceDataCfg,
    list_images,
    load_faces,
    read_face,
    small_image_threads,
)
from poise.restoration.degradations import FAMILIES, bicubic_down, check_family, generator, quantize, resize
from poise.restoration.losses import discriminator_step, g_loss
from poise.restoration.models import BicubicToDegraded, HighToLow, PatchDiscriminator


class GanModelCfg(ModelCfg):
    name: str = "high_to_low"
    input: Literal["hr", "bicubic_lr"] = Field(
        "hr", description="what the generator degrades: the HR face (high-to-low) or the bicubic clean LR"
    )
    width: int = Field(32, gt=0)
    blocks: int = Field(2, ge=0)
    d_width: int = Field(32, gt=0, description="width of the LR discriminator")


class GanTargetCfg(Section):
    """Where the unpaired real LR faces come from."""

    family: str = Field("sensor", description="pipeline that makes the synthetic real LR faces (no root)")
    root: Path | None = Field(None, description="folder of real LR face images (any size), used instead")
    variants: int = Field(8, gt=0, description="synthetic LR faces made from each HR face of the LR half")

    @field_validator("family")
    @classmethod
    def _known(cls, v: str) -> str:
        return check_family(v)


class GanLossCfg(Section):
    adversarial: float = Field(1.0, ge=0.0)
    pixel: float = Field(0.05, ge=0.0, description="MSE to the area-downsampled HR (keeps the face)")
    adv_loss: Literal["vanilla", "hinge", "lsgan"] = "vanilla"
    d_lr: float | None = Field(None, gt=0.0)


def _gan_train() -> TrainCfg:
    return TrainCfg(
        optimizer="adam", lr=2e-4, batch_size=32, budget=BudgetCfg(steps=600), checkpoint_every=200
    )


class DegradationGanRecipe(Recipe):
    model: GanModelCfg = Field(default_factory=GanModelCfg)
    data: FaceDataCfg = Field(default_factory=FaceDataCfg)
    target: GanTargetCfg = Field(default_factory=GanTargetCfg)
    loss: GanLossCfg = Field(default_factory=GanLossCfg)
    train: TrainCfg = Field(default_factory=_gan_train)


@dataclass
class GanData:
    """HR faces for the generator and real LR faces for the discriminator (unpaired), train and test."""

    faces: FaceData
    hr_train: torch.Tensor  # crop pool
    real_lr_train: torch.Tensor
    real_lr_test: torch.Tensor


def _real_lr(
    cfg: DegradationGanRecipe, faces: FaceData, half: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if cfg.target.root is not None:
        files = list_images(Path(cfg.target.root))
        lr = torch.stack([read_face(f, faces.lr_size, faces.channels) for f in files])
        n_test = max(1, len(lr) // 5)
        if len(lr) - n_test < 1:
            raise UserError(
                "expected at least 2 real LR images (one is kept for evaluation)",
                where=cfg.target.root,
                field="target.root",
            )
        return lr[n_test:], lr[:n_test]
    g = generator(cfg.data.split_seed + 7)
    pool = FaceData(faces.name, half, faces.val, faces.test, faces.scale, faces.hr_size, faces.channels)
    op = FAMILIES[cfg.target.family].build(faces.scale)
    hr = torch.cat([pool.train_batch(torch.arange(len(half)), g) for _ in range(cfg.target.variants)])
    # held-out real LR: the test faces through the same pipeline (distribution only, never paired)
    return op(hr, g, faces.lr_size), op(faces.test, generator(cfg.data.split_seed + 8), faces.lr_size)


def load_gan_data(cfg: DegradationGanRecipe) -> GanData:
    faces = load_faces(cfg.data)
    hr_half, lr_half = faces.train[0::2], faces.train[1::2]
    real_train, real_test = _real_lr(cfg, faces, lr_half)
    return GanData(faces, hr_half.contiguous(), real_train, real_test)


def build_generator(cfg: GanModelCfg, channels: int, scale: int) -> HighToLow | BicubicToDegraded:
    if cfg.input == "bicubic_lr":
        return BicubicToDegraded(channels, cfg.width, cfg.blocks)
    return HighToLow(channels, scale, cfg.width, cfg.blocks)


def generate(
    net: torch.nn.Module, hr: torch.Tensor, scale: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G's LR output, the input it degraded)`` for a batch of HR faces, in either form; the noise map
    has the size of the generator's input."""
    x = bicubic_down(hr, scale) if isinstance(net, BicubicToDegraded) else hr
    z = torch.randn((x.shape[0], 1, *x.shape[2:]), generator=g, device=g.device).to(x.device)
    return net(x, z), x


class LearnedDegradation(torch.nn.Module):
    """A trained degradation generator as an op ``(hr, g, lr) -> lr`` (8-bit output), in either form."""

    def __init__(self, net: HighToLow | BicubicToDegraded, scale: int):
        super().__init__()
        self.net = net
        self.scale = scale

    @property
    def input(self) -> str:
        return "bicubic_lr" if isinstance(self.net, BicubicToDegraded) else "hr"

    @torch.no_grad()
    def forward(self, hr: torch.Tensor, g: torch.Generator, lr: int | None = None) -> torch.Tensor:
        self.net.eval()
        return quantize(generate(self.net, hr, self.scale, g)[0])


def load_learned_degradation(ctx: RunContext, run: Any) -> LearnedDegradation:
    tensors, meta = ctx.load_artifact(run, "model")
    net = build_generator(GanModelCfg(**meta["model"]), meta["channels"], meta["scale"])
    net.load_state_dict(tensors)
    return LearnedDegradation(net.to(ctx.device), meta["scale"]).eval()


@kind("restoration.degradation_gan", DegradationGanRecipe)
def run(cfg: DegradationGanRecipe, ctx: RunContext) -> None:
    """Degradation GAN learned from unpaired LR faces (a shared degradation source), in either form."""
    with small_image_threads(ctx.device, cfg.data.hr_size):
        _run(cfg, ctx)


def _run(cfg: DegradationGanRecipe, ctx: RunContext) -> None:
    data = load_gan_data(cfg)
    faces, dev = data.faces, ctx.device
    gen = build_generator(cfg.model, faces.channels, faces.scale).to(dev)
    disc = PatchDiscriminator(faces.channels, cfg.model.d_width).to(dev)
    n, bs = len(data.hr_train), cfg.train.batch_size
    meter = ctx.meter(steps_per_epoch(n, bs))
    opt = ctx.optimizer(gen.parameters())
    sched = ctx.scheduler(opt, meter)
    d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.loss.d_lr or cfg.train.lr, betas=(0.5, 0.999))
    ctx.track(generator=gen, discriminator=disc, optimizer=opt, d_optimizer=d_opt, scheduler=sched)
    hr_pool = FaceData(
        faces.name, data.hr_train, faces.val, faces.test, faces.scale, faces.hr_size, faces.channels
    )
    for step in ctx.steps(meter):
        g = generator(cfg.seed * 1_000_003 + step)
        hr = hr_pool.train_batch(batch_indices(step, n, bs, cfg.seed), g).to(dev)
        real = data.real_lr_train[torch.randint(0, len(data.real_lr_train), (len(hr),), generator=g)].to(dev)
        gen.train()
        with ctx.count_flops(), ctx.phase("generator"), ctx.autocast():
            fake, src = generate(gen, hr, faces.scale, g)
            adv = g_loss(disc(fake), cfg.loss.adv_loss)
            # the pixel term keeps the face: the clean LR itself (LR form), area-downsampled HR (HR form)
            keep = src if cfg.model.input == "bicubic_lr" else resize(hr, faces.lr_size, "area")
            pix = F.mse_loss(fake, keep)
            loss = cfg.loss.adversarial * adv + cfg.loss.pixel * pix
            ctx.optimizer_step(loss, opt, sched)
        dl = discriminator_step(ctx, disc, d_opt, real, fake, cfg.loss.adv_loss)
        if step % 10 == 0:
            ctx.log_metrics(
                {
                    "g_adv": adv.item(),
                    "g_pixel": pix.item(),
                    "d_loss": dl.item(),
                    "lr": sched.get_last_lr()[0],
                },
                step=step,
            )
    gen.eval()
    ctx.evaluate(LearnedDegradation(gen, faces.scale), data)
    ctx.save_artifact(
        "model",
        gen.state_dict(),
        meta={
            "model": cfg.model.model_dump(),
            "channels": faces.channels,
            "scale": faces.scale,
            "hr_size": faces.hr_size,
            "target": cfg.target.model_dump(mode="json"),
        },
    )


# --------------------------------------------------------------------------- evaluator


def _lr_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Sinkhorn divergence (geomloss, p = 2, blur 0.05) between two sets of LR images, per pixel scale."""
    from geomloss import SamplesLoss

    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    d = fa.shape[1] ** 0.5
    return float(SamplesLoss("sinkhorn", p=2, blur=0.05, scaling=0.9)(fa / d, fb / d))


def _hf(x: torch.Tensor) -> float:
    """High-frequency energy: std of the image minus its 3×3 box blur (noise and sharpness)."""
    blur = F.avg_pool2d(F.pad(x, [1, 1, 1, 1], mode="replicate"), 3, stride=1)
    return float((x - blur).std())


@evaluator(
    "restoration.degradation_realism",
    metrics=[
        MetricSpec(
            "lr_gap_gan", "utility", "min", "Sinkhorn divergence: GAN-degraded test faces vs real LR faces"
        ),
        MetricSpec(
            "lr_gap_bicubic", "utility", "min", "the same for bicubic LR (what the GAN should improve on)"
        ),
        MetricSpec("hf_gap_gan", "utility", "min", "|log| of high-frequency energy of GAN LR / real LR"),
        MetricSpec(
            "hf_gap_bicubic", "utility", "min", "|log| of high-frequency energy of bicubic LR / real LR"
        ),
    ],
)
def degradation_realism(model: LearnedDegradation, data: GanData, ctx: Any) -> dict[str, float]:
    """How close the learned degradation's LR faces are to held-out real LR faces (unpaired)."""
    hr = data.faces.test.to(ctx.device)
    g = generator(4321, ctx.device)
    fake = model(hr, g, data.faces.lr_size).cpu()
    bic = bicubic_down(hr, data.faces.scale).cpu()
    real = data.real_lr_test
    hf_real = _hf(real)
    return {
        "lr_gap_gan": _lr_gap(fake, real),
        "lr_gap_bicubic": _lr_gap(bic, real),
        "hf_gap_gan": abs(math.log(_hf(fake) / hf_real)),
        "hf_gap_bicubic": abs(math.log(_hf(bic) / hf_real)),
    }
