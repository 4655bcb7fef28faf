"""What a job would cost on other GPUs: time, energy and CO2 from measured throughput, power, PUE and grid.

A job is a number of training FLOPs. Its time on a GPU is ``FLOPs / achieved FLOP/s``, where the
achieved rate comes, in order of preference, from

1. a user override for that GPU (``--throughput GPU=TFLOPS`` or ``--mfu GPU=F``, a fraction of the
   GPU's peak at the precision);
2. a run measured on that GPU (``--calibrate RUN``: the run's logged FLOPs over its wall time) —
   applied to that GPU only;
3. the data file (``data/gpus.toml``): published *measured* training throughput for that GPU,
   precision and workload class (items/s × FLOPs per item), each row with its source and date;
   rows marked derived are scaled from a same-architecture GPU and say so.

One utilisation for every GPU would make energy ∝ rated power / peak FLOP/s, which favours low-power
GPUs such as the T4; measured throughput differs by generation, precision and model size, and with it
the Green-AI effect appears (a faster A100 can use less energy than a T4 for the same transformer job).

Energy is ``n · P · t · PUE`` with ``P`` the rated board power (× ``power_fraction``) or a measured
average power; CO2 is energy × grid intensity. ``n`` GPUs are assumed to scale perfectly.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from poise.errors import UserError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "fp8")


@dataclass(frozen=True)
class GpuSpec:
    """A GPU's vendor figures: peak dense TFLOP/s by precision, rated power, memory, and their source."""

    name: str
    peak_tflops: dict[str, float]
    tdp_w: float
    memory_gb: float
    memory_bandwidth_gbs: float
    source: str
    uncertain: bool = False


@dataclass(frozen=True)
class Workload:
    """A measured workload class: the model, its unit, parameters and training FLOPs per item."""

    name: str
    model: str
    unit: str
    params: float
    flops_per_item: float
    flops_note: str


@dataclass(frozen=True)
class Throughput:
    """Achieved model TFLOP/s of one GPU at one precision on one workload class, and where it comes from."""

    gpu: str
    precision: str
    workload: str
    tflops: float
    status: str  # measured, derived, calibrated, user
    source: str


@dataclass(frozen=True)
class Claim:
    """An order a source reports: ``lower`` beats ``higher`` on ``what`` (time or energy)."""

    what: str
    workload: str
    precision: str
    lower: str
    higher: str
    source: str


@dataclass(frozen=True)
class GpuData:
    gpus: dict[str, GpuSpec]
    workloads: dict[str, Workload]
    sources: dict[str, dict[str, str]]
    rows: dict[tuple[str, str], dict[str, Any]]
    claims: list[Claim]


@cache
def gpu_data() -> GpuData:
    """The parsed data file ``poise/data/gpus.toml``."""
    raw = tomllib.loads((resources.files("poise") / "data" / "gpus.toml").read_text())
    gpus = {
        key: GpuSpec(key, {k: float(v) for k, v in g["peak_tflops"].items()}, float(g["tdp_w"]), float(g["memory_gb"]),
                     float(g["memory_bandwidth_gbs"]), g["source"], bool(g.get("uncertain", False)))
        for key, g in raw["gpu"].items()
    }
    workloads = {
        key: Workload(key, w["model"], w["unit"], float(w["params"]), float(w["flops_per_item"]), w["flops_note"])
        for key, w in raw["workload"].items()
    }
    rows = {(r["gpu"], r["precision"]): r for r in raw["throughput"]}
    claims = [Claim(c["what"], c["workload"], c["precision"], c["lower"], c["higher"], c["source"])
              for c in raw.get("claim", [])]
    return GpuData(gpus, workloads, raw["source"], rows, claims)


def gpu_table() -> dict[str, GpuSpec]:
    """Every GPU in the data file by key."""
    return gpu_data().gpus


