"""Costs: the tracker measures a workload; the estimator's arithmetic, data file and CLI."""

from __future__ import annotations

import json
import time
import tomllib
from importlib import resources

import pytest

from poise.carbon import CostTracker, grid_intensity
from poise.errors import UserError
from poise.projection import (
    calibrate_from_run,
    estimate,
    gpu_data,
    gpu_table,
    match_gpu,
    overrides_from_options,
    table_throughput,
    training_flops,
)


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
    rated = {"A100-SXM": 400, "A100-PCIe": 250, "V100": 300, "T4": 70, "RTX3090": 350, "H100-SXM": 700, "L4": 72}
    assert {k: gpu_table()[k].tdp_w for k in rated} == rated
    data = gpu_data()
    for (gpu, precision), row in data.rows.items():  # every throughput row: a cited source or a measured reference
        assert gpu in data.gpus and precision in data.gpus[gpu].peak_tflops, (gpu, precision)
        if row.get("status") == "derived":
            assert (row["derived_from"], precision) in data.rows and "derived" not in str(
                data.rows[(row["derived_from"], precision)].get("status", "")), row
        else:
            src = data.sources[row["source"]]
            assert src["title"] and src["cite"] and src["publisher"] and src["date"] and src["measured"], row
            assert row["row"] and set(row["rates"]) == set(data.workloads), row


def test_measured_throughput_is_rate_times_flops_per_item():
    """A100-SXM fp16 BERT-large: the cited 152 sequences/s × FLOPs per sequence."""
    tp = table_throughput("A100-SXM", "fp16", "transformer-large")
    assert tp.status == "measured" and "A100 80GB SXM4" in tp.source and "152" in tp.source
    assert tp.tflops == pytest.approx(152 * gpu_data().workloads["transformer-large"].flops_per_item / 1e12)
    assert tp.tflops < gpu_table()["A100-SXM"].peak_tflops["fp16"]  # measured, so below the peak
    bf16 = table_throughput("A100-SXM", "bf16", "transformer-large")
    assert bf16.tflops == tp.tflops and "fp16 row serves bf16" in bf16.source
    t4 = table_throughput("T4", "fp16", "transformer-large")
    assert t4.status == "derived" and t4.source.startswith("derived, not measured")


def test_estimate_arithmetic():
    flops = training_flops(1e9, 1e10)  # 6e19
    (e,) = estimate(flops, ["A100-SXM"], precision="bf16", pue=1.1, intensity=400.0,
                    overrides=overrides_from_options(None, "A100-SXM=0.5"))
    seconds = 6e19 / (312e12 * 0.5)
    assert e.hours == pytest.approx(seconds / 3600)
    assert e.energy_kwh == pytest.approx(400 * seconds / 3.6e6 * 1.1)
    assert e.co2_kg == pytest.approx(e.energy_kwh * 0.4)
    (m,) = estimate(flops, ["A100-SXM"], precision="fp16", workload="cnn", pue=1.0, intensity=400.0)
    assert m.hours == pytest.approx(flops / (table_throughput("A100-SXM", "fp16", "cnn").tflops * 1e12) / 3600)


def test_one_mfu_for_every_gpu_is_gone_and_the_a100_beats_the_t4():
    """The issue's case: 1e21 FLOPs fp16. At one MFU the T4 came out greener (748 vs 890 kWh); measured
    throughput reverses it for a transformer job, the Green-AI seed's effect."""
    by = {e.gpu: e for e in estimate(1e21, ["A100-SXM", "T4"], precision="fp16", workload="transformer-large",
                                     intensity=300.0)}
    assert by["A100-SXM"].power_w > by["T4"].power_w
    assert by["A100-SXM"].co2_kg < by["T4"].co2_kg
    peak_ratio = gpu_table()["A100-SXM"].peak_tflops["fp16"] / gpu_table()["T4"].peak_tflops["fp16"]
    assert by["A100-SXM"].achieved_tflops / by["T4"].achieved_tflops > peak_ratio  # not one MFU
    assert by["A100-SXM"].achieved_tflops / gpu_table()["A100-SXM"].peak_tflops["fp16"] != pytest.approx(
        by["T4"].achieved_tflops / gpu_table()["T4"].peak_tflops["fp16"], rel=0.05)


