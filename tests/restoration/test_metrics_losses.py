"""PSNR-Y / SSIM against scikit-image, the Sinkhorn alignment's known values, λ sampling, PGD on LR inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poise.restoration.attacks import pgd_lr
from poise.restoration.degradations import bicubic_down, generator
from poise.restoration.losses import MixCfg, SinkhornAlign, SinkhornCfg, sample_lambda
from poise.restoration.metrics import psnr_ssim, psnr_y_torch, to_y
from poise.restoration.models import Bicubic, SmoothSR


def test_to_y_matches_skimage_rgb2ycbcr():
    from skimage.color import rgb2ycbcr

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = rgb2ycbcr(x[0].permute(1, 2, 0).double().numpy())[..., 0] / 255
    np.testing.assert_allclose(to_y(x)[0, 0].double().numpy(), ref, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), noise=st.floats(0.01, 0.3), scale=st.sampled_from([2, 3, 4]))
def test_differentiable_psnr_matches_skimage(seed, noise, scale):
    from skimage.metrics import peak_signal_noise_ratio

    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(3, 3, 24, 24, generator=g)
    sr = (hr + noise * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    ours = psnr_y_torch(sr, hr, scale)
    b = scale
    for i in range(3):
        a_y = to_y(sr)[i, 0, b:-b, b:-b].double().numpy()
        h_y = to_y(hr)[i, 0, b:-b, b:-b].double().numpy()
        assert ours[i].item() == pytest.approx(peak_signal_noise_ratio(h_y, a_y, data_range=1.0), abs=1e-3)
    p, s = psnr_ssim(sr, hr, scale)
    assert p == pytest.approx(ours.mean().item(), abs=1e-3)
    assert 0.0 < s < 1.0


def test_ssim_is_one_for_identical_and_falls_with_noise():
    hr = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(1))
    assert psnr_ssim(hr, hr, 2)[1] == pytest.approx(1.0)
    assert psnr_ssim((hr + 0.2 * torch.randn_like(hr)).clamp(0, 1), hr, 2)[1] < 0.9


@pytest.mark.parametrize("points", ["image", "location"])
def test_sinkhorn_is_zero_on_identical_clouds_and_half_squared_shift_on_translated_ones(points):
    align = SinkhornAlign(SinkhornCfg(points=points, blur=0.01))
    f = torch.randn(16, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    assert align(f, f.clone()).item() == pytest.approx(0.0, abs=1e-4)
    # translating every point by v: W2²/2 = |v|²/2 in the normalised point units (geomloss p=2 cost)
    shift = 0.3
    moved = f + shift
    dim = 4 * 9 if points == "image" else 4
    expected = 0.5 * dim * shift**2 / dim
    assert align(f, moved).item() == pytest.approx(expected, rel=0.05)


def test_sinkhorn_gradient_pulls_degraded_features_towards_clean():
    align = SinkhornAlign(SinkhornCfg())
    clean = torch.randn(8, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    deg = (clean + 0.5).requires_grad_(True)
    before = align(clean, deg)
    before.backward()
    with torch.no_grad():
        after = align(clean, deg - 0.5 * deg.grad / deg.grad.norm())
    assert after < before


@settings(max_examples=25, deadline=None)
@given(
    low=st.floats(0, 1),
    width=st.floats(0, 1),
    dist=st.sampled_from(["uniform", "beta"]),
    seed=st.integers(0, 99),
)
def test_lambda_stays_in_its_range_and_is_seeded(low, width, dist, seed):
    high = min(1.0, low + width)
    cfg = MixCfg(dist=dist, low=low, high=high, beta_a=0.5, beta_b=2.0)
    a = sample_lambda(64, cfg, generator(seed))
    assert a.shape == (64,)
    assert (a >= low - 1e-6).all() and (a <= high + 1e-6).all()
    assert torch.equal(a, sample_lambda(64, cfg, generator(seed)))


def test_mix_rejects_low_above_high():
    with pytest.raises(ValueError, match="expected low <= high"):
        MixCfg(low=0.8, high=0.2)


def test_pgd_lowers_psnr_more_than_random_noise_and_stays_in_the_ball():
    torch.manual_seed(0)
    hr = torch.rand(4, 1, 24, 24, generator=torch.Generator().manual_seed(3))
    lr = bicubic_down(hr, 2)
    eps = 4 / 255
    for model in (Bicubic(2), SmoothSR(1, 2, width=8, feature_blocks=1, sr_blocks=1, global_skip=True)):
        adv = pgd_lr(model, lr, hr, scale=2, eps=eps, steps=10, alpha=eps / 4)
        assert (adv - lr).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        noise = (
            lr + eps * torch.sign(torch.randn(lr.shape, generator=torch.Generator().manual_seed(1)))
        ).clamp(0, 1)
        with torch.no_grad():
            p_clean = psnr_y_torch(model(lr), hr, 2).mean()
            p_noise = psnr_y_torch(model(noise), hr, 2).mean()
            p_adv = psnr_y_torch(model(adv), hr, 2).mean()
        assert p_adv < p_noise < p_clean
