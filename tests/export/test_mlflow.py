"""``poise export mlflow``: runs go into a local MLflow file store and are read back with MLflow's own client —
recipe as parameters, metrics at their steps, costs, tags and lineage, artifacts — and exporting twice adds
nothing."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from poise.export.mlflow import flatten
from tests.vision.test_kinds import RECIPES, TINY_EVAL

mlflow = pytest.importorskip("mlflow")  # poise[track]; installed by `make install`


def _store(tmp_path: Path):
    from poise.store import Store

    return Store(root=tmp_path / ".poise")


def _client(uri_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri_dir.resolve().as_uri())


def _poise_runs(client) -> dict[str, object]:
    exp = client.get_experiment_by_name("poise")
    return {r.data.tags["poise.run_id"]: r for r in client.search_runs([exp.experiment_id])}


@pytest.fixture
def two_runs(cli, tmp_path):
    """A real (tiny) ERM run, and a child run recorded with it as parent (lineage), in the test's store."""
    code, _, err = cli("run", RECIPES / "erm-digits.toml", "--quick", "--set", "train.budget.epochs=1", *TINY_EVAL)
    assert code == 0, err
    s = _store(tmp_path)
    parent = s.list_runs()[0]
    child = s.create_run(kind="vision.erm", name="child", config={"kind": "vision.erm", "train": {"lr": 0.5}},
                         config_hash="c", seed=3, parent_id=parent.id)
    s.log_metrics(child, [("loss", "train", "min", 0, 2.0), ("loss", "train", "min", 10, 1.0)])
    s.save_file(child, "table", b'{"a": 1}', "application/json")
    s.set_status(child, "failed", error="ValueError: boom\ntraceback")
    s.close()
    return parent.id, child


def test_export_reads_back_with_mlflow_client(cli, tmp_path, two_runs, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    parent_id, child_id = two_runs
    code, out, err = cli("export", "mlflow", "--all", "--uri", "mlruns")
    assert code == 0, err
    assert "created" in out
    client = _client(tmp_path / "mlruns")
    runs = _poise_runs(client)
    assert set(runs) == {parent_id, child_id}
    s = _store(tmp_path)
    prec = s.get_run(parent_id)
    p = runs[parent_id]
    # parameters: the flattened recipe
    assert p.data.params == flatten(prec.config)
    assert p.data.params["train.lr"] == "0.003" and p.data.params["eval.0.name"] == "vision.clean_accuracy"
    # metrics: every point at its step
    for key in ("train.loss", "utility.clean_acc", "robustness.autoattack_acc"):
        want = sorted((r.step, r.value) for r in s.metrics([parent_id]) if r.key == key)
        got = sorted((m.step, m.value) for m in client.get_metric_history(p.info.run_id, key))
        assert want and got == want, key
    # costs
    cost = s.cost(parent_id)
    assert p.data.metrics["cost.co2_g"] == pytest.approx(cost.co2_g)
    assert p.data.metrics["cost.wall_s"] == pytest.approx(cost.wall_s) and "cost.peak_rss_mb" in p.data.metrics
    # tags and lineage
    c = runs[child_id]
    assert p.data.tags["poise.kind"] == "vision.erm" and p.data.tags["poise.seed"] == "0"
    assert c.data.tags["poise.parent_id"] == parent_id and c.data.tags["mlflow.parentRunId"] == p.info.run_id
    assert c.data.tags["poise.error"] == "ValueError: boom" and c.info.status == "FAILED"
    assert p.info.status == "FINISHED" and p.info.start_time == int(prec.started * 1000)
    assert c.data.params == {"kind": "vision.erm", "train.lr": "0.5"}
    # artifacts: the recipe and the stored files, byte for byte
    names = {f.path for f in client.list_artifacts(p.info.run_id, "poise/artifacts")}
    assert "poise/artifacts/model.safetensors" in names
    (tmp_path / "dl").mkdir()
    local = client.download_artifacts(p.info.run_id, "poise/artifacts/model.safetensors", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == s.artifact(parent_id, "model").path.read_bytes()
    cfg = client.download_artifacts(p.info.run_id, "poise/config.json", str(tmp_path / "dl"))
    assert json.loads(Path(cfg).read_text()) == prec.config
    # exporting again duplicates nothing; a new point is the only thing added
    code, out, err = cli("--json", "export", "mlflow", parent_id[:6], child_id, "--uri", "mlruns")
    assert code == 0, err
    again = json.loads(out)
    assert [e["created"] for e in again] == [False, False] and all(e["metrics"] == 0 for e in again)
    assert all(e["params"] == 0 and e["artifacts"] == 0 for e in again)
    s.log_metrics(child_id, [("loss", "train", "min", 20, 0.5)])
    s.close()
    code, out, err = cli("--json", "export", "mlflow", child_id, "--uri", "mlruns", "--no-artifacts")
    assert code == 0, err
    assert json.loads(out)[0]["metrics"] == 1
    runs = _poise_runs(client)
    assert len(runs) == 2
    hist = client.get_metric_history(runs[child_id].info.run_id, "train.loss")
    assert sorted((m.step, m.value) for m in hist) == [(0, 2.0), (10, 1.0), (20, 0.5)]


def test_flatten_keys_and_limits():
    flat = flatten({"a": {"b": [1, {"c": None}], "e": []}, "s": "x" * 7000, "t": True})
    assert flat["a.b.0"] == "1" and flat["a.b.1.c"] == "null" and flat["a.e"] == "[]" and flat["t"] == "true"
    assert len(flat["s"]) == 6000 and flat["s"].endswith("…")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--all", "--uri", "afile"], ("--uri", "afile is a file", "expected a folder")),
        (["--all", "--uri", "bogus://nowhere"], ("--uri", "cannot use MLflow tracking URI", "bogus://nowhere")),
        (["--all", "--uri", "http://127.0.0.1:{port}"], ("--uri", "cannot use MLflow tracking URI", "127.0.0.1")),
        ([], ("expected run IDs or --all",)),
        (["nosuchrun", "--uri", "mlruns"], ("run", "no run 'nosuchrun'")),
    ],
)
def test_bad_export_input_one_line(cli, tmp_path, args, needles):
    (tmp_path / "afile").write_text("x")
    args = [a.format(port=_free_port()) for a in args]
    code, _, err = cli("export", "mlflow", *args)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