def resolve_gpu(name: str, field: str = "--gpu") -> str:
    """The data file's key for ``name`` (case-insensitive; a family such as ``A100`` means its SXM card),
    or one line listing the valid GPUs."""
    table = gpu_table()
    wanted = name.strip().lower()
    key = next((k for k in table if k.lower() == wanted), None)
    if key is None:
        family = [k for k in table if k.lower().partition("-")[0] == wanted]
        key = next((k for k in family if k.endswith("-SXM")), family[0] if len(family) == 1 else None)
    if key is None:
        raise UserError(f"unknown GPU {name!r}; expected one of: {', '.join(table)} (or A100, H100, H200 for SXM)",
                        field=field)
    return key


def resolve_workload(name: str) -> str:
    known = gpu_data().workloads
    if name not in known:
        raise UserError(f"unknown workload class {name!r}; expected one of: {', '.join(known)}", field="--workload")
    return name


def workload_for_params(params: float) -> str:
    """The workload class whose parameter count is nearest ``params`` (on a log scale)."""
    known = gpu_data().workloads.values()
    return min(known, key=lambda w: abs(math.log(max(params, 1.0) / w.params))).name


def _row_precision(spec: GpuSpec, precision: str) -> str:
    """Which measured row serves ``precision``: bf16 uses the fp16 (mixed-precision) row where the GPU's
    bf16 and fp16 peaks are equal; tf32 uses the fp32 row (which runs TF32 on Ampere and later)."""
    if precision not in spec.peak_tflops:
        raise UserError(f"{spec.name} has no {precision} figure; expected one of: {', '.join(spec.peak_tflops)}",
                        field="--precision")
    if precision == "bf16" and spec.peak_tflops.get("fp16") == spec.peak_tflops["bf16"]:
        return "fp16"
    if precision == "tf32":
        return "fp32"
    return precision


def _source_line(row: dict[str, Any], workload: Workload, rate: float) -> str:
    src = gpu_data().sources[row["source"]]
    return (f"{src['cite']} ({src['date']}), row {row['row']!r}: "
            f"{rate:g} {workload.unit} of {workload.model}")


def table_throughput(gpu: str, precision: str, workload: str) -> Throughput:
    """Achieved TFLOP/s from the data file: measured, or derived from a same-architecture GPU's measurement."""
    data = gpu_data()
    key = resolve_gpu(gpu)
    spec = data.gpus[key]
    wl = data.workloads[resolve_workload(workload)]
    row_prec = _row_precision(spec, precision)
    row = data.rows.get((key, row_prec))
    if row is None:
        raise UserError(f"no measured {precision} training throughput for {key} in the GPU data file; give "
                        f"--throughput {key}=TFLOPS or --mfu {key}=FRACTION", field="--precision")
    if row.get("status") == "derived":
        ref_key = row["derived_from"]
        ref = data.rows[(ref_key, row_prec)]
        ref_spec = data.gpus[ref_key]
        peak = spec.peak_tflops[row_prec] / ref_spec.peak_tflops[row_prec]
        bw = spec.memory_bandwidth_gbs / ref_spec.memory_bandwidth_gbs
        scale = min(peak, bw)
        rate = float(ref["rates"][workload]) * scale
        source = (f"derived, not measured: {_source_line(ref, wl, float(ref['rates'][workload]))} × {scale:.3f} "
                  f"(min of peak ratio {peak:.3f} and memory-bandwidth ratio {bw:.3f}); {row.get('note', '')}")
        return Throughput(key, precision, workload, rate * wl.flops_per_item / 1e12, "derived", source.strip("; "))
    rate = float(row["rates"][workload])
    note = "" if row_prec == precision else f" (the {row_prec} row serves {precision})"
    return Throughput(key, precision, workload, rate * wl.flops_per_item / 1e12, "measured",
                      _source_line(row, wl, rate) + note)


# --------------------------------------------------------------------------- overrides


@dataclass(frozen=True)
class GpuOverride:
    """What replaces the data file for one GPU: achieved TFLOP/s or an MFU, and/or a measured power."""

    tflops: float | None = None
    mfu: float | None = None
    power_w: float | None = None
    label: str = "user"
    status: str = "user"  # user or calibrated


