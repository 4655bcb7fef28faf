"""The check shared by every domain's phase test: a finished run recorded the phases its kind marks,
each with time and energy, and the named phases add up to no more than the run's wall time."""

from __future__ import annotations

from typing import Any

import pytest

from poise.phases import OTHER


def check_phases(store: Any, rec: Any, expected: set[str], outer_wall_s: float) -> dict[str, Any]:
    """Assert ``rec``'s phases are ``expected`` (plus ``other``) and fit in its wall time; returns them.

    ``outer_wall_s`` is the test's own clock around the run: the run's recorded wall time cannot exceed it.
    """
    assert rec.status == "done", rec.error
    rows = {r.phase: r for r in store.phase_costs(rec.id)}
    assert set(rows) - {OTHER} == expected, sorted(rows)
    cost = store.cost(rec.id)
    for name in expected:
        assert rows[name].wall_s > 0 and rows[name].cpu_s >= 0 and rows[name].energy_kwh > 0, rows[name]
        assert rows[name].label in ("measured", "estimated", "partly measured"), rows[name].label
    named = sum(r.wall_s for n, r in rows.items() if n != OTHER)
    assert named <= cost.wall_s + 1e-6 <= outer_wall_s + 1e-3
    assert sum(r.wall_s for r in rows.values()) == pytest.approx(cost.wall_s, rel=1e-6)
    assert sum(r.energy_kwh for r in rows.values()) == pytest.approx(cost.energy_kwh, rel=1e-6)
    return rows
