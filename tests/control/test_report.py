"""The control report section: one return-vs-budget plot per attacked agent and a table with its AUCs."""

from __future__ import annotations

import json

import pytest

from poise.control.evaluation import auc
from poise.control.report import control_section


def test_section_plots_each_attacked_run_and_tabulates_auc(store):
    detail = {"env": "Pendulum-v1", "seeds": [1000], "episodes": 2, "reset_seeds": [1000000, 1000001],
              "nominal": [-150.0, -170.0], "budgets": [0.5, 1.0], "norm": "2", "temporal_norm": "2", "horizon": 3,
              "steps": 5,
              "attacks": {a: {"0.5": {"returns": [-200.0 - k, -220.0]}, "1.0": {"returns": [-400.0, -380.0]}}
                          for k, a in enumerate(["random", "mas", "las"])}}
    run_id = store.create_run(kind="control.attack", name="attack-x", config={}, config_hash="h", seed=0)
    store.save_file(run_id, "eval_attacks.json", json.dumps(detail).encode(), "application/json")
    store.set_status(run_id, "done")
    other = store.create_run(kind="vision.erm", name="v", config={}, config_hash="v", seed=0)
    store.set_status(other, "done")
    blocks = control_section(store, store.list_runs())
    assert [b.title.startswith("attack-x") for b in blocks] == [False, True]
    header, rows = blocks[0].table
    assert len(rows) == 1 and rows[0][0] == run_id
    assert rows[0][header.index("AUC MAS")] == pytest.approx(auc([0.5, 1.0], [-210.5, -390.0], -160.0))
    assert blocks[1].figure is not None and blocks[1].png.startswith(b"\x89PNG")
