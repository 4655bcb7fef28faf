"""Costs of every run (time, CPU time, peak memory, energy, CO2) and an estimator for planned jobs.

Measurement: :class:`CostTracker` wraps a run from outside. Energy comes from CodeCarbon's offline
tracker (one per process and grid country, in ``process`` tracking mode, one CodeCarbon *task* per
run segment); on NVIDIA GPUs with ``zeus`` installed, GPU energy comes from Zeus/NVML instead of
CodeCarbon's GPU reading. Without hardware energy counters (no RAPL, no NVML) CodeCarbon's CPU power
is an *estimate* from the CPU's rated power and its load — the tracker's ``method`` string says
which, and reports show it. CO2 = energy × PUE × the grid's carbon intensity (CodeCarbon's per-country
energy-mix data, g/kWh). Peak memory is the kernel's exact resident-set high-water mark for the run
on Linux (reset at the run's start), combined with a sampled RSS of child processes; elsewhere the
largest RSS sampled every 0.1 s. Each record also splits the segment's energy over the phases a kind
marks with ``ctx.phase`` (:mod:`poise.phases`).

Projections of a job onto other GPUs ("what would this cost on an A100 / H100 / T4 …") live in
:mod:`poise.projection`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import threading
import time
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import psutil

from poise.errors import UserError
from poise.phases import PhaseClock, component_labels, split
from poise.store import CostRecord

DEFAULT_COUNTRY = "USA"
# CodeCarbon reads power every this many seconds (and at every task stop): 5 s keeps its cost ~0.1%.
POWER_INTERVAL_S = 5


# --------------------------------------------------------------------------- grid intensity


@cache
def _energy_mix() -> dict[str, Any]:
    path = resources.files("codecarbon") / "data" / "private_infra" / "global_energy_mix.json"
    return json.loads(path.read_text())


def grid_intensity(country: str) -> float:
    """Carbon intensity of a country's grid in g CO2eq / kWh (CodeCarbon's offline data)."""
    mix = _energy_mix()
    if country not in mix:
        close = ", ".join(sorted(k for k in mix if k[:1] == str(country)[:1]))
        raise UserError(f"unknown grid country {country!r}; expected one of the {len(mix)} ISO alpha-3 codes of "
                        f"CodeCarbon's data, e.g. {close or 'USA, FRA, DEU'}", field="country")
    return float(mix[country]["carbon_intensity"])


# --------------------------------------------------------------------------- energy backends


_TRACKERS: dict[str, Any] = {}


def _codecarbon(country: str) -> Any:
    """One offline CodeCarbon tracker per process and country; runs are tasks on it."""
    if country not in _TRACKERS:
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        from codecarbon import OfflineEmissionsTracker

        _TRACKERS[country] = OfflineEmissionsTracker(
            country_iso_code=country, save_to_file=False, log_level="error", measure_power_secs=POWER_INTERVAL_S,
            allow_multiple_runs=True, tracking_mode="process",
        )
    return _TRACKERS[country]


_MEASURED_CPU_MODES = ("intel_rapl", "intel_power_gadget", "apple_powermetrics", "windows_emi")


def _cpu_measured(tracker: Any) -> bool:
    """Whether CodeCarbon reads the CPU's energy from hardware counters (RAPL and kin) rather than estimating it."""
    try:
        return any(type(h).__name__ == "CPU" and getattr(h, "_mode", "") in _MEASURED_CPU_MODES
                   for h in tracker._hardware)
    except Exception:  # noqa: BLE001 - a description only
        return False


def _codecarbon_gpu(tracker: Any) -> bool:
    try:
        return any(type(h).__name__ == "GPU" for h in tracker._hardware)
    except Exception:  # noqa: BLE001 - a description only
        return False


def _codecarbon_method(tracker: Any) -> str:
    try:
        parts = [str(h) for h in tracker._hardware]  # e.g. "CPU(Cpu Load)", "RAM(...)"
    except Exception:  # noqa: BLE001 - a description only
        parts = []
    return "codecarbon " + (", ".join(parts) if parts else "estimate")


def _zeus_monitor(device: str) -> Any | None:
    """A Zeus monitor for the run's CUDA device when zeus is installed, else None."""
    if not device.startswith("cuda"):
        return None
    try:
        from zeus.monitor import ZeusMonitor  # type: ignore[import-not-found]
    except ImportError:
        return None
    index = int(device.split(":")[1]) if ":" in device else 0
    try:
        return ZeusMonitor(gpu_indices=[index])
    except Exception:  # noqa: BLE001 - NVML unavailable: fall back to CodeCarbon
        return None


# --------------------------------------------------------------------------- measurement


_HWM = Path("/proc/self/status")
_ACTIVE_SAMPLERS: list[_RssSampler] = []