@pytest.mark.parametrize("claim", gpu_data().claims, ids=lambda c: f"{c.what}:{c.workload}:{c.lower}<{c.higher}")
def test_every_order_the_data_file_claims_holds(claim):
    rows = {e.gpu: e for e in estimate(1e20, [claim.lower, claim.higher], precision=claim.precision,
                                       workload=claim.workload, intensity=300.0)}
    attr = "hours" if claim.what == "time" else "energy_kwh"
    assert getattr(rows[claim.lower], attr) < getattr(rows[claim.higher], attr), claim


def test_estimate_rejects_bad_input():
    with pytest.raises(UserError, match="unknown GPU"):
        estimate(1e18, ["Z80"])
    with pytest.raises(UserError, match="no bf16"):
        estimate(1e18, ["V100"], precision="bf16")
    with pytest.raises(UserError, match="MFU"):
        overrides_from_options(None, "T4=1.5")
    with pytest.raises(UserError, match="no measured fp8"):
        estimate(1e18, ["H100-SXM"], precision="fp8")
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(UserError):
            estimate(bad, ["T4"])
        with pytest.raises(UserError):
            overrides_from_options(f"T4={bad}", None)


def _gpu_run(store, *, pue: float, gpu_name: str, flops: float, wall_s: float, kwh: float) -> str:
    """A finished run as a GPU run records it: cost (energy includes the recipe's PUE) and cost.flops."""
    from poise.store import CostRecord

    rid = store.create_run(kind="vision.erm", name="gpu-run", config={"cost": {"pue": pue}}, config_hash="h", seed=0)
    store.record_cost(rid, 0, CostRecord(wall_s=wall_s, cpu_s=wall_s, energy_kwh=kwh, co2_g=kwh * 50,
                                         method="codecarbon + zeus GPU", country="FRA", device=gpu_name))
    store.log_metrics(rid, [("flops", "cost", "min", 10, flops)])
    store.set_status(rid, "done")
    return rid


def test_calibration_applies_pue_once_and_only_to_its_gpu(store):
    """A run measured on an A100 at PUE 1.5, projected back onto the A100 at PUE 1.5, gives its own time
    and energy (the old code multiplied by PUE twice); the T4 keeps its own measured throughput."""
    rid = _gpu_run(store, pue=1.5, gpu_name="NVIDIA A100-SXM4-80GB", flops=3.6e16, wall_s=1200.0, kwh=0.15)
    key, ov = calibrate_from_run(store, rid)
    assert key == "A100-SXM" and ov.status == "calibrated"
    assert ov.power_w == pytest.approx(0.15 / 1.5 * 3.6e6 / 1200.0)
    by = {e.gpu: e for e in estimate(3.6e16, ["A100-SXM", "T4"], pue=1.5, intensity=100.0, overrides={key: ov})}
    assert by["A100-SXM"].hours * 3600 == pytest.approx(1200.0)
    assert by["A100-SXM"].energy_kwh == pytest.approx(0.15)
    assert by["T4"].achieved_tflops == pytest.approx(table_throughput("T4", "fp16", "transformer-large").tflops)
    assert by["T4"].throughput_status == "derived"


def test_calibration_via_cli_changes_only_the_measured_gpu(cli, tmp_path):
    from poise.store import Store

    rid = _gpu_run(Store(root=tmp_path / ".poise"), pue=1.2, gpu_name="NVIDIA A100-SXM4-80GB", flops=1e17,
                   wall_s=100.0, kwh=0.01)
    code, out, err = cli("--json", "carbon", "estimate", "--flops", "1e20", "--gpu", "A100-SXM,V100", "--pue", "1.2",
                         "--calibrate", rid)
    assert code == 0, err
    by = {e["gpu"]: e for e in json.loads(out)["estimates"]}
    assert by["A100-SXM"]["achieved_tflops"] == pytest.approx(1e17 / 100.0 / 1e12)
    assert by["A100-SXM"]["throughput_status"] == "calibrated"
    assert by["V100"]["throughput_status"] == "measured"
    assert by["V100"]["achieved_tflops"] == pytest.approx(table_throughput("V100", "fp16", "transformer-large").tflops)


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
                ["carbon", "estimate", "--flops", "nan"], ["carbon", "estimate", "--flops", "1e20", "--mfu", "T4=2"],
                ["carbon", "estimate", "--flops", "1e20", "--throughput", "Z80=3"],
                ["carbon", "estimate", "--flops", "1e20", "--workload", "rnn"],
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


