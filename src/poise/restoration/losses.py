"""Training losses of robust SR: the λ interpolation of inputs, the Sinkhorn feature alignment (geomloss)
and the adversarial terms.

The seed's alignment has **two terms**: the features of the clean LR and the features of the degraded
LR are each pulled towards the features of the *interpolated* LR (the training input)::

    L_align = S(f(clean), f(interp)) · [sinkhorn.clean_term] + S(f(degraded), f(interp)) · [sinkhorn.degraded_term]

weighted by ``loss.sinkhorn`` (a recipe field, searched by the sweep space
``spaces/restoration/sr-robust.toml``). Each term is switched by its own field; both on is the seed's
method, one off is an ablation.

Open choices, written down and exposed as recipe fields:

* λ (share of the degraded image in ``λ·degraded + (1 − λ)·clean``) is drawn per sample, uniform on
  ``[low, high]`` by default or Beta(a, b) rescaled to it; ``low = high = 0`` trains on clean LR only,
  ``low = high = 1`` on degraded LR only (the two network baselines).
* Sinkhorn points: ``image`` (default) makes one point per image — its whole feature map, flattened —
  so a term compares the *distribution over the batch* of clean (or degraded) features with that of
  the features of the interpolated inputs; ``location`` makes one point per pixel position (the
  feature vector there) and averages a per-image divergence. Points are divided by √dim so squared
  distances are per-coordinate means and the blur is on a fixed scale.
* Gradients flow through both sides unless ``detach_anchor`` (then the interpolated features are a
  fixed target); the debiased Sinkhorn divergence of geomloss (``SamplesLoss("sinkhorn", p, blur,
  scaling)``) is ≥ 0 and 0 for identical clouds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from poise.recipes import Section

if TYPE_CHECKING:
    from poise.context import RunContext


class MixCfg(Section):
    """How much of the degraded LR enters each training input: ``x = λ·degraded + (1 − λ)·clean``."""

    dist: Literal["uniform", "beta"] = "uniform"
    low: float = Field(0.0, ge=0.0, le=1.0)
    high: float = Field(1.0, ge=0.0, le=1.0)
    beta_a: float = Field(1.0, gt=0.0)
    beta_b: float = Field(1.0, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> MixCfg:
        if self.low > self.high:
            raise ValueError(f"expected low <= high (got low={self.low}, high={self.high})")
        return self


class SinkhornCfg(Section):
    """Entropy-regularised Wasserstein (Sinkhorn divergence) terms between feature clouds: clean ↔
    interpolated and degraded ↔ interpolated (each switchable)."""

    p: Literal[1, 2] = 2
    blur: float = Field(0.05, gt=0.0, description="entropic blur ε^(1/p) of geomloss")
    scaling: float = Field(0.9, gt=0.0, lt=1.0, description="ε-scaling annealing ratio of geomloss")
    points: Literal["image", "location"] = "image"
    clean_term: bool = Field(True, description="term S(f(clean LR), f(interpolated LR))")
    degraded_term: bool = Field(True, description="term S(f(degraded LR), f(interpolated LR))")
    detach_anchor: bool = Field(False, description="no gradient through f(interpolated LR), the shared target")


class LossCfg(Section):
    """Weights of the loss terms; 0 switches a term off (and skips its computation)."""

    pixel: float = Field(1.0, ge=0.0, description="L1 between SR output and HR")
    adversarial: float = Field(0.005, ge=0.0, description="generator term of a discriminator on SR outputs")
    adv_loss: Literal["vanilla", "hinge", "lsgan"] = "vanilla"
    d_lr: float | None = Field(None, gt=0.0, description="discriminator learning rate (default: train.lr)")
    sinkhorn: float = Field(1.0, ge=0.0, description="Sinkhorn feature alignment")

    @model_validator(mode="after")
    def _something(self) -> LossCfg:
        if self.pixel == 0 and self.adversarial == 0 and self.sinkhorn == 0:
            raise ValueError("every loss weight is 0; expected at least one positive weight")
        return self


def sample_lambda(n: int, cfg: MixCfg, g: torch.Generator) -> torch.Tensor:
    """λ per sample, shape ``[n]`` (on the CPU), drawn from ``g``."""
    if cfg.dist == "beta":
        seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device).item())
        u = torch.from_numpy(np.random.default_rng(seed).beta(cfg.beta_a, cfg.beta_b, n)).float()
    else:
        u = torch.rand(n, generator=g, device=g.device).cpu()
    return cfg.low + (cfg.high - cfg.low) * u


class SinkhornAlign:
    """Sinkhorn divergence between a feature cloud and the anchor cloud (the interpolated inputs'), geomloss."""

    def __init__(self, cfg: SinkhornCfg):
        from geomloss import SamplesLoss

        self.cfg = cfg
        self.loss = SamplesLoss(
            "sinkhorn", p=cfg.p, blur=cfg.blur, scaling=cfg.scaling, debias=True, backend="tensorized"
        )

    def points(self, f: torch.Tensor) -> torch.Tensor:
        f = f.float()
        if self.cfg.points == "image":
            flat = f.flatten(1)
            return (flat / flat.shape[1] ** 0.5).contiguous()
        pts = f.flatten(2).transpose(1, 2)  # [B, h*w, C]
        return (pts / pts.shape[2] ** 0.5).contiguous()  # geomloss views its inputs

    def __call__(self, f: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        if self.cfg.detach_anchor:
            anchor = anchor.detach()
        value = self.loss(self.points(f), self.points(anchor))
        return value.mean()

    def terms(
        self, f_clean: torch.Tensor | None, f_degraded: torch.Tensor | None, f_interp: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The switched-on alignment terms, by name (``sinkhorn_clean``, ``sinkhorn_degraded``)."""
        out: dict[str, torch.Tensor] = {}
        if self.cfg.clean_term and f_clean is not None:
            out["sinkhorn_clean"] = self(f_clean, f_interp)
        if self.cfg.degraded_term and f_degraded is not None:
            out["sinkhorn_degraded"] = self(f_degraded, f_interp)
        return out


def d_loss(real: torch.Tensor, fake: torch.Tensor, kind: str) -> torch.Tensor:
    """Discriminator loss on real and fake logits."""
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "lsgan":
        return ((real - 1) ** 2).mean() + (fake**2).mean()
    return F.binary_cross_entropy_with_logits(
        real, torch.ones_like(real)
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


def discriminator_step(ctx: RunContext, disc: torch.nn.Module, opt: torch.optim.Optimizer, real: torch.Tensor,
                       fake: torch.Tensor, kind: str) -> torch.Tensor:
    """One discriminator update on real and (detached) fake images, timed as phase ``discriminator``; its
    own plain step (no gradient clipping or schedule, unlike ``ctx.optimizer_step``). Returns the loss."""
    with ctx.phase("discriminator"):
        with ctx.autocast():
            dl = d_loss(disc(real), disc(fake.detach()), kind)
        opt.zero_grad(set_to_none=True)
        dl.backward()
        opt.step()
    return dl


def g_loss(fake: torch.Tensor, kind: str) -> torch.Tensor:
    """Generator loss on the logits of its outputs (non-saturating for ``vanilla``)."""
    if kind == "hinge":
        return -fake.mean()
    if kind == "lsgan":
        return ((fake - 1) ** 2).mean()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
