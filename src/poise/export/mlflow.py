"""Export poise runs into an MLflow tracking store, read back by MLflow's own client.

Each poise run becomes one MLflow run in the experiment ``experiment`` (default ``poise``):

* **parameters** — the run's full resolved recipe, flattened to dotted keys (``train.lr``,
  ``eval.0.name``); values over MLflow's 6,000-character limit are cut with a trailing ``…``;
* **metrics** — every metric at every step, keyed ``<axis>.<name>`` as poise names them
  (``utility.clean_acc``, ``train.loss``, ``cost.co2_g``); a run's costs (wall and CPU seconds, peak
  memory, energy, CO2) are always among them, from the cost records when the run logged none;
* **tags** — ``poise.run_id`` (how an exported run is found again), ``poise.kind``, ``poise.seed``,
  ``poise.status``, ``poise.config_hash``, ``poise.quick``, ``poise.parent_id`` (lineage: the run that
  trained this one as a dependency) and, when that parent is in the same tracking store,
  ``mlflow.parentRunId`` so MLflow nests the run under it; the git commit, host, source recipe and
  the cost method, grid country and device;
* **artifacts** — the resolved recipe as ``poise/config.json`` and every stored artifact (weights as
  safetensors, JSON tables, figures) under ``poise/artifacts/<name><suffix>``.

Exporting again never duplicates: the MLflow run tagged with the poise run ID is updated — only
parameters, metric points (step, value) and artifact files it does not hold yet are added, and tags
and status are set again. Start and end times are the poise run's; every metric point carries the
run's end time (poise keeps the step, not the wall time of each point).

``uri`` is a folder (an MLflow file store, created when missing; MLflow 3 keeps that backend in
maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``, which is set for it) or any MLflow tracking URI
(``sqlite:///mlflow.db``, ``http://host:5000``, ``file:///...``). Default: ``$MLFLOW_TRACKING_URI``,
else ``mlruns`` in the working directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poise.errors import UserError
from poise.store import RunRecord, Store

MAX_PARAM_VALUE = 6000  # MLflow's limit on a parameter value (characters)
MAX_KEY = 250  # ... and on a key
BATCH = 100  # parameters or tags per log_batch call (metrics: 1,000)
STATUS = {"done": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "running": "RUNNING"}
RUN_ID_TAG = "poise.run_id"
_SUFFIX = {"safetensors": ".safetensors", "image/png": ".png", "application/json": ".json", "text/plain": ".txt",
           "application/jsonl": ".jsonl"}


@dataclass
class Exported:
    """What one run's export did."""

    run_id: str
    mlflow_run_id: str
    created: bool
    params: int
    metrics: int
    artifacts: int


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """A nested recipe as ``{dotted.key: text}``: lists by index, strings as they are, the rest as JSON."""
    out: dict[str, str] = {}
    if isinstance(config, dict):
        items: Iterable[tuple[Any, Any]] = config.items()
    elif isinstance(config, list | tuple):
        items = enumerate(config)
    else:
        text = config if isinstance(config, str) else json.dumps(config)
        return {prefix: text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 1] + "…"}
    empty = True
    for k, v in items:
        empty = False
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    if empty and prefix:
        out[prefix] = "[]" if isinstance(config, list | tuple) else "{}"
    return {k: v for k, v in out.items() if len(k) <= MAX_KEY}


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def tracking_uri(uri: str | None) -> str:
    """The tracking URI for ``uri``: a folder becomes a file store, URLs pass through; see the module doc."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
    if "://" in uri or uri.startswith(("databricks", "sqlite:", "postgresql:", "mysql:", "mssql:")):
        scheme = uri.split(":", 1)[0].lower()
        if scheme == "file":
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return uri
    path = Path(uri).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file; expected a folder for an MLflow file store or a tracking URI "
                        "(sqlite:///mlflow.db, http://host:5000)", where="--uri")
    path.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return path.resolve().as_uri()


def connect(uri: str | None, experiment: str) -> tuple[Any, str]:
    """An ``MlflowClient`` on ``uri`` and the ID of ``experiment`` (created when missing)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UserError("MLflow is not installed; expected `pip install poise[track]` (mlflow-skinny)",
                        where="poise export mlflow") from None
    resolved = tracking_uri(uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # an unreachable server fails in seconds
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        client = MlflowClient(tracking_uri=resolved)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            exp_id = client.create_experiment(experiment)
        else:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            exp_id = exp.experiment_id
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to reach or open the store is the URI's
        raise UserError(f"cannot use MLflow tracking URI {resolved!r}: {type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}; expected a folder, or a reachable tracking URI such as "
                        "sqlite:///mlflow.db or http://host:5000", where="--uri") from None
    return client, exp_id


def _find(client: Any, exp_id: str, run_id: str) -> Any | None:
    found = client.search_runs([exp_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'", max_results=2)
    return found[0] if found else None


def _tags(store: Store, run: RunRecord, parent_mlflow: str | None) -> dict[str, str]:
    cost = store.cost(run.id)
    tags = {
        RUN_ID_TAG: run.id,
        "poise.kind": run.kind,
        "poise.name": run.name,
        "poise.seed": str(run.seed),
        "poise.status": run.status,
        "poise.config_hash": run.config_hash,
        "poise.quick": str(run.quick).lower(),
        "poise.parent_id": run.parent_id or "",
        "poise.source": run.source or "",
        "poise.host": run.host or "",
        "poise.cost.method": cost.method,
        "poise.cost.country": cost.country or "",
        "poise.cost.device": cost.device or "",
        "mlflow.runName": run.name,
        "mlflow.source.git.commit": run.git_commit or "",
        "mlflow.note.content": str(run.config.get("description", "")),
    }
    if parent_mlflow:
        tags["mlflow.parentRunId"] = parent_mlflow
    if run.error:
        tags["poise.error"] = run.error.splitlines()[0][:5000]
    return {k: v for k, v in tags.items() if v != ""}


def export_run(client: Any, exp_id: str, store: Store, run: RunRecord, *, artifacts: bool = True) -> Exported:
    """Create or update the MLflow run of ``run``; only what it lacks is added (see the module doc)."""
    from mlflow.entities import Metric, Param, RunTag

    existing = _find(client, exp_id, run.id)
    parent = _find(client, exp_id, run.parent_id) if run.parent_id else None
    tags = _tags(store, run, parent.info.run_id if parent else None)
    started_ms = int(run.started * 1000)
    if existing is None:
        mrun = client.create_run(exp_id, start_time=started_ms, tags={RUN_ID_TAG: run.id}, run_name=run.name)
        mid, have_params = mrun.info.run_id, {}
    else:
        mid, have_params = existing.info.run_id, dict(existing.data.params)
    # parameters: the flattened recipe (MLflow keeps a parameter's first value; changed ones cannot be re-logged)
    params = [Param(k, v) for k, v in sorted(flatten(run.config).items()) if k not in have_params]
    for chunk in _chunks(params, BATCH):
        client.log_batch(mid, params=chunk)
    for chunk in _chunks([RunTag(k, v) for k, v in tags.items()], BATCH):
        client.log_batch(mid, tags=chunk)
    # metrics at their steps, plus costs the run never logged as metrics
    ts = int((run.ended or time.time()) * 1000)
    points: dict[str, list[tuple[int, float]]] = {}
    for row in store.metrics([run.id]):
        points.setdefault(row.key, []).append((row.step, row.value))
    for k, v in store.cost(run.id).as_metrics().items():
        points.setdefault(f"cost.{k}", [(0, v)])
    new: list[Any] = []
    for key, pts in sorted(points.items()):
        have = {(m.step, m.value) for m in client.get_metric_history(mid, key)} if existing is not None else set()
        new += [Metric(key, value, ts, step) for step, value in pts if (step, value) not in have]
    for chunk in _chunks(new, 1000):
        client.log_batch(mid, metrics=chunk)
    n_art = _export_artifacts(client, mid, store, run, existing is not None) if artifacts else 0
    status = STATUS.get(run.status, "RUNNING")
    if status != "RUNNING":
        client.set_terminated(mid, status, end_time=int((run.ended or time.time()) * 1000))
    return Exported(run.id, mid, existing is None, len(params), len(new), n_art)


def _export_artifacts(client: Any, mid: str, store: Store, run: RunRecord, existed: bool) -> int:
    have = set()
    if existed:
        have = {f.path for f in client.list_artifacts(mid, "poise")} | {
            f.path for f in client.list_artifacts(mid, "poise/artifacts")}
    logged = 0
    with tempfile.TemporaryDirectory(prefix="poise-mlflow-") as tmp:
        if "poise/config.json" not in have:
            cfg = Path(tmp) / "config.json"
            cfg.write_text(json.dumps(run.config, indent=2, sort_keys=True), encoding="utf-8")
            client.log_artifact(mid, str(cfg), "poise")
            logged += 1
        for a in store.artifacts(run.id):
            name = a.name.replace("/", "_") + _SUFFIX.get(a.media, a.path.suffix)
            if f"poise/artifacts/{name}" in have or not a.path.is_file():
                continue
            dest = Path(tmp) / "a" / name
            dest.parent.mkdir(exist_ok=True)
            shutil.copyfile(a.path, dest)
            client.log_artifact(mid, str(dest), "poise/artifacts")
            dest.unlink()
            logged += 1
    return logged


def export_runs(store: Store, run_ids: list[str] | None, *, uri: str | None = None, experiment: str = "poise",
                artifacts: bool = True) -> list[Exported]:
    """Export the named runs (IDs or unique prefixes), or every run when ``run_ids`` is None, oldest first."""
    runs = store.list_runs() if run_ids is None else [store.get_run(r) for r in dict.fromkeys(run_ids)]
    runs = sorted({r.id: r for r in runs}.values(), key=lambda r: r.started)  # parents before the runs they trained
    client, exp_id = connect(uri, experiment)
    return [export_run(client, exp_id, store, r, artifacts=artifacts) for r in runs]
