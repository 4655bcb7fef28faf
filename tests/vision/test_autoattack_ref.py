"""The reference AutoAttack (pyautoattack): cross-checked against torchattacks' AutoAttack on the same model and
examples, its own sanity checks surfaced (randomised model, zero gradients, Square beating the white-box
attacks), and the evaluator through a run and the report."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from poise.vision.attacks import Attack, ThreatCfg
from poise.vision.autoattack_ref import autoattack_ref_eval, reference_autoattack
from poise.vision.evaluators import robust_accuracy
from tests.vision.test_kinds import RECIPES, _one_line_error, _runs

# both implementations at the same reduced budget (the budget only has to be equal, not standard)
BUDGET = {"steps": 10, "n_targets": 3, "square_queries": 100}
TOLERANCE = 2 / 48  # at most two of the 48 examples may end differently


class Quantised(torch.nn.Module):
    """Input quantisation: zero gradients almost everywhere, a textbook case of gradient masking."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


class Noisy(torch.nn.Module):
    """A randomised model: fresh input noise on every forward pass."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x + 0.05 * torch.randn_like(x))


def test_reference_matches_torchattacks_autoattack(trained_cnn, digits):
    x, y = digits.test[0][:48], digits.test[1][:48]
    x_adv, ref = reference_autoattack(trained_cnn, x, y, eps=0.1, seed=0, **BUDGET)
    ta = robust_accuracy(trained_cnn, x, y, Attack("autoattack", eps=0.1, **BUDGET), torch.device("cpu"))
    assert ref.clean_acc > 0.85 and 0.2 < ref.robust_acc < ref.clean_acc  # neither trivial nor hopeless
    assert abs(ref.robust_acc - ta) <= TOLERANCE + 1e-9, (ref.robust_acc, ta)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert list(ref.after) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert ref.after["square"] == pytest.approx(ref.robust_acc, abs=1e-4)
    assert ref.warnings == [] and ref.reduced_budget and ref.budget["steps"] == 10


def test_gradient_masking_is_flagged(trained_cnn, digits):
    x, y = digits.test[0][:48], digits.test[1][:48]
    _, res = reference_autoattack(Quantised(trained_cnn).eval(), x, y, eps=0.1, steps=10, n_targets=2,
                                  square_queries=200)
    text = " ".join(res.warnings)
    assert "zero gradient" in text
    assert "Square Attack has decreased the robust accuracy" in text
    assert res.after["square"] < res.after["fab-t"]


def test_randomised_model_is_flagged(trained_cnn, digits):
    x, y = digits.test[0][:32], digits.test[1][:32]
    _, res = reference_autoattack(Noisy(trained_cnn).eval(), x, y, eps=0.1, steps=2, n_targets=1, square_queries=5)
    assert any("randomized defense" in w for w in res.warnings)
    _, clean = reference_autoattack(trained_cnn, x, y, eps=0.1, steps=2, n_targets=1, square_queries=5)
    assert not any("randomized" in w for w in clean.warnings)  # deterministic models are not flagged


def test_evaluator_stores_checks_and_report_shows_them(trained_cnn, digits, store):
    from poise.report import report_sections
    from poise.vision.autoattack_ref import _register_report  # noqa: F401 - registers the section

    rid = store.create_run(kind="vision.erm", name="masked", config={}, config_hash="h", seed=0)
    messages: list[str] = []
    ctx = SimpleNamespace(cfg=SimpleNamespace(threat=ThreatCfg(eps=0.1)), device=torch.device("cpu"),
                          info=messages.append, save_file=lambda *a, **k: store.save_file(rid, *a, **k))
    out = autoattack_ref_eval(Quantised(trained_cnn).eval(), digits, ctx, norm=None, eps=None, version="standard",
                              steps=10, n_targets=2, square_queries=200, n=48, split="test", batch_size=250, seed=0,
                              metric="autoattack_acc")
    assert set(out) == {"autoattack_acc", "aa_apgd_ce_acc", "aa_apgd_t_acc", "aa_fab_t_acc", "aa_square_acc"}
    assert out["aa_square_acc"] < out["aa_apgd_ce_acc"]
    assert any("zero gradient" in m for m in messages)
    saved = json.loads(store.artifact(rid, "autoattack_checks.autoattack_acc").path.read_text())
    assert saved["robust_acc"] == out["autoattack_acc"] and saved["eps"] == 0.1 and saved["n"] == 48
    store.set_status(rid, "done")
    _, fn = report_sections()["vision.autoattack_checks"]
    (block,) = fn(store, store.list_runs())
    headers, rows = block.table
    assert rows[0][0] == "masked" and "WARNING: there are" in rows[0][-1] and "(reduced)" in rows[0][-2]
    assert "1 of 1 evaluations raised warnings" in block.note


def test_reference_autoattack_through_a_recipe(cli, tmp_path):
    text = (RECIPES / "erm-digits.toml").read_text()
    (tmp_path / "r.toml").write_text(text.split("[quick]")[0] + """
[[eval]]
name = "vision.autoattack_ref"
n = 24
steps = 3
n_targets = 1
square_queries = 10
metric = "aa_ref_acc"

[quick]""" + text.split("[quick]")[1])
    code, _, err = cli("run", tmp_path / "r.toml", "--quick", "--set", "train.budget.epochs=1")
    assert code == 0, err
    ((run, m),) = _runs(tmp_path / ".poise")
    assert {"robustness.aa_ref_acc", "robustness.aa_ref_square_acc"} <= set(m)
    assert m["robustness.aa_ref_acc"].value <= m["utility.clean_acc"].value + 1e-9


@pytest.mark.parametrize("setting,needles", [("eval.2.version=fast", ("version",)),
                                             ("eval.2.square_queries=0", ("square_queries",))])
def test_bad_reference_params_one_line(cli, tmp_path, setting, needles):
    text = (RECIPES / "erm-digits.toml").read_text().replace(
        'name = "vision.robust_accuracy"\nattack = "autoattack"', 'name = "vision.autoattack_ref"')
    assert "vision.autoattack_ref" in text
    (tmp_path / "r.toml").write_text(text)
    code, _, err = cli("run", tmp_path / "r.toml", "--set", setting)
    _one_line_error(code, err, *needles)