def _finite_positive(value: float, what: str, field: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"expected {what} > 0 and finite (got {value})", field=field)
    return value


def parse_per_gpu(text: str | None, field: str) -> dict[str, float]:
    """``"A100-SXM=150,T4=20"`` → ``{"A100-SXM": 150.0, "T4": 20.0}``; a bare ``"0.4"`` applies to every
    GPU (key ``*``)."""
    out: dict[str, float] = {}
    if not text:
        return out
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        gpu, sep, value = item.rpartition("=")
        key = resolve_gpu(gpu, field) if sep else "*"
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"expected GPU=NUMBER or NUMBER (got {item!r})", field=field) from None
        out[key] = _finite_positive(number, field.lstrip("-"), field)
    return out


def overrides_from_options(throughput: str | None, mfu: str | None) -> dict[str, GpuOverride]:
    """Per-GPU overrides from ``--throughput`` (achieved TFLOP/s) and ``--mfu`` (fraction of peak) options."""
    out: dict[str, GpuOverride] = {}
    for key, value in parse_per_gpu(mfu, "--mfu").items():
        if value > 1:
            raise UserError(f"expected 0 < MFU <= 1 (got {value})", field="--mfu")
        out[key] = GpuOverride(mfu=value, label=f"user MFU {value:g}")
    for key, value in parse_per_gpu(throughput, "--throughput").items():
        out[key] = GpuOverride(tflops=value, label=f"user {value:g} TFLOP/s")
    return out


# --------------------------------------------------------------------------- estimate


@dataclass(frozen=True)
class Estimate:
    gpu: str
    precision: str
    workload: str
    hours: float
    energy_kwh: float
    co2_kg: float
    achieved_tflops: float
    power_w: float
    pue: float
    intensity: float
    throughput_status: str
    throughput_source: str
    power_source: str
    peak_tflops: float
    tdp_w: float
    n_gpus: int = 1
    assumptions: list[str] = field(default_factory=list)


def estimate(flops: float, gpus: list[str], *, precision: str = "fp16", workload: str = "transformer-large",
             pue: float = 1.2, intensity: float | None = None, country: str | None = None,
             power_fraction: float = 1.0, n_gpus: int = 1, overrides: dict[str, GpuOverride] | None = None
             ) -> list[Estimate]:
    """Time, energy and CO2 of ``flops`` on each GPU: ``t = F / (n · achieved)``, ``E = n · P · t · PUE``."""
    from poise.carbon import DEFAULT_COUNTRY, grid_intensity

    if not math.isfinite(flops) or flops <= 0:
        raise UserError(f"expected FLOPs > 0 and finite (got {flops})", field="--flops")
    if not math.isfinite(pue) or pue < 1:
        raise UserError(f"expected PUE >= 1 and finite (got {pue})", field="--pue")
    if not math.isfinite(power_fraction) or not 0 < power_fraction <= 1.5:
        raise UserError(f"expected 0 < power fraction <= 1.5 (got {power_fraction})", field="--power-fraction")
    if n_gpus < 1:
        raise UserError(f"expected --n-gpus >= 1 (got {n_gpus})", field="--n-gpus")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; expected one of: {', '.join(PRECISIONS)}",
                        field="--precision")
    resolve_workload(workload)
    if intensity is None:
        intensity = grid_intensity(country or os.environ.get("POISE_COUNTRY", DEFAULT_COUNTRY))
    if not math.isfinite(intensity) or intensity < 0:
        raise UserError(f"expected grid intensity >= 0 and finite (got {intensity})", field="--intensity")
    overrides = overrides or {}
    table = gpu_table()
    out = []
    for g in gpus:
        key = resolve_gpu(g)
        spec = table[key]
        if precision not in spec.peak_tflops:
            raise UserError(f"{key} has no {precision} figure; expected one of: {', '.join(spec.peak_tflops)}",
                            field="--precision")
        peak = spec.peak_tflops[precision]
        ov = overrides.get(key) or overrides.get("*")
        if ov is not None and ov.tflops is not None:
            tp = Throughput(key, precision, workload, ov.tflops, ov.status, ov.label)
        elif ov is not None and ov.mfu is not None:
            tp = Throughput(key, precision, workload, ov.mfu * peak, "user", f"{ov.label} × peak {peak:g} TFLOP/s")
        else:
            tp = table_throughput(key, precision, workload)
        if ov is not None and ov.power_w is not None:
            power, power_src = ov.power_w, f"measured {ov.power_w:.0f} W ({ov.label})"
        else:
            power = spec.tdp_w * power_fraction
            power_src = (f"rated {spec.tdp_w:g} W" + (f" × {power_fraction:g}" if power_fraction != 1 else "")
                         + f" ({spec.source})")
        seconds = flops / (n_gpus * tp.tflops * 1e12)
        kwh = n_gpus * power * seconds / 3.6e6 * pue
        assumptions = [f"throughput {tp.tflops:.3g} TFLOP/s ({tp.status}): {tp.source}", f"power {power_src}",
                       f"PUE {pue:g}", f"grid {intensity:.0f} g CO2/kWh"]
        if n_gpus > 1:
            assumptions.append(f"{n_gpus} GPUs scale perfectly")
        out.append(Estimate(key, precision, workload, seconds / 3600, kwh, kwh * intensity / 1000, tp.tflops, power,
                            pue, intensity, tp.status, tp.source, power_src, peak, spec.tdp_w, n_gpus, assumptions))
    return out


