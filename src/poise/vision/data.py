"""Image classification data as tensors in [0, 1]: scikit-learn's digits (embedded) by default.

Splits are drawn from the recipe's seed (stratified, 60/20/20 train/val/test), so two runs with the
same seed see the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from poise.errors import UserError
from poise.recipes import DataCfg


class VisionDataCfg(DataCfg):
    """Which dataset: ``digits`` (ships with scikit-learn) or a torchvision set from ``root``."""

    name: str = "digits"
    val_frac: float = 0.2
    test_frac: float = 0.2
    limit: int | None = None  # keep at most this many training examples (quick runs)


@dataclass
class VisionData:
    name: str
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def _stratified_split(y: np.ndarray, fracs: tuple[float, float], seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val, n_test = round(len(idx) * fracs[0]), round(len(idx) * fracs[1])
        val.append(idx[:n_val])
        test.append(idx[n_val : n_val + n_test])
        train.append(idx[n_val + n_test :])
    return tuple(np.sort(np.concatenate(s)) for s in (train, val, test))


def load_digits_data(cfg: VisionDataCfg, seed: int) -> VisionData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    tr, va, te = _stratified_split(d.target, (cfg.val_frac, cfg.test_frac), seed)
    if cfg.limit is not None:
        tr = tr[: cfg.limit]
    return VisionData("digits", (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te]), 10)


def load_vision_data(cfg: VisionDataCfg, seed: int) -> VisionData:
    if cfg.name == "digits":
        return load_digits_data(cfg, seed)
    raise UserError(f"unknown dataset {cfg.name!r}; expected one of: digits", field="data.name")
