"""Degradations: composable, seeded, vectorised operations that turn HR faces into realistic LR ones.

An op is a callable ``op(x, g, lr) -> x`` on a batch ``[B, C, H, W]`` in [0, 1]: ``g`` is the
torch.Generator every random draw comes from (same seed, same output) and ``lr`` the final LR side, so
a resize anywhere in a pipeline knows its target. Parameters are drawn per sample from the op's ranges
and applied in one batched call: per-sample blur kernels through one grouped convolution, one
``interpolate`` per resize mode. JPEG is real JPEG (libjpeg through ``torchvision.io.encode_jpeg`` /
``decode_jpeg``) at a per-sample quality, on the CPU.

Families are named pipelines HR → LR, split into the ones training sees (``train``) and the ones held
out for evaluation (``held_out``): the held-out ones use operations no training family contains (motion
blur, signal-dependent Poisson noise, area downsampling) so they measure generalisation to unseen
degradations. ``sensor`` (train side) is the camera-like pipeline that makes the synthetic "real" LR
faces the degradation GAN learns to imitate when no folder of real LR faces is given.

Choices the paper leaves open, written down here: blur widths scale with ``scale / 2`` (so ×4 blurs
twice as wide in HR pixels as ×2); every family ends with 8-bit quantisation, as an LR file would; in
:class:`RandomOrder` and an intermediate :class:`Resize` the order and the size are drawn once per
batch (so the batch stays one tensor), everything else per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

from poise.errors import UserError

Range = tuple[float, float]
ResizeMode = Literal["bicubic", "bilinear", "area"]
RESIZE_MODES: tuple[ResizeMode, ...] = ("bicubic", "bilinear", "area")


class Op(Protocol):
    def __call__(self, x: torch.Tensor, g: torch.Generator, lr: int) -> torch.Tensor: ...


def _rand(n: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=g.device).to(device)


def _uniform(n: int, r: Range, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return r[0] + (r[1] - r[0]) * _rand(n, g, device)


def _log_uniform(n: int, r: Range, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.exp(_uniform(n, (math.log(r[0]), math.log(r[1])), g, device))


# --------------------------------------------------------------------------- kernels


def gaussian_kernels(sx: torch.Tensor, sy: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised (anisotropic) Gaussian kernels ``[B, size, size]``; sx, sy in pixels, theta in radians."""
    u = torch.arange(size, dtype=sx.dtype, device=sx.device) - size // 2
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    a = xx * c + yy * s
    b = -xx * s + yy * c
    k = torch.exp(-0.5 * ((a / sx[:, None, None]) ** 2 + (b / sy[:, None, None]) ** 2))
    return k / k.sum(dim=(1, 2), keepdim=True)