def training_flops(params: float, tokens: float) -> float:
    """Dense transformer training FLOPs, ``6·N·D`` (forward + backward)."""
    return 6.0 * params * tokens


# --------------------------------------------------------------------------- measured runs


def match_gpu(device_name: str) -> str | None:
    """The GPU table key for a CUDA device name such as 'NVIDIA H100 80GB HBM3' (PCIe if it says so)."""
    name = device_name.upper().replace(" ", "")
    best = None
    for key in gpu_table():
        family, _, form = key.upper().partition("-")
        if family in name:
            if form and form in name:
                return key
            if best is None or form == "SXM":
                best = key
    return best


def run_pue(run: Any) -> float:
    """The PUE a run's recorded energy includes (its recipe's ``cost.pue``)."""
    return float(((run.config or {}).get("cost") or {}).get("pue", 1.0) or 1.0)


def calibrate_from_run(store: Any, run_id: str) -> tuple[str, GpuOverride]:
    """``(GPU key, override)`` measured by a finished GPU run that logged ``cost.flops``.

    The override holds the run's achieved TFLOP/s (FLOPs over wall time) and its average power with the
    run's own PUE taken out (the estimate applies the asked PUE once). Power is the GPU's own energy when
    the run recorded it per component (NVML/Zeus), else the run's whole measured energy (GPU and host).
    It applies to that GPU only: other GPUs keep their own measured throughput.
    """
    run = store.get_run(run_id)
    cost = store.cost(run.id)
    finals = store.final_metrics([run.id]).get(run.id, {})
    if "cost.flops" not in finals:
        raise UserError(f"run {run.id} logged no cost.flops; expected a run of a kind that counts its FLOPs",
                        where="--calibrate")
    key = match_gpu(cost.device or "")
    if key is None:
        raise UserError(f"run {run.id} ran on {cost.device or 'an unknown device'}; expected a GPU listed in the "
                        "GPU table", where="--calibrate")
    if cost.wall_s <= 0:
        raise UserError(f"run {run.id} recorded no wall time", where="--calibrate")
    tflops = finals["cost.flops"].value / cost.wall_s / 1e12
    gpu_kwh = _gpu_energy_kwh(store, run.id)
    kwh = gpu_kwh if gpu_kwh is not None else cost.energy_kwh
    power = kwh / run_pue(run) * 3.6e6 / cost.wall_s if kwh > 0 else None
    label = f"measured on {key}, run {run.id}" + ("" if gpu_kwh is not None else "; power includes the host")
    return key, GpuOverride(tflops=max(tflops, 1e-9), power_w=power, label=label, status="calibrated")


