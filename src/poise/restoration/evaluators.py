"""SR evaluators: PSNR-Y / SSIM on clean LR (utility) and on sample photographs (utility, non-faces),
under each held-out degradation family and under PGD (robustness), and feature smoothness.

Every degraded test set is made with a fixed seed, so all runs are scored on the very same LR images.
Clean LR is antialiased bicubic downsampling of the HR test faces, 8-bit. A tuning run
(``eval_split = "val"``) scores the validation faces instead, so the test faces are read only for final
numbers (``restoration.photos`` likewise scores validation patches from the middle band of each sample
photograph, test patches from its top and bottom bands).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from poise.evaluators import MetricSpec, evaluator
from poise.restoration.attacks import pgd_lr
from poise.restoration.data import FaceData
from poise.restoration.degradations import HELD_OUT_FAMILIES, bicubic_down, check_family, degrade, generator
from poise.restoration.metrics import psnr_ssim


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_size: int = Field(256, gt=0)
    split: Literal["val", "test"] = Field("test", description="faces scored: validation (tuning) or test")


def faces(data: FaceData, split: str = "test") -> torch.Tensor:
    """The HR faces a split is scored on (validation faces for tuning runs, else the test faces)."""
    if split != "val":
        return data.test
    if not len(data.val):
        from poise.errors import UserError

        raise UserError("a tuning run scores the validation faces; expected data.val_frac > 0", field="data.val_frac")
    return data.val


class FamilyParams(_Params):
    families: list[str] = Field(default_factory=lambda: list(HELD_OUT_FAMILIES), min_length=1)
    seed: int = Field(1234, description="seed of the degraded test sets (the same for every run)")

    @field_validator("families")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            check_family(name)
        return v


class PgdParams(_Params):
    eps: float = Field(4 / 255, gt=0.0, le=1.0, description="L-inf radius on the LR input, [0, 1] units")
    steps: int = Field(10, gt=0)
    alpha: float | None = Field(None, gt=0.0, description="step size (default eps / 4)")
    random_start: bool = True
    seed: int = 1234


@torch.no_grad()
def super_resolve(
    model: torch.nn.Module, lr: torch.Tensor, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    model.eval()
    out = [model(lr[i : i + batch_size].to(device)).clamp(0, 1).cpu() for i in range(0, len(lr), batch_size)]
    return torch.cat(out)


def degraded_test(data: FaceData, family: str, seed: int, index: int = 0, split: str = "test") -> torch.Tensor:
    """The test (or validation) faces through ``family``: the same LR images for every run with the same seed."""
    return degrade(faces(data, split), family, data.scale, generator(seed + 1009 * index))


def _score(
    model: Any, lr: torch.Tensor, hr: torch.Tensor, scale: int, ctx: Any, bs: int
) -> tuple[float, float]:
    return psnr_ssim(super_resolve(model, lr, ctx.device, bs), hr, scale)


@evaluator(
    "restoration.clean",
    params=_Params,
    metrics=[
        MetricSpec("psnr_y", "utility", "max", "PSNR (dB) on Y, border cropped, clean bicubic LR test faces"),
        MetricSpec("ssim", "utility", "max", "SSIM on Y, clean bicubic LR test faces"),
    ],
)
def clean(model: Any, data: FaceData, ctx: Any, *, batch_size: int, split: str = "test") -> dict[str, float]:
    """PSNR-Y and SSIM on the clean (bicubic-downsampled) LR test faces."""
    hr = faces(data, split)
    p, s = _score(model, bicubic_down(hr, data.scale), hr, data.scale, ctx, batch_size)
    return {"psnr_y": p, "ssim": s}


@evaluator(
    "restoration.photos",
    params=_Params,
    metrics=[
        MetricSpec(
            "psnr_y_photo", "utility", "max", "PSNR-Y on non-face patches of scikit-image sample photos"
        ),
        MetricSpec(
            "ssim_photo", "utility", "max", "SSIM-Y on non-face patches of scikit-image sample photos"
        ),
    ],
)
def photos(model: Any, data: FaceData, ctx: Any, *, batch_size: int, split: str = "test") -> dict[str, float]:
    """PSNR-Y and SSIM on clean LR patches of scikit-image's sample photographs (a non-face check); a tuning
    run scores patches disjoint from the test ones (:func:`poise.restoration.data.photo_patch_origins`)."""
    hr = data.photos(split)
    p, s = _score(model, bicubic_down(hr, data.scale), hr, data.scale, ctx, batch_size)
    return {"psnr_y_photo": p, "ssim_photo": s}


@evaluator(
    "restoration.held_out",
    params=FamilyParams,
    metrics=[
        MetricSpec(
            "psnr_y_held_out", "robustness", "max", "mean PSNR-Y over the held-out degradation families"
        ),
        MetricSpec("ssim_held_out", "robustness", "max", "mean SSIM over the held-out degradation families"),
        MetricSpec("psnr_y_overall", "robustness", "max",
                   "mean of the clean PSNR-Y and the held-out mean: quality over clean and unseen degradations"),
        MetricSpec("psnr_y_*", "robustness", "max", "PSNR-Y on test faces degraded by one family"),
        MetricSpec("ssim_*", "robustness", "max", "SSIM on test faces degraded by one family"),
    ],
)
def held_out(
    model: Any, data: FaceData, ctx: Any, *, families: list[str], seed: int, batch_size: int, split: str = "test"
) -> dict[str, float]:
    """PSNR-Y and SSIM on the test faces degraded by each held-out family, and their means; ``psnr_y_overall``
    weighs clean faces as much as all held-out degradations together, a selection criterion that rewards
    neither ignoring degradations nor giving up clean quality (a model that learns nothing, bicubic, is
    the floor of both)."""
    out: dict[str, float] = {}
    hr = faces(data, split)
    for i, fam in enumerate(families):
        p, s = _score(model, degraded_test(data, fam, seed, i, split), hr, data.scale, ctx, batch_size)
        out[f"psnr_y_{fam}"], out[f"ssim_{fam}"] = p, s
    out["psnr_y_held_out"] = float(np.mean([out[f"psnr_y_{f}"] for f in families]))
    out["ssim_held_out"] = float(np.mean([out[f"ssim_{f}"] for f in families]))
    clean_psnr, _ = _score(model, bicubic_down(hr, data.scale), hr, data.scale, ctx, batch_size)
    out["psnr_y_overall"] = float((clean_psnr + out["psnr_y_held_out"]) / 2)
    return out


@evaluator(
    "restoration.pgd",
    params=PgdParams,
    metrics=[
        MetricSpec("psnr_y_pgd", "robustness", "max", "PSNR-Y under a PGD attack on the clean LR input"),
        MetricSpec("ssim_pgd", "robustness", "max", "SSIM under a PGD attack on the clean LR input"),
    ],
)
def pgd(
    model: Any,
    data: FaceData,
    ctx: Any,
    *,
    eps: float,
    steps: int,
    alpha: float | None,
    random_start: bool,
    seed: int,
    batch_size: int,
    split: str = "test",
) -> dict[str, float]:
    """PSNR-Y and SSIM when an L-inf PGD perturbation of the clean LR input minimises the output's PSNR."""
    hr = faces(data, split)
    lr = bicubic_down(hr, data.scale)
    g = generator(seed, ctx.device)
    advs = []
    for i in range(0, len(lr), batch_size):
        advs.append(
            pgd_lr(
                model,
                lr[i : i + batch_size].to(ctx.device),
                hr[i : i + batch_size].to(ctx.device),
                scale=data.scale,
                eps=eps,
                steps=steps,
                alpha=alpha or eps / 4,
                random_start=random_start,
                g=g,
            ).cpu()
        )
    p, s = _score(model, torch.cat(advs), hr, data.scale, ctx, batch_size)
    return {"psnr_y_pgd": p, "ssim_pgd": s}


