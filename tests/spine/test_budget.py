"""Budgets: exact step and epoch totals; resource budgets calibrated, re-estimated, frozen, resumable."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poise.budget import BudgetMeter
from poise.errors import UserError
from poise.recipes import BudgetCfg, ScheduleCfg
from poise.schedules import end_lr, lr_at


class FakeClock:
    """A resource probe whose cost per step we control."""

    def __init__(self):
        self.spent = 0.0

    def __call__(self) -> float:
        return self.spent


def run_meter(meter: BudgetMeter, clock: FakeClock, cost_per_step, start: int = 0, limit: int = 100_000):
    step = start
    while not meter.done(step) and step < limit:
        clock.spent += cost_per_step(step)
        step += 1
        meter.after_step(step)
    return step


def test_steps_and_epochs_are_exact():
    assert BudgetMeter(BudgetCfg(steps=123)).total_steps == 123
    assert BudgetMeter(BudgetCfg(epochs=2.5), steps_per_epoch=10).total_steps == 25
    assert BudgetMeter(BudgetCfg(epochs=0.01), steps_per_epoch=10).total_steps == 1
    with pytest.raises(UserError, match="epoch"):
        BudgetMeter(BudgetCfg(epochs=1))


def test_exactly_one_budget_unit():
    with pytest.raises(ValueError, match="exactly one"):
        BudgetCfg(steps=1, seconds=2)
    with pytest.raises(ValueError, match="exactly one"):
        BudgetCfg()


@settings(max_examples=150, deadline=None)
@given(amount=st.floats(0.5, 100.0), cost=st.floats(0.01, 0.5), calib=st.integers(1, 20))
def test_constant_cost_resource_budget_is_spent_exactly(amount, cost, calib):
    clock = FakeClock()
    meter = BudgetMeter(BudgetCfg(seconds=amount, calibration_steps=calib), probe=clock)
    assert meter.total_steps is None
    steps = run_meter(meter, clock, lambda s: cost)
    expected = max(math.floor(amount / cost), calib)
    assert abs(steps - expected) <= 1
    assert meter.total_steps == steps


def test_reestimation_follows_a_slowdown_then_freezes():
    clock = FakeClock()
    meter = BudgetMeter(BudgetCfg(seconds=100.0, calibration_steps=10), probe=clock)
    # first 10 steps cost 0.1 s each (estimate: 1000 steps), then the machine gets 2x slower
    steps = run_meter(meter, clock, lambda s: 0.1 if s < 10 else 0.2)
    assert 480 <= steps <= 640  # the perfect answer is 505; the total froze at 75 % of the estimate
    assert clock.spent == pytest.approx(100.0, rel=0.2)


def test_schedule_reaches_end_at_the_last_step_of_a_time_budget():
    clock = FakeClock()
    meter = BudgetMeter(BudgetCfg(seconds=30.0, calibration_steps=5), probe=clock)
    cfg = ScheduleCfg(name="uba", phi=1.0, min_lr_ratio=0.01)
    lrs = []
    step = 0
    while not meter.done(step):
        lrs.append(lr_at(cfg, step, meter.total_steps, 1.0))
        clock.spent += 0.1 + 0.05 * (step % 3)
        step += 1
        meter.after_step(step)
    assert lrs[-1] == pytest.approx(end_lr(cfg, 1.0))
    assert lrs[0] == 1.0


def test_meter_state_round_trips_for_resume():
    clock = FakeClock()
    meter = BudgetMeter(BudgetCfg(seconds=50.0, calibration_steps=5), probe=clock)
    run_meter(meter, clock, lambda s: 0.1, limit=60)
    state = meter.state_dict()
    clock2 = FakeClock()  # a new process: the probe restarts at zero
    resumed = BudgetMeter(BudgetCfg(seconds=50.0, calibration_steps=5), probe=clock2)
    resumed.load_state_dict(state)
    assert resumed.total_steps == meter.total_steps
    assert resumed.spent() == pytest.approx(meter.spent())
    final = run_meter(resumed, clock2, lambda s: 0.1, start=60)
    uninterrupted = BudgetMeter(BudgetCfg(seconds=50.0, calibration_steps=5), probe=FakeClock())
    assert final == run_meter(uninterrupted, uninterrupted._probe, lambda s: 0.1)