def _gpu_energy_kwh(store: Any, run_id: str) -> float | None:
    """The GPU's own energy of a run (PUE included) when its phases recorded components, else None."""
    phases = getattr(store, "phase_costs", None)
    if phases is None:
        return None
    rows = phases(run_id)
    if not rows or not any(r.gpu_kwh > 0 for r in rows):
        return None
    return sum(r.gpu_kwh for r in rows)


# --------------------------------------------------------------------------- the same job on other GPUs


@dataclass(frozen=True)
class Measured:
    """A finished run as measured: its FLOPs, device, cost and parameter count."""

    run_id: str
    kind: str
    flops: float
    device: str
    wall_s: float
    energy_kwh: float
    co2_g: float
    country: str
    pue: float
    params: float | None


def measured_run(store: Any, run_id: str) -> Measured:
    """What :func:`compare` projects: a finished run that logged ``cost.flops``."""
    run = store.get_run(run_id)
    if run.status != "done":
        raise UserError(f"run {run.id} has status {run.status}; expected a finished run", where="--run")
    finals = store.final_metrics([run.id]).get(run.id, {})
    if "cost.flops" not in finals or finals["cost.flops"].value <= 0:
        raise UserError(f"run {run.id} ({run.kind}) logged no cost.flops; expected a run of a kind that wraps its "
                        "step in ctx.count_flops()", where="--run")
    cost = store.cost(run.id)
    params = None
    for a in store.artifacts(run.id):
        if a.name == "model" and a.media == "safetensors":
            from safetensors import safe_open

            with safe_open(str(a.path), framework="pt") as f:
                params = float(sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()))  # noqa: SIM118 - safe_open is no dict
    return Measured(run.id, run.kind, finals["cost.flops"].value, cost.device or "?", cost.wall_s, cost.energy_kwh,
                    cost.co2_g, cost.country or "?", run_pue(run), params)


def workload_for_run(m: Measured) -> tuple[str, str]:
    """(workload class, why): image kinds are the CNN class; language kinds the transformer class nearest
    their parameter count; anything else the CNN class (the smallest measured one)."""
    domain = m.kind.split(".")[0]
    if domain in ("vision", "restoration"):
        return "cnn", f"{domain} kind: convolutional network"
    if domain in ("language", "merging"):
        if m.params:
            cls = workload_for_params(m.params)
            if cls != "cnn":
                return cls, f"{domain} kind, {m.params:.3g} parameters: nearest transformer class"
        return "transformer-base", f"{domain} kind: smallest transformer class"
    return "cnn", f"{domain} kind: no measured class of its own, the smallest measured class"


def compare(store: Any, run_id: str, gpus: list[str], countries: list[str], *, precision: str = "fp16",
            pue: float = 1.2, workload: str | None = None, overrides: dict[str, GpuOverride] | None = None
            ) -> tuple[Measured, list[tuple[str, Estimate]]]:
    """The measured run, and ``(country, estimate)`` for the same job's FLOPs on each GPU and grid."""
    from poise.carbon import grid_intensity

    m = measured_run(store, run_id)
    if workload is None:
        workload, why = workload_for_run(m)
    else:
        why = "asked for"
    resolve_workload(workload)
    keys = [resolve_gpu(g) for g in gpus]
    rows = []
    for country in countries:
        grid = grid_intensity(country)
        for e in estimate(m.flops, keys, precision=precision, workload=workload, pue=pue, intensity=grid,
                          overrides=overrides):
            e.assumptions.insert(0, f"workload class {workload} ({why}); the job's {m.flops:.3g} FLOPs as measured "
                                    f"by run {m.run_id}; small models reach less of these throughputs, so "
                                    "projected times are lower bounds")
            e.assumptions.append(f"grid {country}")
            rows.append((country, e))
    return m, rows