@torch.no_grad()
def smoothness_ratios(
    model: Any, clean_lr: torch.Tensor, degraded_lr: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per image ``‖f(x′) − f(x)‖ / ‖x′ − x‖`` and the same with both norms relative
    (``‖f(x′) − f(x)‖/‖f(x)‖ ÷ ‖x′ − x‖/‖x‖``); None for a model without features."""
    x, xd = clean_lr.to(device), degraded_lr.to(device)
    f = model.features(x)
    if f is None:
        return None
    fd = model.features(xd)
    df = (fd - f).flatten(1).norm(dim=1)
    dx = (xd - x).flatten(1).norm(dim=1).clamp_min(1e-8)
    keep = (xd - x).flatten(1).abs().amax(1) > 0
    rel = (df / f.flatten(1).norm(dim=1).clamp_min(1e-8)) / (dx / x.flatten(1).norm(dim=1).clamp_min(1e-8))
    return (df / dx)[keep].cpu(), rel[keep].cpu()


@evaluator(
    "restoration.smoothness",
    params=FamilyParams,
    metrics=[
        MetricSpec(
            "feature_smoothness", "robustness", "min", "mean ||f(x')-f(x)|| / ||x'-x|| over degraded x'"
        ),
        MetricSpec(
            "feature_smoothness_rel",
            "robustness",
            "min",
            "the same with relative norms (insensitive to the overall feature scale)",
        ),
    ],
)
def smoothness(
    model: Any, data: FaceData, ctx: Any, *, families: list[str], seed: int, batch_size: int, split: str = "test"
) -> dict[str, float]:
    """Feature smoothness of the extractor between clean LR and LR degraded by each family (no metric for
    models without features, such as bicubic)."""
    model.eval()
    clean_lr = bicubic_down(faces(data, split), data.scale)
    abs_r, rel_r = [], []
    for i, fam in enumerate(families):
        r = smoothness_ratios(model, clean_lr, degraded_test(data, fam, seed, i, split), ctx.device)
        if r is None:
            return {}
        abs_r.append(r[0])
        rel_r.append(r[1])
    return {
        "feature_smoothness": float(torch.cat(abs_r).mean()),
        "feature_smoothness_rel": float(torch.cat(rel_r).mean()),
    }
