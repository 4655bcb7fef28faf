"""``poise merge`` end to end: files and store runs, lineage, bad input, interrupted merges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

from poise.merging import merge_files, merge_state_dicts


def write(path: Path, sd: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def tiny(seed: int, **shapes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = shapes or {"enc.weight": (4, 3), "enc.bias": (4,), "head.weight": (2, 4)}
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {n: write(tmp_path / f"{n}.safetensors", tiny(i)) for i, n in enumerate(["base", "a", "b"])}


def test_merge_files_through_the_cli_equals_the_in_memory_merge(cli, files, tmp_path):
    out = tmp_path / "out.safetensors"
    code, stdout, err = cli(
        "merge",
        "--method",
        "ties",
        "--models",
        files["a"],
        files["b"],
        "--base",
        files["base"],
        "--weights",
        "0.7",
        "0.3",
        "--density",
        "0.5",
        "-o",
        out,
    )
    assert code == 0, err
    assert "ties" in stdout and "3 of 3 tensors merged" in stdout
    want = merge_state_dicts([tiny(1), tiny(2)], base=tiny(0), method="ties", weights=[0.7, 0.3], density=0.5)
    got = load_file(out)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v.numpy(), rtol=1e-6, atol=1e-7)
    code, _, err = cli("merge", "--method", "linear", "--models", files["a"], files["b"], "-o", out)
    assert code == 2 and err.count("\n") == 1 and "already exists" in err
    code, _, err = cli(
        "merge", "--method", "linear", "--models", files["a"], files["b"], "-o", out, "--force"
    )
    assert code == 0, err
    np.testing.assert_allclose(
        load_file(out)["enc.bias"], (tiny(1)["enc.bias"] + tiny(2)["enc.bias"]).numpy() / 2, rtol=1e-6
    )


def test_merge_into_a_folder_keeps_lineage(cli, files, tmp_path):
    code, _, err = cli(
        "merge",
        "--method",
        "slerp",
        "--models",
        files["a"],
        files["b"],
        "--t",
        "0.3",
        "-o",
        tmp_path / "merged",
    )
    assert code == 0, err
    lineage = json.loads((tmp_path / "merged" / "poise-merge.json").read_text())["poise"]
    assert lineage["merge"]["method"] == "slerp" and lineage["merge"]["t"] == 0.3
    assert [s["path"] for s in lineage["sources"]] == [str(files["a"].resolve()), str(files["b"].resolve())]
    assert "run" in lineage


def bad_cases(files: dict[str, Path], tmp_path: Path) -> list[tuple[list[object], str]]:
    other = write(
        tmp_path / "other.safetensors",
        tiny(5, **{"enc.weight": (4, 3), "enc.bias": (5,), "head.weight": (2, 4)}),
    )
    arch = write(tmp_path / "arch.safetensors", tiny(6, **{"enc.weight": (4, 3), "enc.bias": (4,)}))
    a, b, base = files["a"], files["b"], files["base"]
    return [
        (["--method", "linear", "--models", a, other], "tensor 'enc.bias' has shape (5,)"),
        (["--method", "linear", "--models", a, arch], "tensor 'head.weight'"),
        (["--method", "ties", "--models", a, b], "needs a base"),
        (["--method", "linear", "--models", a, b, "--weights", "1", "2", "3"], "expected 2 weights"),
        (["--method", "ties", "--models", a, b, "--base", base, "--density", "0"], "--density"),
        (["--method", "ties", "--models", a, b, "--base", base, "--density", "1.5"], "--density"),
        (["--method", "foo", "--models", a, b], "invalid choice"),
        (["--method", "linear", "--models", a, tmp_path / "nope.safetensors"], "no file, folder or run"),
        (["--method", "slerp", "--models", a, b, "--base", base], "takes no base"),
        (["--method", "linear", "--models", a, b, "--sweep", "t=0..2"], "--sweep"),
        (["--method", "della", "--models", a, b, "--base", base, "--density", "0.9"], "--epsilon"),
        (["--method", "della", "--models", a, b, "--base", base, "--epsilon", "-0.1"], "--epsilon"),
        (["--method", "breadcrumbs", "--models", a, b, "--base", base, "--gamma", "1"], "--gamma"),
        (["--method", "breadcrumbs", "--models", a, b, "--base", base, "--density", "0.5", "--gamma", "0.6"],
         "density + gamma"),
        (["--method", "model_stock", "--models", a, "--base", base], "at least 2 models"),
        (["--method", "model_stock", "--models", a, b, "--base", base, "--weights", "1", "2"], "takes no weights"),
        (["--method", "nuslerp", "--models", a, b, base], "exactly 2 models"),
        (["--method", "ties", "--models", a, b, "--sweep", "t=0..1"], "linear or slerp or nuslerp"),
    ]


def test_bad_input_exits_2_with_one_line_and_writes_nothing(cli, files, tmp_path):
    for args, needle in bad_cases(files, tmp_path):
        out = tmp_path / "never.safetensors"
        code, _, err = cli("merge", *args, "-o", out)
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and needle in err, (args, err)
        assert not out.exists()


def test_an_interrupted_merge_leaves_no_partial_output(files, tmp_path):
    out = tmp_path / "out"

    def boom(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge_files([files["a"], files["b"]], out, method="linear", progress=boom)
    assert list(tmp_path.iterdir()) == [] or not any(
        p.name.startswith((".out", "out")) for p in tmp_path.iterdir()
    )
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        merge_files([files["a"], files["b"]], out, method="linear", progress=boom, force=True)
    assert (out / "model.safetensors").read_bytes() == b"old"  # the old output survives untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "out" and "safetensors" not in p.name) == []


def test_bfloat16_is_read_and_rounded_like_torch(tmp_path):
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(1000, generator=g).bfloat16()}
    b = {"w": torch.randn(1000, generator=g).bfloat16()}
    out = merge_files(
        [write(tmp_path / "a.safetensors", a), write(tmp_path / "b.safetensors", b)],
        tmp_path / "o.safetensors",
        method="linear",
        weights=[0.3, 0.7],
    )
    from safetensors.torch import load_file as load_torch

    got = load_torch(str(out.output))["w"]
    want = (a["w"].float() * 0.3 + b["w"].float() * 0.7).bfloat16()
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


QUICK_ERM = {"model.width": 8}


def test_merging_store_runs_records_lineage_and_scores_the_merge(runner, store, tmp_path):
    """Two digits classifiers from the vision recipe (same seed, 0.2 and 0.6 epochs) merged, then swept.

    Both share the seed because a merge is scored on its first source's data split.
    """
    from poise.recipes import build_recipe

    recipes = Path(__file__).resolve().parents[2] / "recipes"
    erm = str(recipes / "vision" / "erm-digits.toml")
    srcs = [{"ref": erm, "set": {**QUICK_ERM, "train.budget.epochs": e}} for e in (0.2, 0.6)]
    recipe = build_recipe(
        {"kind": "merging.merge", "name": "m", "model": {"method": "linear", "models": srcs}},
        where="test",
        quick=True,
    )
    res = runner.run(recipe)
    assert res.status == "done"
    lineage = json.loads(store.artifact(res.id, "lineage").path.read_text())
    assert [m["kind"] for m in lineage["models"]] == ["vision.erm", "vision.erm"]
    assert "utility.clean_acc" in lineage["metrics"]
    art = store.artifact(res.id, "model")
    assert art.meta["merge"]["method"] == "linear"
    merged = load_file(art.path)
    parents = [load_file(store.artifact(m["run"], "model").path) for m in lineage["models"]]
    for k, v in merged.items():
        np.testing.assert_allclose(v, (parents[0][k] + parents[1][k]) / 2, rtol=1e-5, atol=1e-6)

    sweep = build_recipe(
        {
            "kind": "merging.sweep",
            "name": "s",
            "model": {"models": [f"run:{m['run']}" for m in lineage["models"]], "points": [0, 0.5, 1]},
        },
        where="test",
    )
    res = runner.run(sweep)
    table = json.loads(store.artifact(res.id, "sweep").path.read_text())
    assert [p["t"] for p in table["points"]] == [0, 0.5, 1]
    t0, t1 = table["points"][0]["metrics"], table["points"][2]["metrics"]
    finals = store.final_metrics([lineage["models"][0]["run"], lineage["models"][1]["run"]])
    assert t0["utility.clean_acc"] == pytest.approx(
        finals[lineage["models"][0]["run"]]["utility.clean_acc"].value
    )
    assert t1["utility.clean_acc"] == pytest.approx(
        finals[lineage["models"][1]["run"]]["utility.clean_acc"].value
    )
    assert store.get_run(table["points"][1]["run"]).kind == "merging.merge"

    from poise.merging.report import merges_section

    blocks = merges_section(store, store.list_runs())
    titles = [b.title for b in blocks]
    assert any(t.startswith("sweep s") for t in titles) and "merged models" in titles
    merged_rows = next(b for b in blocks if b.title == "merged models").table[1]
    assert len(merged_rows) == 4  # the merge and the sweep's three points


def test_help_lists_every_method_of_the_table_and_new_methods_run_from_the_cli(cli, files, tmp_path):
    from poise.merging.spec import PARAMS, REGISTRY

    code, out, _ = cli("merge", "-h")
    assert code == 0
    for name in REGISTRY:
        assert f"  {name} " in out
    for name in PARAMS:
        assert f"--{name.replace('_', '-')} " in out
    for method in ("della", "breadcrumbs", "model_stock", "nuslerp"):
        out_file = tmp_path / f"{method}.safetensors"
        code, stdout, err = cli("merge", "--method", method, "--models", files["a"], files["b"], "--base",
                                files["base"], "--density", "0.5", "--epsilon", "0.1", "-o", out_file)
        assert code == 0, err
        want = merge_state_dicts([tiny(1), tiny(2)], base=tiny(0), method=method, density=0.5, epsilon=0.1)
        got = load_file(out_file)
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v.numpy(), rtol=1e-6, atol=1e-7)
