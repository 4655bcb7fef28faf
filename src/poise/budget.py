"""Budgets and their meter: how many optimizer steps a run may take, and how much it has spent.

A budget is given in steps, epochs, seconds, kWh or grams of CO2 (:class:`poise.recipes.BudgetCfg`).
Steps and epochs are exact (``epochs × steps_per_epoch``, rounded up). A resource budget (seconds,
kWh, CO2) is turned into steps by measurement, in three phases:

1. **calibration** — the first ``calibration_steps`` steps run with an unknown total (schedules hold
   their start value, see :mod:`poise.schedules`); then ``T = t + remaining / cost_per_step``.
2. **re-estimation** — when the run reaches 25 %, 50 % and 75 % of the current ``T``, it is
   re-estimated from the cost per step measured since the previous estimate (so warm caches,
   thermal throttling or a busy machine are accounted for).
3. **frozen** — after 75 % the total no longer moves, so the schedule ends exactly at the last step;
   the run may over- or under-spend the resource by the error of the last estimate, which the
   store records (``train.budget_used``).

The meter's state goes into every checkpoint, so a resumed run continues the count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from poise.errors import UserError
from poise.recipes import BudgetCfg

REESTIMATE_AT = (0.25, 0.5, 0.75)


class BudgetMeter:
    """Tracks steps and resource use of one run against its budget."""

    def __init__(self, budget: BudgetCfg, *, steps_per_epoch: int | None = None,
                 probe: Callable[[], float] | None = None):
        self.budget = budget
        self.unit = budget.unit
        self.steps_per_epoch = steps_per_epoch
        self._offset = 0.0  # resource spent before this process (resumed runs)
        self._probe = probe or (lambda: 0.0)
        self._total: int | None = None
        self._marks: list[float] = []  # pending re-estimation points (fractions of T)
        self._last_est: tuple[int, float] | None = None  # (step, spent) at the last estimate
        self.hooks: list[Callable[[int, BudgetMeter], None]] = []  # called after every step (cost prediction)
        if self.unit == "steps":
            self._total = int(budget.amount)
        elif self.unit == "epochs":
            if not steps_per_epoch:
                raise UserError("an epoch budget needs a dataset with at least one batch", field="train.budget.epochs")
            self._total = max(1, math.ceil(budget.amount * steps_per_epoch))
        elif self.unit == "seconds":
            t0 = time.perf_counter()
            self._probe = probe or (lambda: time.perf_counter() - t0)

    # ------------------------------------------------------------------ reading

    @property
    def total_steps(self) -> int | None:
        """Steps this run will take; None while a resource budget is still being calibrated."""
        return self._total

    @property
    def is_resource(self) -> bool:
        return self.unit in ("seconds", "kwh", "co2_g")

    def spent(self) -> float:
        """Resource spent so far in the budget's unit (steps and epochs report 0: they count steps)."""
        return self._offset + self._probe() if self.is_resource else 0.0

    def done(self, step: int) -> bool:
        """True once ``step`` optimizer steps have been taken and the budget allows no more."""
        return self._total is not None and step >= self._total

    def used_fraction(self, step: int) -> float:
        if self.is_resource:
            return self.spent() / self.budget.amount
        return step / max(self._total or 1, 1)

    # ------------------------------------------------------------------ updating

    def after_step(self, step: int) -> None:
        """Call after each optimizer step with the number of steps taken so far."""
        self._update(step)
        for hook in self.hooks:
            hook(step, self)

    def _update(self, step: int) -> None:
        if not self.is_resource:
            return
        if self._total is None:
            if step >= self.budget.calibration_steps:
                self._estimate(step, since=(0, self._offset))
                self._marks = list(REESTIMATE_AT)
            return
        passed = False
        while self._marks and step >= self._marks[0] * self._total:
            self._marks.pop(0)
            passed = True
        if passed and self._last_est is not None and step > self._last_est[0]:
            self._estimate(step, since=self._last_est)

    def _estimate(self, step: int, since: tuple[int, float]) -> None:
        spent = self.spent()
        d_steps = step - since[0]
        d_spent = spent - since[1]
        per_step = d_spent / d_steps if d_steps > 0 and d_spent > 0 else None
        remaining = self.budget.amount - spent
        # no measurable cost yet: double the steps and look again
        extra = (0 if remaining <= 0 else step) if per_step is None else max(0, math.floor(remaining / per_step))
        self._total = max(step, step + extra, 1)
        self._last_est = (step, spent)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {"spent": self.spent(), "total": self._total, "marks": list(self._marks),
                "last_est": list(self._last_est) if self._last_est else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._offset = float(state["spent"]) - (self._probe() if self.is_resource else 0.0)
        self._total = state["total"] if state["total"] is None else int(state["total"])
        self._marks = [float(m) for m in state["marks"]]
        self._last_est = tuple(state["last_est"]) if state["last_est"] else None  # type: ignore[assignment]
