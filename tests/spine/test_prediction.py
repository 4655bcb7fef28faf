"""Predicted final time, energy and CO2 from the first few percent of a run, and its recorded error."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from poise import prediction
from poise.prediction import CostPredictor, error_at, fmt_energy
from tests.conftest import RECIPES


class _FakeCtx:
    """A run whose cost is known exactly: 2 s before the loop, 1 s (and 1e-6 kWh) per step."""

    def __init__(self) -> None:
        self.step_now = 0
        self.pre = 2.0
        self.files: dict[str, bytes] = {}
        self._cost = SimpleNamespace(snapshot=self._snapshot)

    def _snapshot(self) -> SimpleNamespace:
        wall = self.pre + self.step_now
        return SimpleNamespace(wall_s=wall, energy_kwh=1e-6 * wall, co2_g=5e-5 * wall)

    def save_file(self, name: str, data: bytes, media: str) -> None:
        self.files[name] = data


class _Bar:
    def __init__(self) -> None:
        self.fields: dict[str, str] = {}

    def update(self, completed: int, total: int | None = None, **fields: str) -> None:
        self.fields.update(fields)


def test_linear_extrapolation_is_exact_for_a_steady_loop_and_errors_are_recorded(store):
    ctx, bar = _FakeCtx(), _Bar()
    pred = CostPredictor(ctx)
    for step in range(1, 101):
        ctx.step_now = step
        pred.after_step(step, 100, bar)
    pred.finish_loop()
    data = json.loads(ctx.files[prediction.ARTIFACT])
    assert [p["mark"] for p in data["predictions"]] == [0.05, 0.10, 0.25, 0.50]
    first = data["predictions"][0]
    assert first["step"] == 5 and first["predicted"]["wall_s"] == pytest.approx(102.0)
    assert first["predicted"]["energy_kwh"] == pytest.approx(102e-6)
    assert first["error_loop"]["wall_s"] == pytest.approx(0.0, abs=1e-12)
    assert "102 s" in bar.fields["predict"] and "CO2" in bar.fields["predict"]
    # the run's final figure also holds 10 s of evaluation after the loop
    rid = store.create_run(kind="vision.erm", name="r", config={}, config_hash="h", seed=0)
    store.save_file(rid, prediction.ARTIFACT, ctx.files[prediction.ARTIFACT], "application/json")
    prediction.finish(store, rid, SimpleNamespace(wall_s=112.0, energy_kwh=112e-6, co2_g=112 * 5e-5))
    saved = prediction.load(store, rid)
    assert error_at(saved, 0.05, "wall_s") == pytest.approx(102 / 112 - 1)
    assert error_at(saved, 0.25, "co2_g") == pytest.approx(102 / 112 - 1)
    assert error_at(saved, 0.05, "wall_s", against="error_loop") == pytest.approx(0.0, abs=1e-12)


def test_the_first_steps_one_off_cost_is_left_out_but_a_later_slowdown_shows():
    ctx = _FakeCtx()
    pred = CostPredictor(ctx)
    for step in range(1, 41):
        # the first step costs 6 s (imports, allocation), steps after half the budget 2 s, the others 1 s
        ctx.step_now = step + 5 + max(0, step - 20)
        pred.after_step(step, 40, done=step == 40)
    data = json.loads(ctx.files[prediction.ARTIFACT])
    by = {p["mark"]: p for p in data["predictions"]}
    assert by[0.05]["step"] == 2  # the first mark comes after the first step
    assert by[0.05]["predicted"]["wall_s"] == pytest.approx(2 + 6 + 39)  # the 6 s step is not extrapolated
    assert by[0.25]["error_loop"]["wall_s"] == pytest.approx(47 / 67 - 1)  # the slowdown is not foreseen
    assert by[0.5]["loop_actual"]["wall_s"] == pytest.approx(67.0)


def test_a_real_run_records_its_prediction_and_error(runner, store):
    from poise.recipes import load_recipe

    cfg = load_recipe(RECIPES / "vision" / "erm-digits.toml", {
        "train.budget": {"steps": 40}, "model.width": 4, "eval": [{"name": "vision.clean_accuracy", "n": 60}]})
    rec = runner.run(cfg)
    data = prediction.load(store, rec.id)
    assert data is not None and [p["mark"] for p in data["predictions"]] == [0.05, 0.10, 0.25, 0.50]
    p5 = data["predictions"][0]
    assert p5["step"] == 2 and p5["total_steps"] == 40 and data["predictions"][2]["step"] == 10
    cost = store.cost(rec.id)
    assert p5["run_actual"]["wall_s"] == pytest.approx(cost.wall_s)
    assert p5["error_run"]["energy_kwh"] == pytest.approx(p5["predicted"]["energy_kwh"] / cost.energy_kwh - 1)
    assert p5["loop_actual"]["wall_s"] <= cost.wall_s


def test_fmt_energy():
    assert fmt_energy(1e-6) == "3.6 J" and fmt_energy(0.002) == "2 Wh" and fmt_energy(3.0) == "3 kWh"
