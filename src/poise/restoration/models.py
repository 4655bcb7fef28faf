"""Networks: the smooth-feature SR model (feature extractor + SR module), discriminators, the two
generator forms of the degradation GAN (HR → LR, and bicubic clean LR → degraded LR), and bicubic
upsampling wrapped as a model.

Sizes are open in the paper; the defaults suit 24×24 faces on a CPU (EDSR-style residual blocks without
batch norm, PixelShuffle upsampling, ~50k parameters at width 32). Every SR model exposes
``features(x)`` (what the Sinkhorn term aligns and the smoothness evaluator measures; None for bicubic)
and ``forward(x)`` (LR → HR).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from poise.recipes import ModelCfg
from poise.restoration.degradations import bicubic_up, resize


class SRModelCfg(ModelCfg):
    """Smooth-feature SR network: a feature extractor at LR resolution, then an SR module that upsamples."""

    name: str = "smooth_sr"
    width: int = Field(32, gt=0, description="channels of every hidden layer")
    feature_blocks: int = Field(3, ge=0, description="residual blocks in the feature extractor")
    sr_blocks: int = Field(2, ge=0, description="residual blocks in the SR module before upsampling")
    global_skip: bool = Field(
        False,
        description="add the bicubic-upsampled input to the output, the SR module's last layer starting at 0 "
        "(residual learning: the model starts as bicubic); off: the output depends on the input only "
        "through the aligned features, as in the paper",
    )


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FeatureExtractor(nn.Module):
    """LR image → feature map ``[B, width, h, w]`` at LR resolution."""

    def __init__(self, channels: int, width: int, blocks: int):
        super().__init__()
        self.head = nn.Conv2d(channels, width, 3, padding=1)
        self.body = nn.Sequential(
            *[ResBlock(width) for _ in range(blocks)], nn.Conv2d(width, width, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return h + self.body(h)


def _upsampler(width: int, scale: int) -> list[nn.Module]:
    if scale == 3:
        return [nn.Conv2d(width, 9 * width, 3, padding=1), nn.PixelShuffle(3), nn.ReLU(inplace=True)]
    layers: list[nn.Module] = []
    for _ in range(int(math.log2(scale))):
        layers += [nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
    return layers


class SRModule(nn.Module):
    """Feature map → HR image: residual blocks, PixelShuffle upsampling, a last convolution."""

    def __init__(self, channels: int, width: int, blocks: int, scale: int):
        super().__init__()
        self.body = nn.Sequential(*[ResBlock(width) for _ in range(blocks)])
        self.up = nn.Sequential(*_upsampler(width, scale), nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.up(f + self.body(f))


class SmoothSR(nn.Module):
    """Feature extractor + SR module (the robust model and both network baselines share it)."""

    def __init__(
        self,
        channels: int,
        scale: int,
        width: int = 32,
        feature_blocks: int = 3,
        sr_blocks: int = 2,
        global_skip: bool = False,
    ):
        super().__init__()
        self.scale = scale
        self.global_skip = global_skip
        self.extractor = FeatureExtractor(channels, width, feature_blocks)
        self.sr = SRModule(channels, width, sr_blocks, scale)
        if global_skip:  # residual learning: start exactly at the bicubic upsample
            nn.init.zeros_(self.sr.up[-1].weight)
            nn.init.zeros_(self.sr.up[-1].bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x)

    def upsample(self, f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = self.sr(f)
        return y + bicubic_up(x, self.scale) if self.global_skip else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.features(x), x)


class Bicubic(nn.Module):
    """Bicubic upsampling as a model (no features, no weights)."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def features(self, x: torch.Tensor) -> None:
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_up(x, self.scale)


def build_sr(cfg: SRModelCfg, channels: int, scale: int) -> SmoothSR:
    return SmoothSR(channels, scale, cfg.width, cfg.feature_blocks, cfg.sr_blocks, cfg.global_skip)


class PatchDiscriminator(nn.Module):
    """Spectral-normalised PatchGAN: image → map of real/fake logits (any size from 6×6 up)."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        sn = spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(channels, width, 3, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(width, width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(width, 2 * width, 3, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(2 * width, 1, 3, padding=1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class HighToLow(nn.Module):
    """The degradation GAN's generator (after Bulat et al. 2018): HR face + a noise map → LR face.

    It predicts a residual on top of area downsampling, so it starts as the clean degradation and learns
    what the unpaired real LR faces add (blur, noise, compression).
    """

    def __init__(self, channels: int, scale: int, width: int = 32, blocks: int = 2):
        super().__init__()
        self.scale = scale
        down: list[nn.Module] = []
        factors = [3] if scale == 3 else [2] * int(math.log2(scale))
        for f in factors:
            down += [
                nn.Conv2d(width, width, f + 2 if f == 3 else 4, stride=f, padding=1),
                nn.ReLU(inplace=True),
            ]
        self.head = nn.Conv2d(channels + 1, width, 3, padding=1)
        self.hr_body = nn.Sequential(*[ResBlock(width) for _ in range(blocks)])
        self.down = nn.Sequential(*down)
        self.lr_body = nn.Sequential(
            *[ResBlock(width) for _ in range(blocks)], nn.Conv2d(width, channels, 3, padding=1)
        )

    def forward(self, hr: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        side = hr.shape[-1] // self.scale
        h = self.hr_body(self.head(torch.cat([hr, z], dim=1)))
        h = self.down(h)
        if h.shape[-1] != side:
            h = F.interpolate(h, size=(side, side), mode="area")
        return resize(hr, side, "area") + self.lr_body(h)


class BicubicToDegraded(nn.Module):
    """The degradation GAN's generator in the seed's form: bicubic clean LR + a noise map → degraded LR.

    Works at LR resolution and predicts a residual on its input, so it starts as the identity (the clean
    LR) and learns what the unpaired real LR faces add (blur, noise, compression).
    """

    def __init__(self, channels: int, width: int = 32, blocks: int = 2):
        super().__init__()
        self.head = nn.Conv2d(channels + 1, width, 3, padding=1)
        self.body = nn.Sequential(
            *[ResBlock(width) for _ in range(blocks)], nn.Conv2d(width, channels, 3, padding=1)
        )

    def forward(self, lr: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return lr + self.body(self.head(torch.cat([lr, z], dim=1)))
