"""Schedules: bounds, exact end at the budget's last step, UBA's identities, agreement with torch."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poise.recipes import ScheduleCfg
from poise.schedules import BudgetSchedule, end_lr, lr_at, lr_bounds, uba_factor, warmup_steps

NAMES = ["uba", "cosine", "linear", "step", "wsd", "onecycle", "constant", "rex"]


@st.composite
def schedules(draw):
    name = draw(st.sampled_from(NAMES))
    kw = dict(
        name=name,
        min_lr_ratio=draw(st.floats(0.0, 0.5)),
        phi=draw(st.floats(0.05, 20.0)),
        decay_frac=draw(st.floats(0.05, 1.0)),
        gamma=draw(st.floats(0.05, 1.0)),
        milestones=sorted(draw(st.lists(st.floats(0.05, 0.95), min_size=0, max_size=3))),
        pct_start=draw(st.floats(0.05, 0.9)),
        div_factor=draw(st.floats(1.0, 100.0)),
        final_div_factor=draw(st.floats(1.0, 1e4)),
    )
    if name != "onecycle":
        kw["warmup_frac"] = draw(st.floats(0.0, 0.5))
    return ScheduleCfg(**kw)


@settings(max_examples=300, deadline=None)
@given(cfg=schedules(), total=st.integers(1, 400), lr=st.floats(1e-5, 10.0))
def test_lr_stays_within_bounds(cfg, total, lr):
    low, high = lr_bounds(cfg, lr)
    w = warmup_steps(cfg, total)
    for t in range(total):
        v = lr_at(cfg, t, total, lr)
        if t < w:
            assert 0 < v <= high * (1 + 1e-12)
        else:
            assert low * (1 - 1e-9) - 1e-15 <= v <= high * (1 + 1e-9), (t, v, low, high)


@settings(max_examples=300, deadline=None)
@given(cfg=schedules(), total=st.integers(2, 400), lr=st.floats(1e-5, 10.0))
def test_schedule_reaches_its_end_exactly_at_the_last_step(cfg, total, lr):
    assert lr_at(cfg, total - 1, total, lr) == pytest.approx(end_lr(cfg, lr), rel=1e-9, abs=1e-15)
    # and the budget is consumed exactly: asking past the end stays at the end
    assert lr_at(cfg, total + 5, total, lr) == lr_at(cfg, total - 1, total, lr)


@settings(max_examples=200, deadline=None)
@given(p=st.floats(0.0, 1.0))
def test_uba_with_phi_two_is_cosine(p):
    assert uba_factor(p, 2.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * p)), abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(phi=st.floats(1e-3, 1e3))
def test_uba_starts_at_max_and_ends_at_min_for_every_phi(phi):
    assert uba_factor(0.0, phi) == pytest.approx(1.0)
    assert uba_factor(1.0, phi) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(phi=st.floats(1e-3, 1e3), a=st.floats(0.0, 1.0), b=st.floats(0.0, 1.0))
def test_uba_decreases_monotonically(phi, a, b):
    lo, hi = min(a, b), max(a, b)
    assert uba_factor(hi, phi) <= uba_factor(lo, phi) + 1e-12


@settings(max_examples=100, deadline=None)
@given(p=st.floats(0.01, 0.95))
def test_uba_small_phi_holds_high_and_large_phi_decays_early(p):
    cos = uba_factor(p, 2.0)
    assert uba_factor(p, 1e-4) > 0.98  # WSD-like limit: stays near the max until the very end
    assert uba_factor(p, 0.5) >= cos - 1e-12
    assert uba_factor(p, 8.0) <= cos + 1e-12


def _torch_lrs(sched_factory, total):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = sched_factory(opt)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("total", [2, 7, 50, 333])
def test_cosine_matches_torch_cosine_annealing(total):
    cfg = ScheduleCfg(name="cosine", min_lr_ratio=0.1)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - 1, eta_min=0.05), total)
    ours = [lr_at(cfg, t, total, 0.5) for t in range(total)]
    assert ours == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("total", [3, 10, 100])
def test_linear_matches_torch_linear_lr(total):
    cfg = ScheduleCfg(name="linear", min_lr_ratio=0.2)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.2, total_iters=total - 1), total)
    assert [lr_at(cfg, t, total, 0.5) for t in range(total)] == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("total", [10, 97, 300])
def test_step_matches_torch_multistep(total):
    cfg = ScheduleCfg(name="step", milestones=[0.5, 0.75], gamma=0.1)
    ms = [math.ceil(m * (total - 1)) for m in cfg.milestones]
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, ms, gamma=0.1), total)
    assert [lr_at(cfg, t, total, 0.5) for t in range(total)] == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("total,pct", [(20, 0.3), (101, 0.25), (500, 0.4)])
def test_onecycle_matches_torch_onecycle(total, pct):
    cfg = ScheduleCfg(name="onecycle", pct_start=pct, div_factor=25.0, final_div_factor=1e4)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.5, total_steps=total, pct_start=pct, cycle_momentum=False), total)
    assert [lr_at(cfg, t, total, 0.5) for t in range(total)] == pytest.approx(ref, rel=1e-9)


def test_budget_schedule_is_a_resumable_torch_scheduler():
    cfg = ScheduleCfg(name="uba", phi=1.0, warmup_frac=0.1)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = BudgetSchedule(opt, cfg, lambda: 40)
    seen = []
    for _ in range(25):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = BudgetSchedule(opt2, cfg, lambda: 40)
    sched2.load_state_dict(state)
    for t in range(25, 40):
        assert opt2.param_groups[0]["lr"] == pytest.approx(lr_at(cfg, t, 40, 1.0))
        opt2.step()
        sched2.step()
    assert seen == pytest.approx([lr_at(cfg, t, 40, 1.0) for t in range(25)])


def test_unknown_total_holds_start_value():
    assert lr_at(ScheduleCfg(name="cosine"), 5, None, 0.3) == 0.3
    assert lr_at(ScheduleCfg(name="cosine", warmup_frac=0.1), 5, None, 0.3) == pytest.approx(0.03)


def test_onecycle_rejects_extra_warmup():
    with pytest.raises(ValueError, match="pct_start"):
        ScheduleCfg(name="onecycle", warmup_frac=0.1)
