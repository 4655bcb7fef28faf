"""Time and energy per phase: the clock, the split of a measured total, the store, and a real run."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from poise.carbon import CostTracker
from poise.phases import OTHER, PhaseClock, PhaseCost, split
from tests.conftest import RECIPES


def _burn(cpu_seconds: float) -> None:
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


def test_clock_counts_exclusive_wall_and_cpu_time_per_phase():
    clock = PhaseClock()
    with clock.phase("compute"):
        _burn(0.15)
        with clock.phase("io"):  # nested: its time is its own, not compute's
            time.sleep(0.15)
    time.sleep(0.05)  # outside every phase
    wall, cpu = clock.totals()
    assert set(wall) == {"compute", "io"}
    assert wall["io"] >= 0.15 and cpu["io"] < 0.05  # sleeping costs wall time, not CPU time
    assert 0.14 <= cpu["compute"] <= wall["compute"] + 0.01 and cpu["compute"] < 0.15 + 0.1  # io's time not in it
    clock.pause()  # a nested run measures its own phases
    with clock.phase("compute"):
        _burn(0.05)
    clock.resume()
    assert clock.totals()[1]["compute"] == pytest.approx(cpu["compute"], abs=1e-3)
    with pytest.raises(ValueError, match="other"):
        clock.phase(OTHER)


@given(st.dictionaries(st.sampled_from(["attack", "update", "io", "rollout"]),
                       st.tuples(st.floats(0, 10), st.floats(0, 10)), max_size=4),
       st.floats(0, 5), st.floats(0, 5), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
def test_split_adds_up_to_the_measured_totals(phases, extra_wall, extra_cpu, cpu_kwh, ram_kwh, gpu_kwh):
    wall = {k: w for k, (w, _) in phases.items()}
    cpu = {k: c for k, (_, c) in phases.items()}
    total_wall, total_cpu = sum(wall.values()) + extra_wall, sum(cpu.values()) + extra_cpu
    rows = split(wall, cpu, total_wall=total_wall, total_cpu=total_cpu, cpu_kwh=cpu_kwh, ram_kwh=ram_kwh,
                 gpu_kwh=gpu_kwh, intensity=50.0, label="estimated", method="m")
    assert rows[-1].phase == OTHER
    assert sum(r.wall_s for r in rows) == pytest.approx(total_wall)
    assert sum(r.cpu_s for r in rows) == pytest.approx(total_cpu)
    total = cpu_kwh + ram_kwh + gpu_kwh
    if total_wall > 0 and total_cpu > 0:
        assert sum(r.energy_kwh for r in rows) == pytest.approx(total, abs=1e-12)
        assert sum(r.co2_g for r in rows) == pytest.approx(total * 50.0, abs=1e-9)
        for r in rows:  # CPU energy follows CPU time, RAM and GPU energy follow wall time
            assert r.cpu_kwh == pytest.approx(cpu_kwh * (r.cpu_s / total_cpu), abs=1e-12)
            assert r.gpu_kwh == pytest.approx(gpu_kwh * (r.wall_s / total_wall), abs=1e-12)


def test_tracker_splits_its_measured_energy_over_phases():
    tracker = CostTracker("FRA").start()
    with tracker.phases.phase("busy"):
        _burn(0.4)
    with tracker.phases.phase("idle"):
        time.sleep(0.4)
    rec = tracker.stop()
    by = {p.phase: p for p in rec.phases}
    assert set(by) == {"busy", "idle", OTHER}
    assert sum(p.energy_kwh for p in rec.phases) == pytest.approx(rec.energy_kwh, rel=1e-9)
    assert sum(p.wall_s for p in rec.phases) == pytest.approx(rec.wall_s, rel=1e-9)
    assert by["busy"].cpu_kwh > 5 * by["idle"].cpu_kwh  # the CPU's energy goes where the CPU time went
    assert by["busy"].cpu_kwh / by["idle"].cpu_kwh == pytest.approx(by["busy"].cpu_s / by["idle"].cpu_s, rel=1e-6)
    assert by["busy"].ram_kwh / by["idle"].ram_kwh == pytest.approx(by["busy"].wall_s / by["idle"].wall_s, rel=1e-6)
    assert by["busy"].label in ("estimated", "measured") and "split by CPU time" in by["busy"].method


class _FakeZeus:
    """Stands in for Zeus/NVML, which needs an NVIDIA GPU: 250 W for every second of a window."""

    def __init__(self) -> None:
        self.t0: dict[str, float] = {}

    def begin_window(self, key: str) -> None:
        self.t0[key] = time.perf_counter()

    def end_window(self, key: str) -> SimpleNamespace:
        return SimpleNamespace(total_energy=250.0 * (time.perf_counter() - self.t0.pop(key)))


def test_gpu_energy_from_zeus_is_measured_and_split_by_wall_time(monkeypatch):
    import poise.carbon as carbon

    monkeypatch.setattr(carbon, "_zeus_monitor", lambda device: _FakeZeus())
    tracker = CostTracker("FRA", device="cuda:0", device_label="NVIDIA A100-SXM4-80GB").start()
    with tracker.phases.phase("rollout"):
        time.sleep(0.3)
    with tracker.phases.phase("learn"):
        time.sleep(0.1)
    rec = tracker.stop()
    by = {p.phase: p for p in rec.phases}
    gpu = sum(p.gpu_kwh for p in rec.phases)
    # the Zeus window opens before the run's clock starts and closes after it stops (CodeCarbon's start/stop)
    assert 250.0 * rec.wall_s / 3.6e6 <= gpu <= 250.0 * (rec.wall_s + 1.0) / 3.6e6
    assert by["rollout"].gpu_kwh / by["learn"].gpu_kwh == pytest.approx(by["rollout"].wall_s / by["learn"].wall_s,
                                                                        rel=1e-6)
    assert by["rollout"].gpu_kwh > 1.5 * by["learn"].gpu_kwh
    assert "GPU measured (NVML/Zeus)" in by["rollout"].method and by["rollout"].label != "estimated"
    assert "zeus" in rec.method


def test_store_sums_phases_over_segments(store):
    rid = store.create_run(kind="vision.erm", name="r", config={}, config_hash="h", seed=0)
    for seg in (0, 1):
        store.record_phases(rid, seg, [PhaseCost("attack", 2.0, 2.0, 1e-6, 1e-7, 0.0, 1e-3, "estimated", "m"),
                                       PhaseCost(OTHER, 1.0, 0.5, 1e-7, 1e-8, 0.0, 1e-4, "estimated", "m")])
    rows = store.phase_costs(rid)
    assert [r.phase for r in rows] == ["attack", OTHER]
    assert rows[0].wall_s == 4.0 and rows[0].cpu_kwh == pytest.approx(2e-6)
    store.delete_run(rid)
    assert store.phase_costs(rid) == []


def test_pgd_at_records_attack_and_update(runner, store):
    """The worked example: vision.pgd_at splits its run into attack, update and other."""
    from poise.recipes import load_recipe

    cfg = load_recipe(RECIPES / "vision" / "pgd-at-digits.toml", {
        "train.budget": {"steps": 12}, "train.attack.steps": 5, "model.width": 8, "train.checkpoint_every": 5,
        "eval": [{"name": "vision.clean_accuracy", "n": 60}]})
    rec = runner.run(cfg)
    assert rec.status == "done"
    rows = {r.phase: r for r in store.phase_costs(rec.id)}
    assert set(rows) == {"attack", "update", OTHER}
    cost = store.cost(rec.id)
    assert sum(r.wall_s for r in rows.values()) == pytest.approx(cost.wall_s, rel=1e-6)
    assert sum(r.energy_kwh for r in rows.values()) == pytest.approx(cost.energy_kwh, rel=1e-6)
    # five PGD steps (forward + backward each) cost more than one training forward + backward
    assert rows["attack"].cpu_s > rows["update"].cpu_s > 0
    assert rows["attack"].energy_kwh > rows["update"].energy_kwh > 0


def test_a_phase_costs_microseconds_per_step():
    """Entering and leaving a phase is a tiny fraction of even a small CPU training step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(5):
        step()
    t0 = time.thread_time()
    for _ in range(50):
        step()
    per_step = (time.thread_time() - t0) / 50
    clock = PhaseClock()
    phase = clock.phase("update")
    t0 = time.thread_time()
    for _ in range(5000):
        with clock.phase("attack"), phase:
            pass
    per_pair = (time.thread_time() - t0) / 10000
    assert per_pair < 0.02 * per_step, (per_pair, per_step)
