"""A run's predicted final time, energy and CO2, made early in its training loop, and its error.

The run's first budget meter (``ctx.meter``) carries a :class:`CostPredictor` as a hook, so every
loop that feeds the meter (``ctx.steps``, the SB3 loop) gets it. When the loop reaches 5 %, 10 %,
25 % and 50 % of its budget's steps (the first step at or past each mark; ``fraction`` records where
exactly), it reads the run's measured cost so far and extrapolates the loop linearly:

    predicted total = cost after the first step + (cost since then) × (T − 1) / (t − 1)

for wall time, energy and CO2, at step ``t`` of ``T``. The first step is left out of the rate: it
carries one-off costs (lazy imports, allocation, FLOP counting) that the other steps don't have, so a
mark is taken at step 2 at the earliest. The latest prediction is shown in the progress bar.

Every prediction goes into the run's JSON artifact ``cost_prediction``. When the budget is spent the
loop's actual cost is added, and when the run ends (:func:`finish`) the run's final cost, with the
relative error of each prediction against both: ``error_loop`` against the loop's end (what is
extrapolated) and ``error_run`` against the run's final figure (which also holds the evaluation after
the loop, unknown while training). A resumed segment makes no new predictions (its loop started in an
earlier segment).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MARKS = (0.05, 0.10, 0.25, 0.50)
FIELDS = ("wall_s", "energy_kwh", "co2_g")
ARTIFACT = "cost_prediction"


def fmt_energy(kwh: float) -> str:
    """Energy for people: J below 1 Wh, Wh below 1 kWh, else kWh."""
    if kwh < 1e-3 / 3.6:
        return f"{kwh * 3.6e6:.3g} J"
    if kwh < 1.0:
        return f"{kwh * 1e3:.3g} Wh"
    return f"{kwh:.3g} kWh"


def fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


@dataclass
class _Cost:
    wall_s: float
    energy_kwh: float
    co2_g: float

    @classmethod
    def of(cls, rec: Any) -> _Cost:
        return cls(rec.wall_s, rec.energy_kwh, rec.co2_g)


class CostPredictor:
    """Extrapolates the training loop's cost from its first few percent (see the module docstring)."""

    def __init__(self, ctx: Any, marks: tuple[float, ...] = MARKS):
        self.ctx = ctx
        self.marks = list(marks)
        self.first: _Cost | None = None  # cost after the first step
        self.predictions: list[dict[str, Any]] = []

    def after_step(self, step: int, total: int | None, bar: Any = None, *, done: bool = False) -> None:
        """Call after each step; predicts when the loop passes the next mark (cheap otherwise) and records
        the loop's actual cost when ``done``."""
        if self.first is None:
            self.first = _Cost.of(self.ctx._cost.snapshot())
            self.first_step = step  # 1 in ctx.steps; the env count of the first callback in SB3
        elif total is not None and self.marks and step >= self.marks[0] * total:
            self._predict(step, total, bar)
        if done:
            self.finish_loop()

    def _predict(self, step: int, total: int, bar: Any) -> None:
        now = _Cost.of(self.ctx._cost.snapshot())
        fraction = step / total
        first, k = self.first, self.first_step
        assert first is not None
        scale = (total - k) / (step - k)
        predicted = {f: getattr(first, f) + (getattr(now, f) - getattr(first, f)) * scale for f in FIELDS}
        while self.marks and step >= self.marks[0] * total:  # a short run may pass several marks in one step
            self.predictions.append({"mark": self.marks.pop(0), "step": step, "total_steps": total,
                                     "fraction": fraction, "predicted": predicted})
        self._save()
        if bar is not None:
            bar.update(step, total, predict=f"→ {fmt_seconds(predicted['wall_s'])}, "
                                           f"{fmt_energy(predicted['energy_kwh'])}, {predicted['co2_g']:.3g} g CO2")

    def finish_loop(self) -> None:
        """Record the loop's actual cost (what the predictions extrapolate)."""
        if not self.predictions or "loop_actual" in self.predictions[-1]:
            return
        loop = _Cost.of(self.ctx._cost.snapshot()).__dict__
        for p in self.predictions:
            p["loop_actual"] = loop
            p["error_loop"] = _errors(p["predicted"], loop)
        self._save()

    def _save(self) -> None:
        data = {"method": "linear extrapolation of the training loop from its second step", "marks": list(MARKS),
                "predictions": self.predictions}
        self.ctx.save_file(ARTIFACT, json.dumps(data, sort_keys=True).encode(), "application/json")


def _errors(predicted: dict[str, float], actual: dict[str, float]) -> dict[str, float | None]:
    """Relative error (predicted / actual − 1) per field; None where the actual is 0."""
    return {f: (predicted[f] / actual[f] - 1.0) if actual.get(f) else None for f in FIELDS}


def finish(store: Any, run_id: str, total: Any) -> None:
    """Add the run's final cost and each prediction's error against it to the ``cost_prediction`` artifact."""
    data = load(store, run_id)
    if data is None:
        return
    final = _Cost.of(total).__dict__
    for p in data["predictions"]:
        p["run_actual"] = final
        p["error_run"] = _errors(p["predicted"], final)
    store.save_file(run_id, ARTIFACT, json.dumps(data, sort_keys=True).encode(), "application/json")


def load(store: Any, run_id: str) -> dict[str, Any] | None:
    """The ``cost_prediction`` artifact of a run, or None."""
    for a in store.artifacts(run_id):
        if a.name == ARTIFACT:
            return json.loads(a.path.read_text())
    return None


def error_at(data: dict[str, Any] | None, mark: float, field: str = "energy_kwh", against: str = "error_run"
             ) -> float | None:
    """The relative error of the prediction made at ``mark`` (e.g. 0.05), or None if there is none."""
    for p in (data or {}).get("predictions", []):
        if abs(p["mark"] - mark) < 1e-9 and against in p:
            return p[against].get(field)
    return None
