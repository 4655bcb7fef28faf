"""Image quality: PSNR on the Y channel with ``scale`` border pixels cropped, and SSIM (scikit-image).

These are the usual SR conventions: RGB is turned into BT.601 luma Y (the ``rgb2ycbcr`` of MATLAB,
``16 + 65.481 R + 128.553 G + 24.966 B`` on [0, 1] inputs, divided by 255); gray images are their own
Y. PSNR and SSIM are computed per image with ``data_range = 1`` and averaged over images. SSIM uses
scikit-image's Gaussian-weighted window (sigma 1.5, population covariance, as Wang et al. 2004) when the
cropped image has at least 11 pixels a side, else a uniform window of the largest odd size that fits.
:func:`psnr_y_torch` is the differentiable twin the PGD attack descends (cross-checked in the tests).
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

_Y = (65.481, 128.553, 24.966)


def to_y(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, 1, H, W]`` luma in [0, 1] (identity for gray)."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_Y, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (16.0 + (x * w).sum(1, keepdim=True)) / 255.0


def crop_border(x: torch.Tensor, border: int) -> torch.Tensor:
    return x[..., border:-border, border:-border] if border > 0 else x


def psnr_y_torch(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Per-image PSNR (dB) on Y with ``scale`` border pixels cropped; differentiable in ``sr``."""
    d = crop_border(to_y(sr) - to_y(hr), scale)
    mse = d.pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    side = min(a.shape)
    if side >= 11:
        return float(
            structural_similarity(
                a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
        )
    win = side if side % 2 else side - 1
    return float(structural_similarity(a, b, data_range=1.0, win_size=max(win, 3)))


def psnr_ssim(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> tuple[float, float]:
    """Mean PSNR-Y (dB) and mean SSIM-Y over a batch, through scikit-image; ``sr`` is clamped to [0, 1]."""
    a = crop_border(to_y(sr.detach().clamp(0, 1)), scale).squeeze(1).double().cpu().numpy()
    b = crop_border(to_y(hr.detach()), scale).squeeze(1).double().cpu().numpy()
    psnrs = [peak_signal_noise_ratio(y, x, data_range=1.0) for x, y in zip(a, b, strict=True)]
    ssims = [_ssim(x, y) for x, y in zip(a, b, strict=True)]
    return float(np.mean(psnrs)), float(np.mean(ssims))
