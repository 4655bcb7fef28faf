"""Mix vs merge on a tiny safety world, as the paper ran it: SFT and DPO checkpoints, merge weights searched
on val, seeds on test with intervals; the old kind name still runs; bad settings are one line."""

from __future__ import annotations

import json
import math
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
TRAIN = ["[train]", "lr = 3e-3", "batch_size = 8", "budget = { steps = 2 }"]


def _write(folder: Path, kind: str = "study.mix_vs_merge", extra: tuple[str, ...] = ()) -> Path:
    (folder / "base.toml").write_text("\n".join([
        'kind = "language.base"', "[model]", TINY_TOML, *WORLD,
        "[train]", "lr = 3e-3", "batch_size = 8", "budget = { steps = 3 }", *EVAL]) + "\n")
    (folder / "sft.toml").write_text("\n".join([
        'kind = "language.sft"', "[model]", 'base = "base.toml"', *WORLD, *TRAIN, *EVAL]) + "\n")
    (folder / "dpo.toml").write_text("\n".join([
        'kind = "language.dpo"', "[model]", 'base = "base.toml"', *WORLD, *TRAIN, *EVAL]) + "\n")
    path = folder / "mix-vs-merge.toml"
    path.write_text("\n".join([
        f'kind = "{kind}"', "[model]", 'sft = "sft.toml"', 'dpo = "dpo.toml"', *extra]) + "\n")
    return path


def _table(store: Store, kind: str) -> dict:
    (exp,) = store.list_runs(kind=kind)
    art = next(a for a in store.artifacts(exp.id) if a.name == "mix_vs_merge")
    return json.loads(art.path.read_text())


def test_sft_and_dpo_checkpoints_are_merged_with_weights_searched_on_val_and_seeds_on_test(cli, tmp_path):
    path = _write(tmp_path, extra=('stages = ["sft", "dpo"]', 'groups = ["objective"]',
                                   'methods = ["linear"]', "grid = [0.0, 0.5, 1.0]", "seeds = [0, 1]"))
    code, _, err = cli("--quiet", "run", path)
    assert code == 0, err
    store = Store(root=tmp_path / ".poise")
    table = _table(store, "study.mix_vs_merge")
    assert table["seeds"] == [0, 1] and table["stages"] == ["sft", "dpo"]
    merges = [r for r in table["rows"] if r["group"] == "objective merge"]
    assert {(r["stage"], r["method"]) for r in merges} == {("sft", "linear"), ("dpo", "linear")}
    for r in merges:
        assert [p["weight"] for p in r["search"]] == [0.0, 0.5, 1.0]
        assert all(math.isfinite(p["score"]) for p in r["search"])
        assert r["weight"] == max(r["search"], key=lambda p: p["score"])["weight"]  # chosen on val
        for p in r["search"]:  # the search scored val; the seeds' merges scored test
            assert store.get_run(p["run"]).config["eval_split"] == "val"
        for run_id in r["runs"].values():
            assert store.get_run(run_id).config.get("eval_split", "test") == "test"
        assert r["metrics"]["utility.benign_acc"]["interval"]["n"] == 2  # an interval over the two seeds
        assert r["focus"] == "safety" and r["weights"] == [1.0 - r["weight"], r["weight"]]
    # the DPO rows come from language.dpo checkpoints, merged against the DPO stage's starting model
    dpo_mix = next(r for r in table["rows"] if r["stage"] == "dpo" and r["group"] == "data mix")
    assert store.get_run(dpo_mix["runs"]["0"]).kind == "language.dpo"
    # a searched linear merge is (1 - w)·general + w·safety of the same seed's models
    lin = next(r for r in merges if r["stage"] == "sft" and r["method"] == "linear")
    singles = {r["label"]: r["runs"]["1"] for r in table["rows"] if r["stage"] == "sft" and r["method"] == "-"}
    g, _ = store.load_tensors(singles["general"], "model")
    s, _ = store.load_tensors(singles["safety"], "model")
    merged, _ = store.load_tensors(lin["runs"]["1"], "model")
    w = lin["weight"]
    for k in merged:
        torch.testing.assert_close(merged[k], (1 - w) * g[k] + w * s[k], rtol=1e-5, atol=1e-6)
    # per stage and group: the best merge against the data mix, a paired interval and a verdict
    assert {(b["stage"], b["group"]) for b in table["best"]} == {("sft", "objective"), ("dpo", "objective")}
    for b in table["best"]:
        assert b["verdict"] in ("held", "not held", "inconclusive") and b["difference"]["paired"]

    from poise.study.mix_vs_merge_report import mix_vs_merge_section

    blocks = mix_vs_merge_section(store, store.list_runs())
    assert any(b.title.startswith("mix vs merge") for b in blocks) and any("best merge" in b.title for b in blocks)


def test_the_old_kind_name_runs_equal_weight_merges_of_every_group(cli, tmp_path):
    path = _write(tmp_path, kind="merging.mix_vs_merge", extra=('methods = ["linear", "slerp"]',))
    code, _, err = cli("--quiet", "run", path)
    assert code == 0, err
    store = Store(root=tmp_path / ".poise")
    table = _table(store, "merging.mix_vs_merge")
    seen = {(r["group"], r["method"], r["label"]) for r in table["rows"]}
    for group, members in (("objective merge", "general+safety"), ("language merge", "en+fr")):
        for method in ("linear", "slerp"):
            assert (group, method, members) in seen
    for r in table["rows"]:
        assert {"utility.benign_acc", "safety.harmful_compliance_fr"} <= set(r["metrics"])
        if r["method"] != "-":
            assert r["weight"] is None and r["weights"] == [0.5, 0.5]


@pytest.mark.parametrize(("setting", "needle"), [
    ("model.grid=[0, 1.5]", "model.grid"),
    ("model.methods=['average']", "model.methods[0]"),
    ("model.sft='base.toml'", "language.sft"),
    ("model.density=0", "model.density"),
    ("model.seeds=[1, 1]", "distinct"),
    ("model.objective={'utility' = 1.0}", "model.objective"),
])
def test_bad_mix_vs_merge_settings_are_one_line(cli, tmp_path, setting, needle):
    code, _, err = cli("--quiet", "run", _write(tmp_path), "--set", setting)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err, err
