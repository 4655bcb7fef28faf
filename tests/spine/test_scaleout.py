"""Scale-out: worker processes on a real PostgreSQL server, a worker killed mid-trial, trials as Ray tasks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ..conftest import RECIPES, REPO
from ..pg import free_port

ERM = RECIPES / "vision" / "erm-digits.toml"
TINY = ["--set", "train.budget={steps = 3}", "--set", "model.width=4",
        "--set", 'eval=[{name = "vision.clean_accuracy"}]']


def _poise(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    full = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1", **env)
    return subprocess.Popen([sys.executable, "-m", "poise", "-q", *args], cwd=cwd, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_three_workers_on_postgresql_finish_every_trial_exactly_once(cli, pg_url, tmp_path):
    import optuna

    trials = 6
    code, out, err = cli("--json", "sweep", ERM, "-p", "train.lr=log:1e-3..1e-1", "-p", "model.width=int:2..6",
                         "--objective", "utility.clean_acc", "--objective", "cost.flops", "--trials", str(trials),
                         "--study", "pg", "--storage", pg_url, "--jobs", "0", *TINY)
    assert code == 0, err
    # three workers that know only the study's name and the database
    workers = [_poise(["worker", "--study", "pg", "--storage", pg_url], tmp_path) for _ in range(3)]
    for w in workers:
        _, err = w.communicate(timeout=900)
        assert w.returncode == 0, err
    study = optuna.load_study(study_name="pg", storage=pg_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * trials
    runs = [t.user_attrs["run"] for t in study.trials]
    assert len(set(runs)) == trials
    # the run store is the same database: every trial is an ordinary run
    code, out, _ = cli("--store", pg_url, "--json", "runs", "ls")
    listed = json.loads(out)
    assert sorted(r["id"] for r in listed) == sorted(runs) and {r["status"] for r in listed} == {"done"}
    from poise.store import Store

    pids = {Store(pg_url).get_run(r).pid for r in runs}
    assert len(pids) >= 2, "one worker ran every trial: the others never claimed one"
    code, out, err = cli("--store", pg_url, "--json", "frontier", "--x", "utility.clean_acc", "--y", "cost.flops")
    assert code == 0, err
    assert {r["id"] for r in json.loads(out)["runs"]} == set(runs)
    code, out, err = cli("--store", pg_url, "--json", "report", "-o", tmp_path / "rep")
    assert code == 0, err
    assert "study pg: Pareto front" in (tmp_path / "rep" / "index.html").read_text()


@pytest.mark.parametrize("on_death", ["retry", "fail"])
def test_a_worker_killed_mid_trial_leaves_it_retried_or_failed(cli, tmp_path, on_death):
    """SIGKILL a worker mid-run: the same sweep command again fails the stale trial (heartbeat), then
    retries it — resuming the very same run from its checkpoint — or samples a new one. No trial is lost
    and no run finishes twice."""
    import optuna

    from poise.store import Store

    args = [ERM, "-p", "train.lr=log:1e-3..1e-1", "--objective", "utility.clean_acc", "--pruner", "none",
            "--trials", "2", "--study", "k", "--heartbeat", "1", "--on-worker-death", on_death,
            "--set", "train.budget={steps = 150}", "--set", "train.checkpoint_every=10", "--set", "model.width=8",
            "--set", 'eval=[{name = "vision.clean_accuracy"}]']
    code, out, err = cli("sweep", *args, "--jobs", "0")
    assert code == 0, err
    storage = f"sqlite:///{tmp_path / '.poise' / 'optuna.db'}"
    worker = _poise(["worker", "--study", "k", "--storage", storage], tmp_path)
    ckpts = tmp_path / ".poise" / "checkpoints"
    deadline = time.monotonic() + 600
    while not list(ckpts.glob("*/ckpt-000000030")):
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    killed = next(ckpts.iterdir()).name
    assert not list(ckpts.glob("*/ckpt-000000150")), "the run finished before it was killed"

    code, out, err = cli("--json", "sweep", *args)  # the same command continues the study
    assert code == 0, err
    study = optuna.load_study(study_name="k", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states[0] == "FAIL" and states.count("COMPLETE") == 2 and len(states) == 3
    assert study.trials[0].user_attrs["run"] == killed
    store = Store(root=tmp_path / ".poise")
    complete_runs = [t.user_attrs["run"] for t in study.trials if t.state.name == "COMPLETE"]
    if on_death == "retry":
        retried = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 0)
        assert retried.state.name == "COMPLETE" and retried.user_attrs["run"] == killed
        assert retried.params == study.trials[0].params
        rec = store.get_run(killed)
        assert rec.status == "done" and store.cost(killed).segments == 2  # resumed, not rerun
        assert len(store.list_runs()) == 2
    else:
        assert killed not in complete_runs
        assert store.get_run(killed).status == "interrupted" and "heartbeats" in store.get_run(killed).error
        assert len(store.list_runs()) == 3 and len(set(complete_runs)) == 2


def _ray_head(port: int, temp: str, env: dict[str, str]) -> subprocess.Popen:
    ray = Path(sys.executable).with_name("ray")
    return subprocess.Popen(
        [str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--num-gpus=0", "--include-dashboard=false", f"--dashboard-port={free_port()}", "--disable-usage-stats",
         f"--temp-dir={temp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env=dict(os.environ, PYTHONPATH=str(REPO / "src"), **env))


def test_ray_executor_runs_each_trial_as_a_task(tmp_path):
    # a one-machine Ray cluster that listens on 127.0.0.1 only; the sweep (Ray's driver) runs in its own
    # process, so Ray reads these settings when it is imported there
    local = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit in 107 bytes
    head = _ray_head(port, temp, local)
    try:
        deadline = time.monotonic() + 180
        while True:  # until the head's GCS listens
            assert head.poll() is None, "ray start --head exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the Ray head did not start in 180 s"
                time.sleep(0.5)
        sweep = _poise(["--json", "sweep", str(ERM), "-p", "model.width=int:2..6", "--objective",
                        "utility.clean_acc", "--objective", "cost.flops", "--trials", "3", "--study", "r",
                        "--executor", "ray", "--address", f"127.0.0.1:{port}", "--jobs", "2", *TINY], tmp_path, **local)
        out, err = sweep.communicate(timeout=900)
        assert sweep.returncode == 0, err
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes
        head.wait(timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    import optuna

    from poise.store import Store

    study = optuna.load_study(study_name="r", storage=f"sqlite:///{tmp_path / '.poise' / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert json.loads(out)["states"] == {"complete": 3}
    store = Store(root=tmp_path / ".poise")
    runs = [store.get_run(t.user_attrs["run"]) for t in study.trials]
    assert len({r.id for r in runs}) == 3 and all(r.status == "done" for r in runs)
    assert sweep.pid not in {r.pid for r in runs}  # ran in Ray's worker processes, not in the driver
