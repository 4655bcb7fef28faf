"""Running recipes end to end: costs, artifacts, resume after SIGKILL, dependencies, the runs commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poise.errors import UserError
from poise.recipes import load_recipe

from ..conftest import RECIPES, REPO

ERM = RECIPES / "vision" / "erm-digits.toml"
# the spine's checks need a trained model and one metric, not the vision domain's attack suite
SMALL = {"train.budget": {"steps": 40}, "model.width": 8, "train.checkpoint_every": 10,
         "eval": [{"name": "vision.clean_accuracy"}]}


def test_a_run_records_metrics_costs_and_artifact(runner, store):
    rec = runner.run(load_recipe(ERM, SMALL))
    assert rec.status == "done"
    finals = store.final_metrics([rec.id])[rec.id]
    assert 0.0 <= finals["utility.clean_acc"].value <= 1.0
    assert finals["utility.clean_acc"].direction == "max"
    for k in ("cost.wall_s", "cost.cpu_s", "cost.peak_rss_mb", "cost.energy_kwh", "cost.co2_g", "cost.flops"):
        assert finals[k].value > 0, k
    cost = store.cost(rec.id)
    assert cost.country == "FRA" and "codecarbon" in cost.method
    assert cost.co2_g == pytest.approx(cost.energy_kwh * 56.039, rel=1e-6)  # FRA grid, PUE 1
    tensors, meta = store.load_tensors(rec.id, "model")
    assert meta["num_classes"] == 10 and any(k.endswith("weight") for k in tensors)
    assert (store.checkpoint_dir(rec.id) / "ckpt-000000040").is_dir()
    assert finals["train.budget_used"].value == pytest.approx(1.0)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_dependencies_are_trained_once_and_reused(runner, store, tmp_path):
    student = tmp_path / "student.toml"
    student.write_text(ERM.read_text().replace('kind = "vision.erm"', 'kind = "vision.erm"\nname = "student"'))
    from poise.context import RunContext

    cfg = load_recipe(student, SMALL)
    seen, draws = [], []

    def kind_run(cfg, ctx: RunContext):
        import torch

        torch.manual_seed(123)
        seen.append(ctx.dependency("vision/erm-digits.toml", field="model.teacher", overrides=SMALL))
        draws.append(torch.rand(3))  # the same whether the teacher was trained here or reused

    for _ in range(2):
        runner._execute(kind_run, cfg, store.create_run(kind=cfg.kind, name="student", config=cfg.resolved(),
                                                       config_hash="s", seed=0))
    assert seen[0].id == seen[1].id and seen[0].status == "done"
    assert torch_equal(draws[0], draws[1])
    assert [r.name for r in store.list_runs()].count("erm-digits") == 1
    assert seen[0].parent_id is not None  # trained inside the first student run
    with pytest.raises(UserError, match="no recipe file"):
        runner._execute(lambda c, ctx: ctx.dependency("vision/none.toml", field="model.teacher"), cfg,
                        store.create_run(kind=cfg.kind, name="s", config={}, config_hash="t", seed=0))


def _poise(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "poise", "-q", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_killed_run_resumes_to_the_same_result(tmp_path, backend, request):
    # the killed run and its resume write to the store under test; the reference run to its own SQLite
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    at = ["--store", url] if url else []
    sets = ["--set", "train.budget={steps = 150}", "--set", "model.width=8", "--set", "train.checkpoint_every=10",
            "--set", "seed=11", "--set", 'eval=[{name = "vision.clean_accuracy"}]']
    (tmp_path / "ref").mkdir()
    ref = _poise(["--json", "run", str(ERM), *sets], tmp_path / "ref")
    out, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err
    reference = json.loads(out)

    work = tmp_path / "killed"
    work.mkdir()
    proc = _poise([*at, "run", str(ERM), *sets], work)
    ckpts = work / ".poise" / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(ckpts.glob("*/ckpt-000000030")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_id = next(ckpts.iterdir()).name
    assert not list(ckpts.glob("*/ckpt-000000150")), "the run finished before it was killed"

    resumed = _poise([*at, "--json", "runs", "resume", run_id], work)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    result = json.loads(out)
    assert result["run"] == run_id and result["status"] == "done"
    assert result["metrics"]["utility.clean_acc"] == reference["metrics"]["utility.clean_acc"]
    # the whole training curve after the resume point matches too
    from poise.store import Store

    a = {(m.name, m.step): m.value for m in Store(root=tmp_path / "ref" / ".poise").metrics() if m.name == "loss"}
    b = {(m.name, m.step): m.value for m in Store(url, root=work / ".poise").metrics() if m.name == "loss"}
    assert a and a == b
    # resuming a finished run is a clear error
    again = _poise([*at, "runs", "resume", run_id], work)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 2 and "already finished" in err and len(err.strip().splitlines()) == 1


def test_runs_commands(cli, tmp_path):
    code, out, err = cli("--json", "run", str(ERM), "--set", "train.budget={steps = 5}", "--set", "model.width=4",
                         "--set", 'eval=[{name = "vision.clean_accuracy"}]')
    assert code == 0, err
    rid = json.loads(out)["run"]
    code, out, _ = cli("--json", "runs", "ls")
    assert [r["id"] for r in json.loads(out)] == [rid]
    code, out, _ = cli("runs", "show", rid[:6])
    assert code == 0 and "utility.clean_acc" in out and "artifact model" in out
    code, out, _ = cli("--json", "runs", "show", rid)
    shown = json.loads(out)
    assert shown["artifacts"][0]["name"] == "model" and shown["cost"]["segments"] == 1
    for bad in (["runs", "show", "nope1234"], ["runs", "resume", "nope1234"], ["runs", "rm", "zz"],
                ["runs", "ls", "--status", "weird"]):
        code, out, err = cli(*bad)
        assert code == 2 and len(err.strip().splitlines()) == 1, (bad, err)
    code, _, err = cli("runs", "rm", rid)
    assert code == 0
    code, out, _ = cli("--json", "runs", "ls")
    assert json.loads(out) == []


def test_recipes_command_lists_kinds_evaluators_and_files(cli):
    code, out, _ = cli("--json", "recipes")
    data = json.loads(out)
    assert code == 0
    assert "vision.erm" in data["kinds"]
    assert data["evaluators"]["vision.clean_accuracy"]["metrics"][0]["axis"] == "utility"
    assert any(r["path"] == "vision/erm-digits.toml" for r in data["recipes"])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA message")
def test_asking_for_cuda_without_it_is_one_line(cli):
    code, _, err = cli("run", str(ERM), "--device", "cuda:3")
    assert code == 2 and "CUDA" in err and len(err.strip().splitlines()) == 1
