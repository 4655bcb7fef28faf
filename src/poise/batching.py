"""Step-indexed mini-batches: the batch of optimizer step ``t`` depends only on (seed, t).

A resumed run therefore sees exactly the batches an uninterrupted one would, without saving a data
loader's state. Each epoch is a fresh permutation drawn from ``seed`` and the epoch number; the last
partial batch of an epoch is dropped (so every step has ``batch_size`` examples) unless the dataset
is smaller than one batch.
"""

from __future__ import annotations

from functools import lru_cache

import torch


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size)


@lru_cache(maxsize=4)
def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63 - 1))
    return torch.randperm(n, generator=g)


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices into a dataset of ``n`` items for optimizer step ``step``."""
    per_epoch = steps_per_epoch(n, batch_size)
    epoch, within = divmod(step, per_epoch)
    perm = epoch_permutation(n, seed, epoch)
    return perm[within * batch_size : (within + 1) * batch_size]
