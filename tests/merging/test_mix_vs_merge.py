"""Mix vs merge on a tiny safety world: every group and method runs, merges are scored, weights check out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from poise.store import Store
from tests.language.conftest import TINY_TOML

WORLD = [
    "[data.world]",
    'languages = ["en", "fr"]',
    "benign = { train = 16, val = 2, test = 4 }",
    "harmful = { train = 8, val = 2, test = 4 }",
    "borderline = { train = 4, val = 2, test = 2 }",
]
EVAL = ["[[eval]]", 'name = "language.safety"', "max_new_tokens = 4"]


def _write(folder: Path) -> Path:
    (folder / "base.toml").write_text("\n".join([
        'kind = "language.base"', "[model]", TINY_TOML, *WORLD,
        "[train]", "lr = 3e-3", "batch_size = 8", "budget = { steps = 3 }", *EVAL]) + "\n")
    (folder / "sft.toml").write_text("\n".join([
        'kind = "language.sft"', "[model]", 'base = "base.toml"', *WORLD,
        "[train]", "lr = 3e-3", "batch_size = 8", "budget = { steps = 2 }", *EVAL]) + "\n")
    path = folder / "mix-vs-merge.toml"
    path.write_text("\n".join([
        'kind = "merging.mix_vs_merge"', "[model]", 'sft = "sft.toml"',
        'methods = ["linear", "slerp", "dare_ties"]', "density = 0.5"]) + "\n")
    return path


def test_mix_vs_merge_trains_every_source_merges_every_group_and_scores_each(cli, tmp_path):
    code, _, err = cli("--quiet", "run", _write(tmp_path))
    assert code == 0, err
    store = Store(root=tmp_path / ".poise")
    (exp,) = store.list_runs(kind="merging.mix_vs_merge")
    art = next(a for a in store.artifacts(exp.id) if a.name == "mix_vs_merge")
    table = json.loads(art.path.read_text())
    seen = {(r["group"], r["method"], r["label"]) for r in table["rows"]}
    assert {("base", "-", "base"), ("data mix", "-", "mix"), ("objective (single)", "-", "general"),
            ("objective (single)", "-", "safety"), ("language (single)", "-", "fr")} <= seen
    for group, members in (("objective merge", "general+safety"), ("language merge", "en+fr")):
        for method in ("linear", "slerp", "dare_ties"):
            assert (group, method, members) in seen
    for r in table["rows"]:  # every model, trained or merged, carries the safety evaluator's scores
        assert {"utility.benign_acc", "safety.harmful_compliance", "safety.harmful_compliance_fr"} <= set(r["metrics"])
    sfts = store.list_runs(kind="language.sft")
    assert len(sfts) == 5  # mix, general, safety, en, fr
    by_label = {r["label"]: r["run"] for r in table["rows"] if r["method"] == "-"}
    lin = next(r["run"] for r in table["rows"] if r["group"] == "objective merge" and r["method"] == "linear")
    a, _ = store.load_tensors(by_label["general"], "model")
    b, _ = store.load_tensors(by_label["safety"], "model")
    m, meta = store.load_tensors(lin, "model")
    for k in m:  # linear with equal weights is the mean of the two fine-tunes
        torch.testing.assert_close(m[k], (a[k] + b[k]) / 2, rtol=1e-6, atol=1e-6)
    dare = next(r["run"] for r in table["rows"] if r["group"] == "language merge" and r["method"] == "dare_ties")
    lineage = json.loads(next(x for x in store.artifacts(dare) if x.name == "lineage").path.read_text())
    assert lineage["base"]["run"] == by_label["base"] and lineage["params"]["density"] == 0.5

    from poise.merging.report import merges_section

    blocks = merges_section(store, store.list_runs())
    assert any(b.title.startswith("mix vs merge") for b in blocks)


def test_mix_vs_merge_needs_an_sft_recipe(cli, tmp_path):
    path = _write(tmp_path)
    code, _, err = cli("--quiet", "run", path, "--set", "model.sft='base.toml'")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "model.sft" in err and "language.sft" in err


@pytest.mark.parametrize("setting", ["model.methods=['average']", "model.density=0", "model.groups=[]"])
def test_bad_mix_vs_merge_settings_are_one_line(cli, tmp_path, setting):
    code, _, err = cli("--quiet", "run", _write(tmp_path), "--set", setting)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
