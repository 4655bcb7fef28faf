"""The report's cost sections: grams of CO2 per point of robustness over the baseline, and phases per run."""

from __future__ import annotations

import pytest

from poise.phases import OTHER, PhaseCost
from poise.report import write_report
from poise.report.costs import find_baseline, robustness_costs
from poise.store import CostRecord


def _run(store, kind, name, metrics, co2_g, *, config=None, seed=0, quick=False):
    rid = store.create_run(kind=kind, name=name, config=config or {}, config_hash=name, seed=seed, quick=quick)
    store.record_cost(rid, 0, CostRecord(wall_s=10.0, cpu_s=10.0, energy_kwh=co2_g / 50.0, co2_g=co2_g,
                                         method="codecarbon", country="FRA", device="cpu"))
    store.log_metrics(rid, [(k.split(".", 1)[1], k.split(".", 1)[0], d, 5, v) for k, (v, d) in metrics.items()])
    store.set_status(rid, "done")
    return store.get_run(rid)


def test_grams_per_point_over_the_domain_baseline(store):
    digits = {"data": {"name": "digits"}}
    erm = _run(store, "vision.erm", "erm", {"utility.clean_acc": (0.95, "max"),
                                            "robustness.autoattack_acc": (0.05, "max")}, 10.0, config=digits)
    pgd = _run(store, "vision.pgd_at", "pgd", {"utility.clean_acc": (0.80, "max"),
                                               "robustness.autoattack_acc": (0.45, "max")}, 60.0, config=digits)
    other = _run(store, "vision.trades", "trades-cifar", {"utility.clean_acc": (0.5, "max"),
                                                          "robustness.autoattack_acc": (0.6, "max")}, 80.0,
                 config={"data": {"name": "cifar10"}})
    base = _run(store, "language.base", "base", {"utility.benign_acc": (0.6, "max"),
                                                 "safety.harmful_compliance": (0.8, "min")}, 30.0,
                config={"data": {"world": {"seed": 0}}})
    sft = _run(store, "language.sft", "sft", {"utility.benign_acc": (0.59, "max"),
                                              "safety.harmful_compliance": (0.1, "min")}, 7.0,
               config={"data": {"world": {"seed": 0}}})
    assert find_baseline(store, pgd).id == erm.id and find_baseline(store, erm).id == erm.id
    assert find_baseline(store, other) is None  # no ERM run on the same data
    assert find_baseline(store, sft).id == base.id
    rows = {r.run.id: r for r in robustness_costs(store, store.list_runs())}
    assert rows[pgd.id].gain == pytest.approx(40.0) and rows[pgd.id].unit == "pt"
    assert rows[pgd.id].g_per_point == pytest.approx(60.0 / 40.0)
    assert rows[pgd.id].co2_g - rows[pgd.id].baseline_co2_g == pytest.approx(50.0)
    assert rows[erm.id].gain == 0 and rows[erm.id].g_per_point is None
    assert rows[other.id].baseline is None and rows[other.id].g_per_point is None
    assert rows[sft.id].gain == pytest.approx(70.0)  # harm reduction: 80 % → 10 % compliance
    assert rows[sft.id].g_per_point == pytest.approx(7.0 / 70.0)


def test_report_shows_robustness_costs_and_stacked_phases(store, tmp_path):
    digits = {"data": {"name": "digits"}}
    _run(store, "vision.erm", "erm", {"utility.clean_acc": (0.95, "max"),
                                      "robustness.autoattack_acc": (0.05, "max")}, 10.0, config=digits)
    pgd = _run(store, "vision.pgd_at", "pgd", {"utility.clean_acc": (0.80, "max"),
                                               "robustness.autoattack_acc": (0.45, "max")}, 60.0, config=digits)
    store.record_phases(pgd.id, 0, [PhaseCost("attack", 6.0, 6.0, 8e-4, 1e-4, 0.0, 0.045, "estimated", "m"),
                                    PhaseCost("<b>update</b>", 3.0, 3.0, 2e-4, 5e-5, 0.0, 0.0125, "estimated", "m"),
                                    PhaseCost(OTHER, 1.0, 1.0, 1e-5, 1e-5, 0.0, 0.001, "estimated", "m")])
    html = write_report(store, tmp_path / "rep").read_text()
    assert "Cost of robustness" in html and "g CO2 / point" in html and "1.5" in html
    assert "phases per run" in html and '"barmode":"stack"' in html.replace(" ", "")
    assert "<b>update</b>" not in html and "&lt;b&gt;update&lt;/b&gt;" in html
    assert (tmp_path / "rep" / "phases-per-run.png").exists()
