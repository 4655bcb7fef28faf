"""PGD on the LR input of an SR model: L∞-bounded perturbation that minimises the output's PSNR-Y.

Descends the mean per-image PSNR (equivalently ascends the mean log-MSE, so every image counts, not
just the worst) with signed-gradient steps, a uniform random start in the ε-ball, and projection onto
the ball and onto valid pixels [0, 1]. The loss is taken on the unclamped SR output so gradients do not
vanish where the output saturates; the reported PSNR clamps it.
"""

from __future__ import annotations

import torch

from poise.restoration.metrics import psnr_y_torch


def pgd_lr(
    model: torch.nn.Module,
    lr: torch.Tensor,
    hr: torch.Tensor,
    *,
    scale: int,
    eps: float,
    steps: int,
    alpha: float,
    random_start: bool = True,
    g: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial LR inputs within ``eps`` (L∞, [0, 1] units) of ``lr`` that lower PSNR(model(x), hr)."""
    was_training = model.training
    model.eval()
    if random_start:
        g = g or torch.Generator(device=lr.device).manual_seed(0)
        delta = (torch.rand(lr.shape, generator=g, device=g.device).to(lr.device) * 2 - 1) * eps
    else:
        delta = torch.zeros_like(lr)
    delta = (lr + delta).clamp(0, 1) - lr
    for _ in range(steps):
        x = (lr + delta).detach().requires_grad_(True)
        loss = psnr_y_torch(model(x), hr, scale).sum()
        (grad,) = torch.autograd.grad(loss, x)
        delta = (delta - alpha * grad.sign()).clamp(-eps, eps)
        delta = (lr + delta).clamp(0, 1) - lr
    model.train(was_training)
    return (lr + delta).detach()
