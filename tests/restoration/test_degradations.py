"""Degradations: seeded, vectorised, cross-checked against scipy / PIL; families split train / held out."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poise.errors import UserError
from poise.restoration import degradations as D


def faces(n: int = 6, side: int = 24, c: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, side, side, generator=g)
    return torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, [1] * 4, mode="replicate"), 3, 1)


@pytest.mark.parametrize("name", list(D.FAMILIES))
def test_every_family_is_seeded_shaped_and_in_range(name):
    hr = faces()
    a = D.degrade(hr, name, 2, 5)
    b = D.degrade(hr, name, 2, 5)
    c = D.degrade(hr, name, 2, 6)
    assert a.shape == (6, 1, 12, 12)
    assert torch.equal(a, b)
    assert a.min() >= 0.0 and a.max() <= 1.0
    if name != "bicubic":
        assert not torch.equal(a, c), "another seed must give another degradation"
    # 8-bit like an LR file
    assert torch.allclose(a * 255, (a * 255).round(), atol=1e-4)


def test_families_split_seen_and_held_out_and_held_out_ops_are_unseen():
    assert set(D.HELD_OUT_FAMILIES) == {"motion_blur", "poisson_noise", "compound"}
    assert not set(D.TRAIN_FAMILIES) & set(D.HELD_OUT_FAMILIES)

    def op_types(op) -> set[type]:
        out = {type(op)}
        for attr in ("ops", "op"):
            sub = getattr(op, attr, None)
            for s in sub if isinstance(sub, tuple) else [sub] if sub is not None else []:
                out |= op_types(s)
        return out

    seen = set().union(*(op_types(D.FAMILIES[f].build(2)) for f in D.TRAIN_FAMILIES + ["sensor"]))
    for f in D.HELD_OUT_FAMILIES:
        unseen = op_types(D.FAMILIES[f].build(2)) - seen
        assert unseen & {D.MotionBlur, D.PoissonNoise}, f


def test_filter2d_matches_scipy_convolution_per_sample():
    from scipy.ndimage import convolve

    x = faces(3, 16)
    sig = torch.tensor([0.5, 1.0, 2.0])
    k = D.gaussian_kernels(sig, sig * 0.5, torch.tensor([0.0, 0.7, 2.0]), 9)
    ours = D.filter2d(x, k)
    for i in range(3):
        ref = convolve(x[i, 0].double().numpy(), k[i].double().numpy(), mode="nearest")
        np.testing.assert_allclose(ours[i, 0].numpy(), ref, atol=1e-5)


def test_isotropic_gaussian_kernel_matches_scipy_gaussian_filter():
    from scipy.ndimage import gaussian_filter

    img = faces(1, 20)[0, 0]
    s = torch.tensor([1.2])
    ours = D.filter2d(img[None, None], D.gaussian_kernels(s, s, torch.zeros(1), 2 * math.ceil(4 * 1.2) + 1))
    ref = gaussian_filter(img.double().numpy(), 1.2, mode="nearest", truncate=4.0)
    np.testing.assert_allclose(ours[0, 0].numpy(), ref, atol=2e-3)


@settings(max_examples=40, deadline=None)
@given(length=st.floats(1.0, 9.0), angle=st.floats(0.0, math.pi))
def test_motion_kernels_are_normalised_line_segments(length, angle):
    k = D.motion_kernels(torch.tensor([length]), torch.tensor([angle]), 11)[0]
    assert k.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (k >= 0).all()
    # mass lies along the direction (cos, sin): the second moment across the line is small
    u = torch.arange(11.0) - 5
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    perp = -xx * math.sin(angle) + yy * math.cos(angle)
    assert (k * perp**2).sum().item() < 0.5


def test_jpeg_is_libjpeg_like_pil():
    from PIL import Image

    x = faces(2, 24)
    ours = D.jpeg(x, [40, 90])
    for img, q, o in zip(x, [40, 90], ours, strict=True):
        u8 = (img[0] * 255).round().to(torch.uint8).numpy()
        buf = io.BytesIO()
        Image.fromarray(u8, "L").save(buf, "JPEG", quality=q)
        ref = np.asarray(Image.open(buf), dtype=np.float32) / 255
        assert np.abs(o[0].numpy() - ref).max() <= 2 / 255
    assert (ours[0] - x[0]).abs().mean() > (ours[1] - x[1]).abs().mean()  # lower quality, more error


def test_bicubic_down_is_close_to_pil_antialiased_bicubic():
    from PIL import Image

    x = faces(1, 24)
    ours = D.bicubic_down(x, 2)[0, 0].numpy()
    pil = Image.fromarray(x[0, 0].numpy().astype(np.float32), "F").resize((12, 12), Image.Resampling.BICUBIC)
    assert np.abs(ours - np.asarray(pil)).max() < 0.03


def test_noise_statistics():
    x = torch.full((64, 1, 12, 12), 0.5)
    g = D.generator(0)
    n = D.GaussianNoise((0.05, 0.05))(x, g, 12)
    assert (n - x).std().item() == pytest.approx(0.05, rel=0.05)
    p = D.PoissonNoise((100.0, 100.0))(x, g, 12)
    assert p.mean().item() == pytest.approx(0.5, abs=0.01)
    assert p.var().item() == pytest.approx(0.5 / 100, rel=0.15)  # Var = x / peak


def test_mixture_routes_each_sample_to_one_source():
    x = faces(40)
    zero = lambda x, g, lr: torch.zeros(len(x), x.shape[1], lr, lr)  # noqa: E731
    one = lambda x, g, lr: torch.ones(len(x), x.shape[1], lr, lr)  # noqa: E731
    out = D.Mixture([zero, one], [1.0, 3.0])(x, D.generator(1), 12)
    per = out.flatten(1).mean(1)
    assert set(per.tolist()) <= {0.0, 1.0}
    assert 20 <= per.sum().item() <= 38


def test_random_order_changes_order_with_the_seed():
    add = lambda x, g, lr: x + 1  # noqa: E731
    dbl = lambda x, g, lr: x * 2  # noqa: E731
    ro = D.RandomOrder((add, dbl))
    outs = {ro(torch.zeros(1, 1, 2, 2), D.generator(s), 2)[0, 0, 0, 0].item() for s in range(20)}
    assert outs == {1.0, 2.0}


def test_unknown_family_and_bad_batches_are_user_errors():
    with pytest.raises(UserError, match="unknown degradation 'smudge'; expected one of: bicubic"):
        D.degrade(faces(), "smudge", 2)
    with pytest.raises(UserError, match="4 channels"):
        D.degrade(torch.rand(2, 4, 24, 24), "bicubic", 2)
    with pytest.raises(UserError, match="24x20"):
        D.degrade(torch.rand(2, 1, 24, 20), "bicubic", 2)
    with pytest.raises(UserError, match="divisible by the scale 4"):
        D.degrade(torch.rand(2, 1, 18, 18), "bicubic", 4)
    with pytest.raises(UserError, match=r"\[B, C, H, W\]"):
        D.degrade(torch.rand(1, 24, 24), "bicubic", 2)


def test_x4_and_rgb_work():
    x = faces(2, 24, c=3)
    assert D.degrade(x, "second_order", 4, 0).shape == (2, 3, 6, 6)
    assert D.degrade(x, "compound", 3, 0).shape == (2, 3, 8, 8)