def _vm_hwm() -> int:
    """Peak RSS in bytes since the last reset (Linux ``VmHWM``), or 0 where it is not available."""
    try:
        for line in _HWM.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark so ``VmHWM`` covers this run only (Linux >= 4.0)."""
    for sampler in _ACTIVE_SAMPLERS:  # enclosing runs keep the peak they have seen so far
        sampler.peak = max(sampler.peak, _vm_hwm())
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class _RssSampler(threading.Thread):
    """Peak memory of the run: the kernel's exact high-water mark where Linux gives it, plus a cheap
    sampler (own RSS every ``interval`` s, ~20 us a read; child processes every ``children_every``
    samples, since listing them scans /proc and costs milliseconds)."""

    def __init__(self, interval: float = 0.1, children_every: int = 20):
        super().__init__(daemon=True, name="poise-rss")
        self.interval = interval
        self.children_every = children_every
        self.peak = 0
        self._children_rss = 0
        self._n = 0
        self._stop_evt = threading.Event()
        self._proc = psutil.Process()
        self._hwm = False

    def start(self) -> None:
        self._hwm = _reset_hwm()
        _ACTIVE_SAMPLERS.append(self)
        super().start()

    def sample(self) -> int:
        try:
            rss = self._proc.memory_info().rss
            if self._n % self.children_every == 0:
                self._children_rss = 0
                for child in self._proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        self._children_rss += child.memory_info().rss
            self._n += 1
            rss += self._children_rss
        except psutil.Error:
            return self.peak
        self.peak = max(self.peak, rss)
        return rss

    def run(self) -> None:
        while not self._stop_evt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop_evt.set()
        self._n = 0  # a final full sample, children included
        self.sample()
        if self._hwm:
            self.peak = max(self.peak, _vm_hwm() + self._children_rss)
        if self in _ACTIVE_SAMPLERS:
            _ACTIVE_SAMPLERS.remove(self)


class CostTracker:
    """Measures one run segment; ``pause``/``resume`` leave out nested runs (which record their own cost).

    ``phases`` is the segment's :class:`~poise.phases.PhaseClock`; every record carries the measured
    energy split over the phases (see :mod:`poise.phases`).
    """

    def __init__(self, country: str = DEFAULT_COUNTRY, *, pue: float = 1.0, device: str = "cpu",
                 track_energy: bool = True, device_label: str | None = None):
        self.country = country
        self.device_label = device_label or device
        self.intensity = grid_intensity(country)
        self.pue = pue
        self.device = device
        self.track_energy = track_energy
        self._wall = 0.0
        self._cpu = 0.0
        self._kwh = 0.0
        self._parts = {"cpu": 0.0, "ram": 0.0, "gpu": 0.0}  # kWh by component, before PUE
        self._running = False
        self.phases = PhaseClock()
        self._sampler = _RssSampler()
        self._cc: Any = None
        self._zeus: Any = None
        self._zeus_window = f"poise-{id(self)}"
        self.method = "not measured"
    def phase(self, name: str) -> Any:
        """Charge the time inside ``with tracker.phase(name):`` to phase ``name`` (see :mod:`poise.phases`)."""
        return self.phases.phase(name)

    def _begin(self) -> None:
        if self.track_energy:  # before the clocks start: CodeCarbon's first start probes the hardware
            self._cc.start_task()
            if self._zeus is not None:
                self._zeus.begin_window(self._zeus_window)
        self._t0 = time.perf_counter()
        self._c0 = time.process_time() + _children_cpu()
        self._running = True

    def _end(self) -> None:
        self._wall += time.perf_counter() - self._t0
        self._cpu += time.process_time() + _children_cpu() - self._c0
        if self.track_energy:
            data = self._cc.stop_task()
            parts = {"cpu": 0.0, "ram": 0.0, "gpu": 0.0}
            if data is not None:
                parts["cpu"], parts["ram"] = float(data.cpu_energy), float(data.ram_energy)
                if self._zeus is None:
                    parts["gpu"] = float(data.gpu_energy)
            if self._zeus is not None:
                joules = self._zeus.end_window(self._zeus_window).total_energy
                parts["gpu"] = float(joules) / 3.6e6
            for k, v in parts.items():
                self._parts[k] += v
            self._kwh += sum(parts.values())
        self._running = False

    def start(self) -> CostTracker:
        if self.track_energy:
            self._cc = _codecarbon(self.country)
            self._zeus = _zeus_monitor(self.device)
        self._sampler.start()
        self._begin()
        if self.track_energy:
            self.method = _codecarbon_method(self._cc) + (" + zeus GPU" if self._zeus is not None else "")
        return self

    def pause(self) -> None:
        if self._running:
            self._end()
            self.phases.pause()

    def resume(self) -> None:
        if not self._running:
            self.phases.resume()
            self._begin()

    def snapshot(self) -> CostRecord:
        """Cost so far (closes and reopens the energy window, ~1 ms)."""
        was_running = self._running
        if was_running:
            self._end()
            self._begin()
        return self._record()

    def stop(self) -> CostRecord:
        self.pause()
        self._sampler.stop()
        return self._record()

    def _record(self) -> CostRecord:
        kwh = self._kwh * self.pue
        return CostRecord(
            wall_s=self._wall, cpu_s=self._cpu, peak_rss_mb=self._sampler.peak / 2**20, energy_kwh=kwh,
            co2_g=kwh * self.intensity, method=self.method, country=self.country, device=self.device_label,
            phases=self._phase_split(),
        )

    def _phase_split(self) -> list[Any]:
        """This segment's measured energy split over its phases (CPU by CPU time, RAM and GPU by wall time)."""
        wall, cpu = self.phases.totals()
        if not self.track_energy or self._cc is None:
            label, method = "not measured", "energy not tracked"
        else:
            gpu_measured = self._zeus is not None or _codecarbon_gpu(self._cc)
            label, method = component_labels(_cpu_measured(self._cc), gpu_measured, self.device.startswith("cuda"))
        p = self.pue
        return split(wall, cpu, total_wall=self._wall, total_cpu=self._cpu, cpu_kwh=self._parts["cpu"] * p,
                     ram_kwh=self._parts["ram"] * p, gpu_kwh=self._parts["gpu"] * p, intensity=self.intensity,
                     label=label, method=method)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime
