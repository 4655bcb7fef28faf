"""Budget-aware learning-rate schedules: UBA, cosine, linear, step, WSD, OneCycle, constant, REX.

Every schedule is a pure function of the step ``t`` and the budget's total steps ``T``: the lr used
at optimizer step ``t`` (0-based) is ``lr_at(cfg, t, T, lr_max)``. Conventions, the same for all:

* warm-up (``warmup_frac`` > 0) rises linearly over ``W = min(round(warmup_frac·T), T−1)`` steps to
  ``lr_max``; the schedule proper then runs over the remaining steps with progress
  ``p = (t − W) / (T − 1 − W)``, so the **last step of the budget, t = T − 1, uses the end value
  exactly** (``η_min = min_lr_ratio·lr_max``; for ``step``, ``max(γ^k, min_lr_ratio)·lr_max``; for
  ``onecycle``, ``lr_max / (div_factor·final_div_factor)`` as in torch).
* while a time or energy budget is still being calibrated (``T`` unknown), the lr holds at
  ``lr_max`` (no warm-up asked) or ``0.1·lr_max`` (warm-up asked; its length needs ``T``), or, for
  onecycle, its initial value.

:class:`BudgetSchedule` wraps this as a torch ``LRScheduler`` whose ``T`` is read from the budget
meter at every step, so a re-estimated budget reshapes the rest of the schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from poise.recipes import ScheduleCfg

CALIBRATION_WARMUP_FACTOR = 0.1


def uba_factor(p: float, phi: float) -> float:
    """UBA's shape in [0, 1]: ``2c / (2φ + (2 − φ)c)`` with ``c = 1 + cos(πp)``; φ = 2 is cosine.

    From "Stepsize anything" (Tang et al., NeurIPS 2025), in the one-parameter form of its public
    implementation: 1 at p = 0, 0 at p = 1 for every φ > 0, decreasing in p.
    """
    c = 1.0 + math.cos(math.pi * p)
    return 2.0 * c / (2.0 * phi + (2.0 - phi) * c)


def _shape(cfg: ScheduleCfg, p: float) -> float:
    """Factor in [min_lr_ratio, 1] at progress ``p`` ∈ [0, 1] after warm-up (not for onecycle)."""
    m = cfg.min_lr_ratio
    name = cfg.name
    if name == "constant":
        return 1.0
    if name == "cosine":
        return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * p))
    if name == "linear":
        return m + (1 - m) * (1 - p)
    if name == "uba":
        return m + (1 - m) * uba_factor(p, cfg.phi)
    if name == "rex":  # Chen et al., "REX", MLSys 2022
        return m + (1 - m) * (1 - p) / (1 - p / 2)
    if name == "wsd":  # warm-up, stable, then linear decay over the last decay_frac of the budget
        start = 1 - cfg.decay_frac
        if p <= start:
            return 1.0
        q = (p - start) / cfg.decay_frac
        return m + (1 - m) * (1 - q)
    if name == "step":
        k = sum(1 for ms in cfg.milestones if p >= ms)
        return max(cfg.gamma**k, m)
    raise ValueError(f"unknown schedule {name!r}")


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _onecycle(cfg: ScheduleCfg, t: int, total: int, lr_max: float) -> float:
    """torch's OneCycleLR (two phases, cosine annealing) for step ``t`` of ``total``, phase ends as in torch."""
    initial = lr_max / cfg.div_factor
    final = initial / cfg.final_div_factor
    end_up = float(cfg.pct_start * total) - 1
    if t <= end_up:
        return _cos(initial, lr_max, t / end_up if end_up != 0 else 0.0)
    span = (total - 1) - end_up
    return _cos(lr_max, final, 1.0 if span <= 0 else (t - end_up) / span)


def warmup_steps(cfg: ScheduleCfg, total: int) -> int:
    return 0 if cfg.name == "onecycle" else min(round(cfg.warmup_frac * total), max(total - 1, 0))


def lr_at(cfg: ScheduleCfg, t: int, total: int | None, lr_max: float) -> float:
    """Learning rate for optimizer step ``t`` (0-based) of a ``total``-step budget."""
    if total is None:  # budget still being calibrated: hold a start value
        if cfg.name == "onecycle":
            return lr_max / cfg.div_factor
        return lr_max if cfg.warmup_frac == 0 else lr_max * CALIBRATION_WARMUP_FACTOR
    total = max(int(total), 1)
    t = min(max(int(t), 0), total - 1)
    if cfg.name == "onecycle":
        return _onecycle(cfg, t, total, lr_max)
    w = warmup_steps(cfg, total)
    if t < w:
        return lr_max * (t + 1) / (w + 1)
    span = total - 1 - w
    p = 1.0 if span <= 0 else (t - w) / span
    return lr_max * _shape(cfg, p)


def end_lr(cfg: ScheduleCfg, lr_max: float) -> float:
    """The value every schedule reaches at the budget's last step."""
    if cfg.name == "onecycle":
        return lr_max / (cfg.div_factor * cfg.final_div_factor)
    return lr_max * _shape(cfg, 1.0)


def lr_bounds(cfg: ScheduleCfg, lr_max: float) -> tuple[float, float]:
    """(lowest, highest) lr outside warm-up: every shape is non-increasing after its peak, so the end is the floor."""
    return end_lr(cfg, lr_max), lr_max


class BudgetSchedule(LRScheduler):
    """A torch LRScheduler that follows :func:`lr_at`, reading the budget's total steps each step."""

    def __init__(self, optimizer: Optimizer, cfg: ScheduleCfg, total_steps: Callable[[], int | None],
                 last_epoch: int = -1):
        self.cfg = cfg
        self.total_steps = total_steps
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        total = self.total_steps()
        return [lr_at(self.cfg, self.last_epoch, total, base) for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs),
                "_step_count": self._step_count, "_last_lr": list(self._last_lr)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lrs = list(state_dict["base_lrs"])
        self._step_count = int(state_dict["_step_count"])
        self._last_lr = list(state_dict["_last_lr"])
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
