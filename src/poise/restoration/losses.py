"""Training losses of robust SR: the λ interpolation of inputs, the Sinkhorn feature alignment (geomloss)
and the adversarial terms.

Open choices, written down and exposed as recipe fields:

* λ (share of the degraded image in ``λ·degraded + (1 − λ)·clean``) is drawn per sample, uniform on
  ``[low, high]`` by default or Beta(a, b) rescaled to it; ``low = high = 0`` trains on clean LR only,
  ``low = high = 1`` on degraded LR only (the two network baselines).
* Sinkhorn points: ``image`` (default) makes one point per image — its whole feature map, flattened —
  so the term compares the *distribution over the batch* of clean features with that of the features
  of the interpolated (or purely degraded, ``against = "degraded"``) inputs; ``location`` makes one
  point per pixel position (the feature vector there) and averages a per-image divergence. Points are
  divided by √dim so squared distances are per-coordinate means and the blur is on a fixed scale.
* Gradients flow through both sides unless ``detach_clean``; the debiased Sinkhorn divergence of
  geomloss (``SamplesLoss("sinkhorn", p, blur, scaling)``) is ≥ 0 and 0 for identical clouds.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from poise.recipes import Section


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
    """Entropy-regularised Wasserstein (Sinkhorn divergence) between clean and degraded feature clouds."""

    p: Literal[1, 2] = 2
    blur: float = Field(0.05, gt=0.0, description="entropic blur ε^(1/p) of geomloss")
    scaling: float = Field(0.9, gt=0.0, lt=1.0, description="ε-scaling annealing ratio of geomloss")
    points: Literal["image", "location"] = "image"
    against: Literal["mixed", "degraded"] = Field(
        "mixed",
        description="align clean features with those of the "
        "training (interpolated) input or the fully degraded one",
    )
    detach_clean: bool = False


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
    """Sinkhorn divergence between the feature clouds of clean and degraded inputs (geomloss)."""

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

    def __call__(self, f_clean: torch.Tensor, f_degraded: torch.Tensor) -> torch.Tensor:
        if self.cfg.detach_clean:
            f_clean = f_clean.detach()
        value = self.loss(self.points(f_clean), self.points(f_degraded))
        return value.mean()


def d_loss(real: torch.Tensor, fake: torch.Tensor, kind: str) -> torch.Tensor:
    """Discriminator loss on real and fake logits."""
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "lsgan":
        return ((real - 1) ** 2).mean() + (fake**2).mean()
    return F.binary_cross_entropy_with_logits(
        real, torch.ones_like(real)
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


def g_loss(fake: torch.Tensor, kind: str) -> torch.Tensor:
    """Generator loss on the logits of its outputs (non-saturating for ``vanilla``)."""
    if kind == "hinge":
        return -fake.mean()
    if kind == "lsgan":
        return ((fake - 1) ** 2).mean()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