def test_compare_projects_a_measured_run_on_each_gpu_and_grid(store):
    from poise.projection import compare

    rid = _gpu_run(store, pue=1.0, gpu_name="cpu", flops=2e15, wall_s=50.0, kwh=1e-3)
    measured, rows = compare(store, rid, ["A100", "T4"], ["FRA", "POL"], pue=1.1)
    assert measured.flops == 2e15 and measured.kind == "vision.erm"
    assert [(c, e.gpu) for c, e in rows] == [("FRA", "A100-SXM"), ("FRA", "T4"), ("POL", "A100-SXM"), ("POL", "T4")]
    for country, e in rows:
        tp = table_throughput(e.gpu, "fp16", "cnn")  # a vision run: the CNN class
        assert e.hours * 3600 == pytest.approx(2e15 / (tp.tflops * 1e12))
        assert e.energy_kwh == pytest.approx(e.power_w * e.hours / 1000 * 1.1)
        assert e.co2_kg == pytest.approx(e.energy_kwh * grid_intensity(country) / 1000)
        text = " ".join(e.assumptions)
        assert "workload class cnn" in text and "throughput" in text and "PUE 1.1" in text and country in text
        assert "g CO2/kWh" in text and ("Lambda" in text)


def test_carbon_compare_cli(cli, tmp_path):
    from poise.store import Store

    store = Store(root=tmp_path / ".poise")
    rid = _gpu_run(store, pue=1.0, gpu_name="cpu", flops=2e15, wall_s=50.0, kwh=1e-3)
    code, out, err = cli("--json", "carbon", "compare", "--run", rid, "--gpu", "A100,H100,V100,T4,L4,RTX3090",
                         "--country", "FRA,USA")
    assert code == 0, err
    data = json.loads(out)
    assert len(data["rows"]) == 12 and {r["gpu"] for r in data["rows"]} >= {"A100-SXM", "H100-SXM", "RTX3090"}
    assert all(r["assumptions"] and r["throughput_source"] for r in data["rows"])
    code, out, err = cli("carbon", "compare", "--run", rid, "--gpu", "A100,T4")
    assert code == 0 and "T4" in out and "derived" in out
    no_flops = store.create_run(kind="control.ppo", name="x", config={}, config_hash="x", seed=0)
    store.set_status(no_flops, "done")
    for bad, expect in ((["--run", rid, "--gpu", "Z80"], "expected one of"),
                        (["--run", rid, "--country", "ZZZ"], "unknown grid country"),
                        (["--run", rid, "--precision", "int4"], "unknown precision"),
                        (["--run", rid, "--workload", "rnn"], "expected one of"),
                        (["--run", no_flops], "no cost.flops"),
                        ([], "expected a RECIPE or --run")):
        code, _, err = cli("carbon", "compare", *bad)
        assert code == 2 and len(err.strip().splitlines()) == 1 and expect in err, (bad, err)


def test_carbon_compare_trains_a_recipe_once(cli):
    from tests.conftest import RECIPES

    args = ("--json", "carbon", "compare", RECIPES / "vision" / "erm-digits.toml", "--set",
            "train.budget={steps = 3}", "--set", "model.width=4", "--set", 'eval=[{name = "vision.clean_accuracy"}]',
            "--gpu", "A100,T4")
    code, out, err = cli(*args)
    assert code == 0, err
    first = json.loads(out)["measured"]["run_id"]
    code, out, err = cli(*args)
    assert code == 0 and json.loads(out)["measured"]["run_id"] == first  # the finished run is reused
