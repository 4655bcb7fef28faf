"""Costs: the tracker measures a workload; the estimator's arithmetic, data file and CLI."""

from __future__ import annotations

import json
import time
import tomllib
from importlib import resources

import pytest

from poise.carbon import CostTracker, estimate, gpu_table, grid_intensity, match_gpu, training_flops
from poise.errors import UserError


def _burn(cpu_seconds: float) -> None:
    """Spend this much CPU time (and so at least as much wall time, however loaded the machine)."""
    end = time.thread_time() + cpu_seconds
    x = 0
    while time.thread_time() < end:
        x += 1


def test_tracker_measures_time_cpu_memory_energy():
    tracker = CostTracker("DEU").start()
    t0 = time.perf_counter()
    _burn(0.6)
    blob = bytearray(200 * 2**20)  # resident memory the sampler must see
    blob[::4096] = b"x" * len(blob[::4096])
    time.sleep(0.3)
    tracker.pause()
    _burn(0.5)  # a nested run's work: left out
    tracker.resume()
    rec = tracker.stop()
    elapsed = time.perf_counter() - t0
    del blob
    assert 0.9 <= rec.wall_s <= elapsed - 0.5 + 0.05  # the paused half second is left out
    assert 0.55 <= rec.cpu_s <= rec.wall_s + 0.1
    assert rec.peak_rss_mb > 200
    assert rec.energy_kwh > 0
    assert rec.co2_g == pytest.approx(rec.energy_kwh * grid_intensity("DEU"))
    assert rec.method.startswith("codecarbon")


def test_pue_scales_energy_and_co2():
    a = CostTracker("FRA", pue=1.0).start()
    _burn(0.3)
    ra = a.stop()
    b = CostTracker("FRA", pue=2.0)
    b._kwh = ra.energy_kwh  # same measured energy, different data centre
    rb = b._record()
    assert rb.energy_kwh == pytest.approx(2 * ra.energy_kwh)
    assert rb.co2_g == pytest.approx(2 * ra.co2_g)


def test_grid_intensity_and_unknown_country():
    assert grid_intensity("FRA") < grid_intensity("POL")
    with pytest.raises(UserError, match="unknown grid country"):
        grid_intensity("ZZZ")


def test_gpu_table_has_a_source_for_every_gpu():
    raw = tomllib.loads((resources.files("poise") / "data" / "gpus.toml").read_text())
    assert len(raw["gpu"]) >= 8
    for name, g in raw["gpu"].items():
        assert g["source"] and g["tdp_w"] > 0 and g["peak_tflops"]["fp16"] > 0, name
    assert gpu_table()["A100-SXM"].tdp_w == 400 and gpu_table()["T4"].tdp_w == 70


def test_estimate_arithmetic():
    flops = training_flops(1e9, 1e10)  # 6e19
    (e,) = estimate(flops, ["A100-SXM"], precision="bf16", mfu=0.5, pue=1.1, intensity=400.0)
    seconds = 6e19 / (312e12 * 0.5)
    assert e.hours == pytest.approx(seconds / 3600)
    assert e.energy_kwh == pytest.approx(400 * seconds / 3.6e6 * 1.1)
    assert e.co2_kg == pytest.approx(e.energy_kwh * 0.4)


def test_a_faster_gpu_can_emit_less_despite_higher_power():
    """The Green-AI effect: time matters as much as watts (A100 at 400 W vs V100 at 300 W)."""
    by = {e.gpu: e for e in estimate(1e20, ["A100-SXM", "V100", "T4"], precision="fp16", intensity=300.0)}
    assert by["A100-SXM"].tdp_w > by["V100"].tdp_w
    assert by["A100-SXM"].co2_kg < by["V100"].co2_kg


def test_estimate_rejects_bad_input():
    with pytest.raises(UserError, match="unknown GPU"):
        estimate(1e18, ["Z80"])
    with pytest.raises(UserError, match="no bf16"):
        estimate(1e18, ["V100"], precision="bf16")
    with pytest.raises(UserError, match="MFU"):
        estimate(1e18, ["T4"], mfu=1.5)


def test_match_gpu_names():
    assert match_gpu("NVIDIA H100 80GB HBM3") == "H100-SXM"
    assert match_gpu("NVIDIA H100 PCIe") == "H100-PCIe"
    assert match_gpu("Tesla T4") == "T4"
    assert match_gpu("cpu") is None


def test_carbon_estimate_cli(cli):
    code, out, err = cli("--json", "carbon", "estimate", "--params", "7e9", "--tokens", "1e12", "--gpu",
                         "A100-SXM,H100-SXM,L4", "--country", "FRA")
    assert code == 0, err
    data = json.loads(out)
    assert data["flops"] == pytest.approx(4.2e22)
    assert data["intensity_g_per_kwh"] == pytest.approx(grid_intensity("FRA"))
    assert {e["gpu"] for e in data["estimates"]} == {"A100-SXM", "H100-SXM", "L4"}
    code, out, err = cli("carbon", "estimate", "--flops", "1e21")
    assert code == 0 and "A100-SXM" in out and "CO2" in out
    for bad in (["carbon", "estimate"], ["carbon", "estimate", "--flops", "-1"],
                ["carbon", "estimate", "--flops", "1e20", "--gpu", "Z80"],
                ["carbon", "estimate", "--flops", "1e20", "--country", "ZZZ"]):
        code, _, err = cli(*bad)
        assert code == 2 and len(err.strip().splitlines()) == 1, (bad, err)


def test_calibration_needs_a_gpu_run(cli, tmp_path):
    from tests.conftest import RECIPES

    code, out, _ = cli("--json", "run", str(RECIPES / "vision" / "erm-digits.toml"),
                       "--set", "train.budget={steps = 3}",
                       "--set", "model.width=4", "--set", 'eval=[{name = "vision.clean_accuracy"}]')
    rid = json.loads(out)["run"]
    code, _, err = cli("carbon", "estimate", "--flops", "1e20", "--calibrate", rid)
    assert code == 2 and "expected a GPU" in err
