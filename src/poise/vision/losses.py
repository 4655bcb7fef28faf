"""Loss pieces shared by attacks and defences: soft-label KL, the CW margin loss, output entropy."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

KLReduction = Literal["mean", "batchmean", "none"]


def soft_kl(
    target_probs: torch.Tensor, logits: torch.Tensor, reduction: KLReduction = "mean"
) -> torch.Tensor:
    """KL(target ‖ softmax(logits)) for soft targets, as ``torch.nn.KLDivLoss`` computes it.

    ``mean`` averages over batch × classes (what the ARD, RSLAD and MTARD authors' code does with
    ``KLDivLoss()``), ``batchmean`` sums over classes and averages over the batch (TRADES), ``none``
    returns one value per example (summed over classes) for attacks.
    """
    kl = torch.xlogy(target_probs, target_probs) - target_probs * F.log_softmax(logits, dim=1)
    if reduction == "mean":
        return kl.mean()
    per_example = kl.sum(dim=1)
    return per_example.mean() if reduction == "batchmean" else per_example


def cw_margin_loss(logits: torch.Tensor, y: torch.Tensor, confidence: float = 50.0) -> torch.Tensor:
    """Per-example CW loss to maximise: ``−relu(z_y − max_{j≠y} z_j + κ)`` (κ = 50 as in the TRADES /
    RSLAD evaluation code, so it is the plain logit margin until the example is misclassified by 50)."""
    correct = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return -F.relu(correct - other + confidence)


def mean_plogp(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over batch × classes of ``p·log p`` with ``p = softmax(logits / τ)`` (B-MTARD's entropy term;
    it is minus the entropy divided by the class count, so it is ≤ 0)."""
    p = F.softmax(logits / temperature, dim=1)
    return torch.xlogy(p, p).mean()
