"""Time and energy per phase of a run: ``with ctx.phase("attack"): ...`` in a kind's loop.

A kind names the parts of its step (free-form: attack/update for adversarial training, rollout/learn
for RL, generate/reward/update for language RL, io/compute for merges). :class:`PhaseClock` adds up
the wall time and the process CPU time spent inside each phase — two clock reads on entry and two on
exit, no tracker started or stopped, so the cost per phase is a few microseconds. Phases may nest; a
nested phase's time is its own, not its parent's. Time outside every phase is the phase ``other``.

Energy is not measured per phase: the run's *measured total* is split across phases (:func:`split`):

* CPU energy by each phase's share of the run's CPU time (process CPU time, measured per phase);
* RAM and GPU energy by each phase's share of the run's wall time.

Each figure carries the label of the total it comes from: ``measured`` when CodeCarbon read hardware
counters (RAPL) for the CPU and NVML/Zeus for the GPU, ``estimated`` when the CPU power is CodeCarbon's
estimate from rated power and load (RAM power is always CodeCarbon's estimate), ``partly measured``
for a mix. The store keeps one row per run segment and phase (``Store.record_phases``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

OTHER = "other"


@dataclass
class PhaseCost:
    """Time and energy of one phase of a run (energies in kWh, PUE included; CO2 in grams)."""

    phase: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    cpu_kwh: float = 0.0
    ram_kwh: float = 0.0
    gpu_kwh: float = 0.0
    co2_g: float = 0.0
    label: str = "not measured"
    method: str = ""

    @property
    def energy_kwh(self) -> float:
        return self.cpu_kwh + self.ram_kwh + self.gpu_kwh


class _Phase:
    """A reusable context manager for one phase name (no allocation per use)."""

    __slots__ = ("clock", "name")

    def __init__(self, clock: PhaseClock, name: str):
        self.clock = clock
        self.name = name

    def __enter__(self) -> None:
        self.clock.push(self.name)

    def __exit__(self, *exc: Any) -> None:
        self.clock.pop()


class PhaseClock:
    """Wall and CPU seconds spent inside each named phase, exclusive of nested phases.

    Example::

        clock = PhaseClock()
        with clock.phase("attack"):
            ...
        clock.wall["attack"], clock.cpu["attack"]
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._stack: list[str] = []
        self._phases: dict[str, _Phase] = {}
        self._running = True
        self._t = time.perf_counter()
        self._c = time.process_time()

    def phase(self, name: str) -> _Phase:
        """The context manager for phase ``name``."""
        found = self._phases.get(name)
        if found is None:
            if not isinstance(name, str) or not name or name == OTHER:
                raise ValueError(f"a phase needs a non-empty name other than {OTHER!r} (got {name!r})")
            found = self._phases[name] = _Phase(self, name)
        return found

    def _charge(self) -> None:
        t, c = time.perf_counter(), time.process_time()
        if self._stack and self._running:
            name = self._stack[-1]
            self.wall[name] = self.wall.get(name, 0.0) + (t - self._t)
            self.cpu[name] = self.cpu.get(name, 0.0) + (c - self._c)
        self._t, self._c = t, c

    def push(self, name: str) -> None:
        self._charge()
        self._stack.append(name)

    def pop(self) -> None:
        self._charge()
        self._stack.pop()

    def pause(self) -> None:
        """Stop charging (a nested run is measuring its own phases)."""
        self._charge()
        self._running = False

    def resume(self) -> None:
        self._t, self._c = time.perf_counter(), time.process_time()
        self._running = True

    def totals(self) -> tuple[dict[str, float], dict[str, float]]:
        """(wall, cpu) seconds per phase so far, the open phase included."""
        if self._running:
            self._charge()
        return dict(self.wall), dict(self.cpu)


def component_labels(cpu_measured: bool, gpu_measured: bool, gpu_used: bool) -> tuple[str, str]:
    """(label, method) for phase rows of a run whose CPU/GPU energies were measured or estimated."""
    cpu = "CPU measured (RAPL)" if cpu_measured else "CPU estimated (rated power x load)"
    parts = [f"{cpu}, split by CPU time", "RAM estimated, split by wall time"]
    measured = [cpu_measured]
    if gpu_used:
        parts.append(f"GPU {'measured (NVML/Zeus)' if gpu_measured else 'estimated'}, split by wall time")
        measured.append(gpu_measured)
    label = "measured" if all(measured) else "estimated" if not any(measured) else "partly measured"
    return label, "; ".join(parts)


def split(wall: dict[str, float], cpu: dict[str, float], *, total_wall: float, total_cpu: float,
          cpu_kwh: float, ram_kwh: float, gpu_kwh: float, intensity: float, label: str, method: str
          ) -> list[PhaseCost]:
    """Split a run segment's measured energy over its phases (CPU by CPU time, RAM and GPU by wall time).

    Time outside every phase, and any energy it implies, goes to the phase ``other``; the rows add up
    to the totals exactly.
    """
    names = [n for n in wall if wall[n] > 0 or cpu.get(n, 0.0) > 0]
    rows = []
    for n in names:
        rows.append(PhaseCost(n, wall[n], cpu.get(n, 0.0)))
    other_wall = max(total_wall - sum(r.wall_s for r in rows), 0.0)
    other_cpu = max(total_cpu - sum(r.cpu_s for r in rows), 0.0)
    rows.append(PhaseCost(OTHER, other_wall, other_cpu))
    wall_sum = sum(r.wall_s for r in rows)
    cpu_sum = sum(r.cpu_s for r in rows)
    for r in rows:
        w = r.wall_s / wall_sum if wall_sum > 0 else 0.0
        c = r.cpu_s / cpu_sum if cpu_sum > 0 else w
        r.cpu_kwh, r.ram_kwh, r.gpu_kwh = cpu_kwh * c, ram_kwh * w, gpu_kwh * w
        r.co2_g = r.energy_kwh * intensity
        r.label, r.method = label, method
    return rows


def combine(rows: Iterable[PhaseCost]) -> list[PhaseCost]:
    """Sum rows of the same phase (a resumed run has one set per segment); ``other`` last."""
    out: dict[str, PhaseCost] = {}
    for r in rows:
        cur = out.setdefault(r.phase, PhaseCost(r.phase, label=r.label, method=r.method))
        cur.wall_s += r.wall_s
        cur.cpu_s += r.cpu_s
        cur.cpu_kwh += r.cpu_kwh
        cur.ram_kwh += r.ram_kwh
        cur.gpu_kwh += r.gpu_kwh
        cur.co2_g += r.co2_g
        if cur.label != r.label:
            cur.label = "partly measured"
    return sorted(out.values(), key=lambda r: (r.phase == OTHER, -r.wall_s))