def motion_kernels(length: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised linear motion-blur kernels ``[B, size, size]``: an anti-aliased line segment of
    ``length`` pixels through the centre at angle ``theta``."""
    u = torch.arange(size, dtype=length.dtype, device=length.device) - size // 2
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    along = xx * c + yy * s
    perp = -xx * s + yy * c
    half = length[:, None, None] / 2
    k = (1 - perp.abs()).clamp(min=0) * (half + 0.5 - along.abs()).clamp(0, 1)
    return k / k.sum(dim=(1, 2), keepdim=True)


def filter2d(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each image with its own kernel (``kernels[b]``, all channels), edge-replicate padding."""
    b, c, h, w = x.shape
    k = kernels.shape[-1]
    weight = kernels.to(x.dtype).repeat_interleave(c, dim=0)[:, None]
    xp = F.pad(x.reshape(1, b * c, h, w), [k // 2] * 4, mode="replicate")
    return F.conv2d(xp, weight.flip(-1, -2), groups=b * c).reshape(b, c, h, w)


# --------------------------------------------------------------------------- ops


@dataclass(frozen=True)
class GaussianBlur:
    """Gaussian blur, sigma per sample from ``sigma``; anisotropic (two sigmas and an angle) when set."""

    sigma: Range = (0.4, 1.6)
    anisotropic: bool = False

    def __call__(self, x: torch.Tensor, g: torch.Generator, lr: int) -> torch.Tensor:
        n = len(x)
        sx = _uniform(n, self.sigma, g, x.device)
        sy = _uniform(n, self.sigma, g, x.device) if self.anisotropic else sx
        theta = _uniform(n, (0.0, math.pi), g, x.device) if self.anisotropic else torch.zeros_like(sx)
        size = 2 * math.ceil(3 * self.sigma[1]) + 1
        return filter2d(x, gaussian_kernels(sx, sy, theta, size))


@dataclass(frozen=True)
class MotionBlur:
    """Linear motion blur: length (pixels) and angle (degrees) per sample."""

    length: Range = (3.0, 7.0)
    angle: Range = (0.0, 180.0)

    def __call__(self, x: torch.Tensor, g: torch.Generator, lr: int) -> torch.Tensor:
        n = len(x)
        length = _uniform(n, self.length, g, x.device)
        theta = _uniform(n, self.angle, g, x.device) * math.pi / 180
        size = 2 * math.ceil(self.length[1] / 2) + 1
        return filter2d(x, motion_kernels(length, theta, size))


def resize(x: torch.Tensor, side: int, mode: ResizeMode) -> torch.Tensor:
    """Resize a batch to ``side``×``side``: antialiased bicubic / bilinear (like PIL), or area averaging."""
    if mode == "area":
        return F.interpolate(x, size=(side, side), mode="area")
    return F.interpolate(x, size=(side, side), mode=mode, align_corners=False, antialias=True).clamp(0, 1)


@dataclass(frozen=True)
class Resize:
    """Resize to the LR side (``to="lr"``) or to ``lr·u`` with u drawn per batch from ``to``; the
    interpolation mode is drawn per sample from ``modes``."""

    to: Literal["lr"] | Range = "lr"
    modes: tuple[ResizeMode, ...] = ("bicubic",)

    def __call__(self, x: torch.Tensor, g: torch.Generator, lr: int) -> torch.Tensor:
        if self.to == "lr":
            side = lr
        else:
            u = _uniform(1, self.to, g, torch.device("cpu")).item()
            side = max(1, round(lr * u))
        if len(self.modes) == 1:
            return resize(x, side, self.modes[0])
        pick = (_rand(len(x), g, x.device) * len(self.modes)).long().clamp(max=len(self.modes) - 1)
        out = x.new_empty(len(x), x.shape[1], side, side)
        for i, mode in enumerate(self.modes):
            sel = pick == i
            if sel.any():
                out[sel] = resize(x[sel], side, mode)
        return out


@dataclass(frozen=True)
class GaussianNoise:
    """Additive white Gaussian noise, standard deviation (in [0, 1] units) per sample from ``sigma``."""

    sigma: Range = (0.01, 0.05)

    def __call__(self, x: torch.Tensor, g: torch.Generator, lr: int) -> torch.Tensor:
        s = _uniform(len(x), self.sigma, g, x.device)
        noise = torch.randn(x.shape, generator=g, device=g.device).to(x.device)
        return (x + s[:, None, None, None] * noise).clamp(0, 1)


@dataclass(frozen=True)
class PoissonNoise:
    """Signal-dependent shot noise: ``poisson(x · peak) / peak``, peak photons per sample (log-uniform)."""

    peak: Range = (40.0, 200.0)

    def __call__(self, x: torch.Tensor, g: torch.Generator, lr: int) -> torch.Tensor:
        peak = _log_uniform(len(x), self.peak, g, x.device)[:, None, None, None]
        rate = (x.clamp(0, 1) * peak).to(g.device)
        return (torch.poisson(rate, generator=g).to(x.device) / peak).clamp(0, 1)


def quantize(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round() / 255


@dataclass(frozen=True)
class Quantize:
    """Round to 8 bits, as an image file would."""

    def __call__(self, x: torch.Tensor, g: torch.Generator, lr: int) -> torch.Tensor:
        return quantize(x)


def jpeg(x: torch.Tensor, quality: Sequence[int]) -> torch.Tensor:
    """Real JPEG round trip (libjpeg via torchvision) of each image at its own quality (1–100)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    u8 = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    out = [decode_jpeg(encode_jpeg(img, quality=int(q))) for img, q in zip(u8, quality, strict=True)]
    return torch.stack(out).to(x.device, x.dtype) / 255


@dataclass(frozen=True)
class JPEG:
    """JPEG compression, quality per sample (integer) from ``quality``."""

    quality: Range = (30, 80)

    def __call__(self, x: torch.Tensor, g: torch.Generator, lr: int) -> torch.Tensor:
        q = (
            _uniform(len(x), (self.quality[0], self.quality[1] + 1), g, torch.device("cpu"))
            .floor()
            .clamp(max=self.quality[1])
        )
        return jpeg(x, q.long().tolist())


@dataclass(frozen=True)
class Maybe:
    """Apply a size-preserving ``op`` to each sample with probability ``p``."""

    op: Op
    p: float = 0.5

    def __call__(self, x: torch.Tensor, g: torch.Generator, lr: int) -> torch.Tensor:
        keep = _rand(len(x), g, x.device) < self.p
        return torch.where(keep[:, None, None, None], self.op(x, g, lr), x)


@dataclass(frozen=True)
class Compose:
    """Apply ``ops`` in order."""

    ops: tuple[Op, ...]

    def __call__(self, x: torch.Tensor, g: torch.Generator, lr: int) -> torch.Tensor:
        for op in self.ops:
            x = op(x, g, lr)
        return x


@dataclass(frozen=True)
class RandomOrder:
    """Apply ``ops`` in an order drawn (per batch) from the generator: the shuffled stages of BSRGAN /
    Real-ESRGAN style degradation models."""

    ops: tuple[Op, ...]

    def __call__(self, x: torch.Tensor, g: torch.Generator, lr: int) -> torch.Tensor:
        for i in torch.randperm(len(self.ops), generator=g, device=g.device).tolist():
            x = self.ops[i](x, g, lr)
        return x


@dataclass
class Mixture:
    """Each sample goes through one of ``sources`` (drawn per sample with ``weights``); a call per source."""

    sources: list[Op]
    weights: list[float] = field(default_factory=list)

    def __call__(self, x: torch.Tensor, g: torch.Generator, lr: int) -> torch.Tensor:
        w = torch.tensor(self.weights or [1.0] * len(self.sources), dtype=torch.float)
        pick = torch.multinomial(w / w.sum(), len(x), replacement=True, generator=_cpu(g)).to(x.device)
        out = x.new_empty(len(x), x.shape[1], lr, lr)
        for i, src in enumerate(self.sources):
            sel = pick == i
            if sel.any():
                out[sel] = src(x[sel], g, lr)
        return out


def _cpu(g: torch.Generator) -> torch.Generator:
    """A CPU generator derived from ``g`` (torch.multinomial wants one on the CPU)."""
    if g.device.type == "cpu":
        return g
    seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device).item())
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """A named HR → LR pipeline, built for a given scale; ``split`` says whether training may use it."""

    name: str
    split: Literal["clean", "train", "held_out"]
    description: str
    build: Callable[[int], Op]


def _w(scale: int, r: Range) -> Range:
    """Widen an HR-pixel range with the scale factor (the ranges are written for ×2)."""
    return (r[0] * scale / 2, r[1] * scale / 2)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "bicubic",
            "clean",
            "antialiased bicubic downsampling (the clean LR)",
            lambda s: Compose((Resize("lr", ("bicubic",)), Quantize())),
        ),
        Family(
            "gaussian_blur",
            "train",
            "isotropic Gaussian blur (sigma 0.4-1.6 px at x2), bicubic down",
            lambda s: Compose((GaussianBlur(_w(s, (0.4, 1.6))), Resize("lr", ("bicubic",)), Quantize())),
        ),
        Family(
            "gaussian_noise",
            "train",
            "bicubic down, Gaussian noise (sigma 0.01-0.06)",
            lambda s: Compose((Resize("lr", ("bicubic",)), GaussianNoise((0.01, 0.06)), Quantize())),
        ),
        Family(
            "jpeg",
            "train",
            "bicubic down, JPEG at quality 30-80",
            lambda s: Compose((Resize("lr", ("bicubic",)), JPEG((30, 80)))),
        ),
        Family(
            "second_order",
            "train",
            "two random-order stages of {Gaussian blur, resize, Gaussian noise, JPEG} "
            "(BSRGAN / Real-ESRGAN style)",
            lambda s: Compose(
                (
                    RandomOrder(
                        (
                            GaussianBlur(_w(s, (0.2, 1.2)), anisotropic=True),
                            Resize((1.0, float(s)), RESIZE_MODES),
                            GaussianNoise((0.0, 0.04)),
                            JPEG((40, 95)),
                        )
                    ),
                    RandomOrder(
                        (
                            Maybe(GaussianBlur((0.2, 0.8), anisotropic=True), 0.8),
                            Resize("lr", RESIZE_MODES),
                            GaussianNoise((0.0, 0.03)),
                            JPEG((40, 95)),
                        )
                    ),
                    Quantize(),
                )
            ),
        ),
        Family(
            "sensor",
            "train",
            "camera-like: anisotropic Gaussian blur, bilinear down, Gaussian noise 0.02-0.05, JPEG 50-85 "
            "(the synthetic 'real' LR the degradation GAN imitates)",
            lambda s: Compose(
                (
                    GaussianBlur(_w(s, (0.6, 1.4)), anisotropic=True),
                    Resize("lr", ("bilinear",)),
                    GaussianNoise((0.02, 0.05)),
                    JPEG((50, 85)),
                )
            ),
        ),
        Family(
            "motion_blur",
            "held_out",
            "linear motion blur (3-7 px at x2, any angle), area down",
            lambda s: Compose((MotionBlur(_w(s, (3.0, 7.0))), Resize("lr", ("area",)), Quantize())),
        ),
        Family(
            "poisson_noise",
            "held_out",
            "area down, Poisson shot noise (peak 40-200 photons)",
            lambda s: Compose((Resize("lr", ("area",)), PoissonNoise((40.0, 200.0)), Quantize())),
        ),
        Family(
            "compound",
            "held_out",
            "motion blur (2-4 px at x2), bicubic down, Poisson noise (peak 100-300), JPEG 25-50",
            lambda s: Compose(
                (
                    MotionBlur(_w(s, (2.0, 4.0))),
                    Resize("lr", ("bicubic",)),
                    PoissonNoise((100.0, 300.0)),
                    JPEG((25, 50)),
                )
            ),
        ),
    ]
}

TRAIN_FAMILIES = [n for n, f in FAMILIES.items() if f.split == "train" and n != "sensor"]
HELD_OUT_FAMILIES = [n for n, f in FAMILIES.items() if f.split == "held_out"]


def check_family(name: str, split: str | None = None) -> str:
    """``name`` if it is a known family (of ``split`` when given), else a ValueError listing them."""
    known = [n for n, f in FAMILIES.items() if split is None or f.split == split]
    if name not in known:
        which = f"{split} " if split else ""
        raise ValueError(f"unknown {which}degradation {name!r}; expected one of: {', '.join(known)}")
    return name


def build_family(name: str, scale: int) -> Op:
    try:
        check_family(name)
    except ValueError as e:
        raise UserError(str(e), field="degradation") from None
    return FAMILIES[name].build(scale)


def check_batch(x: torch.Tensor, scale: int) -> None:
    """A batch of HR images must be ``[B, C, H, H]`` with C in (1, 3) and H divisible by ``scale``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise UserError(f"expected a batch of images [B, C, H, W] (got {shape})", field="images")
    b, c, h, w = x.shape
    if c not in (1, 3):
        raise UserError(f"images have {c} channels; expected 1 (gray) or 3 (RGB)", field="images")
    if h != w or h % scale:
        raise UserError(
            f"images are {h}x{w}; expected square images whose side is divisible by the scale {scale}",
            field="images",
        )


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed % (2**63 - 1))


def degrade(hr: torch.Tensor, family: str | Op, scale: int, g: torch.Generator | int = 0) -> torch.Tensor:
    """HR batch → LR batch through ``family`` (a name or an op), seeded by ``g`` (a generator or a seed)."""
    check_batch(hr, scale)
    op = build_family(family, scale) if isinstance(family, str) else family
    if isinstance(g, int):
        g = generator(g, hr.device)
    return op(hr, g, hr.shape[-1] // scale)


def bicubic_down(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The clean LR: antialiased bicubic downsampling, quantised to 8 bits (deterministic)."""
    return quantize(resize(hr, hr.shape[-1] // scale, "bicubic"))


def bicubic_up(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Plain bicubic upsampling (the bicubic baseline), clamped to [0, 1]."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
