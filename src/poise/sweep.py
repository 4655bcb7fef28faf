"""``poise sweep`` and ``poise worker``: optuna studies over recipe fields, every trial a normal run in the store.

A study records what it runs — the recipe, the ``--set`` overrides, the search space, the objectives,
the trial count, sampler and pruner — in its optuna user attributes (``"poise"``), so ``poise worker
--study NAME --storage URL`` on any machine needs nothing else. The storage is plain optuna RDB
storage (``optuna.db`` next to a SQLite store, or the store's PostgreSQL database), readable by
``optuna.load_study`` and optuna-dashboard.

Workers claim trials one at a time under a lock (a file lock for SQLite, a PostgreSQL advisory lock),
so a study gets exactly ``--trials`` finished (complete or pruned) trials however many workers pull
from it. Each trial sends optuna heartbeats; a worker killed mid-trial leaves its trial running until
the heartbeat goes stale, when any worker fails it and marks its run interrupted, then either retries
it (``--on-worker-death retry``: the retried trial resumes the same run from its last checkpoint, so
no run finishes twice) or samples a new one (``fail``). ``--executor ray`` runs each trial as a Ray
task on an existing cluster, through the same claim-and-run step.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from poise.errors import Pruned, UserError
from poise.evaluators import get_evaluator
from poise.recipes import Recipe, build_recipe, read_toml
from poise.registry import get_kind
from poise.runner import Runner
from poise.space import Param, check_space, conditions, grid_of, parse_param, suggest_all
from poise.store import Store, display_url, sqlalchemy_url
from poise.threads import torch_threads
from poise.ui import get_ui

__all__ = ["Param", "SweepSpec", "objective_direction", "parse_param", "run_sweep", "run_worker", "study_storage"]

SAMPLERS = ("auto", "nsga2", "tpe", "random", "grid")
PRUNERS = ("auto", "median", "hyperband", "none")
ON_WORKER_DEATH = ("retry", "fail")
MAX_RETRY = 2  # a trial whose worker dies this often is failed for good (an OOM kill would loop forever)


def quiet_optuna() -> Any:
    """optuna, with its INFO logs and experimental-feature warnings (heartbeats, grouped TPE) silenced."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def objective_direction(recipe: Any, objective: str) -> tuple[str, str]:
    """``(metric, "max"|"min")`` from an explicit ``:max``/``:min`` or the recipe's evaluators."""
    name, _, explicit = objective.partition(":")
    if explicit:
        if explicit not in ("max", "min"):
            raise UserError(f"expected :max or :min after the metric (got {explicit!r})", where="--objective")
        return name, explicit
    axis, _, metric = name.partition(".")
    if not metric:
        raise UserError(f"expected AXIS.METRIC such as utility.clean_acc (got {name!r})", where="--objective")
    if axis == "cost":
        return name, "min"
    for entry in recipe.eval:
        spec = get_evaluator(entry.name)
        for m in spec.metrics:
            if m.axis == axis and re.fullmatch(m.name.replace("*", ".*"), metric):
                return name, m.direction
    raise UserError(f"no evaluator of this recipe produces {name!r}; add :max or :min, or evaluate it",
                    where="--objective")


def study_storage(store: Store) -> str:
    """The default optuna storage of a store: ``optuna.db`` next to SQLite, the same PostgreSQL database."""
    if store.url.startswith("sqlite"):
        return f"sqlite:///{(Path(store.root) / 'optuna.db').resolve()}"
    return store.url


def check_storage_url(url: str) -> str:
    """The SQLAlchemy URL of an optuna storage: a SQLite file or PostgreSQL, else one clear line."""
    import sqlalchemy as sa

    expected = "expected sqlite:///PATH or postgresql://USER@HOST[:PORT]/DB"
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise UserError(f"cannot parse storage URL {url!r}; {expected}", where="--storage") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise UserError(f"a sweep needs a SQLite file, not memory; {expected}", where="--storage")
    elif backend != "postgresql":
        raise UserError(f"unsupported storage {backend!r}; {expected}", where="--storage")
    return sqlalchemy_url(url)


def is_database_url(url: str | None) -> bool:
    return bool(url) and str(url).split(":", 1)[0].split("+")[0] == "postgresql"


# --------------------------------------------------------------------------- what a study runs


@dataclass
class SweepSpec:
    """Everything a worker needs to run a study's trials (kept in the study's user attrs)."""

    recipe_path: str
    recipe_data: dict[str, Any]
    params: list[Param]
    objectives: list[tuple[str, str]]  # (axis.metric, max|min)
    trials: int
    overrides: dict[str, Any] = field(default_factory=dict)
    quick: bool = False
    sampler: str = "auto"
    seed: int = 0
    pruner: str = "auto"
    device: str | None = None
    on_worker_death: str = "retry"
    heartbeat: int = 10

    WHAT: ClassVar[tuple[str, ...]] = ("recipe_path", "recipe_data", "params", "objectives", "overrides", "quick")

    def recipe(self, values: dict[str, Any] | None = None) -> Recipe:
        return build_recipe(self.recipe_data, where=self.recipe_path, overrides={**self.overrides, **(values or {})},
                            quick=self.quick, source=Path(self.recipe_path))

    @property
    def sampler_name(self) -> str:
        if self.sampler != "auto":
            return self.sampler
        return "nsga2" if len(self.objectives) > 1 else "tpe"

    @property
    def pruner_name(self) -> str:
        if self.pruner != "auto":
            return self.pruner
        return "median" if len(self.objectives) == 1 else "none"

    def as_attrs(self) -> dict[str, Any]:
        return {"format": 1, "recipe_path": self.recipe_path, "recipe_data": self.recipe_data,
                "params": [p.as_dict() for p in self.params], "objectives": [list(o) for o in self.objectives],
                "trials": self.trials, "overrides": self.overrides, "quick": self.quick, "sampler": self.sampler,
                "seed": self.seed, "pruner": self.pruner, "device": self.device,
                "on_worker_death": self.on_worker_death, "heartbeat": self.heartbeat}

    @classmethod
    def from_attrs(cls, d: dict[str, Any]) -> SweepSpec:
        return cls(recipe_path=d["recipe_path"], recipe_data=d["recipe_data"],
                   params=[Param.from_dict(p) for p in d["params"]],
                   objectives=[(o[0], o[1]) for o in d["objectives"]], trials=int(d["trials"]),
                   overrides=dict(d["overrides"]), quick=bool(d["quick"]), sampler=d["sampler"], seed=int(d["seed"]),
                   pruner=d["pruner"], device=d["device"], on_worker_death=d["on_worker_death"],
                   heartbeat=int(d["heartbeat"]))

    def what(self) -> dict[str, Any]:
        attrs = self.as_attrs()
        return {k: attrs[k] for k in self.WHAT}


def _json_roundtrip(data: Any) -> Any:
    import json

    return json.loads(json.dumps(data, default=str))


def prepare(recipe_path: Path, params: list[Param], objectives: list[str], *, trials: int, quick: bool,
            overrides: dict[str, Any] | None, seed: int, device: str | None, sampler: str = "auto",
            pruner: str = "auto", on_worker_death: str = "retry", heartbeat: int = 10) -> SweepSpec:
    """Check everything a sweep can get wrong before any trial: trials, the space against the recipe
    (every field at both ends of its range, under its conditions), objectives, sampler and pruner."""
    if trials < 1:
        raise UserError(f"expected at least one trial (got {trials})", where="--trials")
    if not params:
        raise UserError("nothing to search: give at least one --param FIELD=SPACE or a --space file", where="sweep")
    if not any(p.searched for p in params):
        raise UserError("every param is fixed; expected at least one range or choice to search", where="sweep")
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}", where="--sampler")
    if pruner not in PRUNERS:
        raise UserError(f"unknown pruner {pruner!r}; expected one of {', '.join(PRUNERS)}", where="--pruner")
    if on_worker_death not in ON_WORKER_DEATH:
        raise UserError(f"expected retry or fail (got {on_worker_death!r})", where="--on-worker-death")
    if not 1 <= heartbeat <= 3600:
        raise UserError(f"expected 1 to 3600 seconds (got {heartbeat})", where="--heartbeat")
    check_space(params)
    path = Path(recipe_path)
    spec = SweepSpec(recipe_path=str(path.resolve()), recipe_data=_json_roundtrip(read_toml(path)), params=params,
                     objectives=[], trials=trials, overrides=dict(overrides or {}), quick=quick, sampler=sampler,
                     seed=seed, pruner=pruner, device=device, on_worker_death=on_worker_death, heartbeat=heartbeat)
    spec.recipe_path = str(path)  # errors name the file as the user gave it
    base = spec.recipe()
    for p in params:  # fail before any trial if a field does not exist or cannot take the value
        cond = conditions(p, params)
        for end in p.ends():
            try:
                spec.recipe({**cond, p.field: end})
            except UserError as e:
                raise UserError(e.message, where=e.where, field=e.field or p.field) from None
    spec.objectives = [objective_direction(base, o) for o in objectives]
    if not spec.objectives:
        raise UserError("expected at least one --objective AXIS.METRIC", where="--objective")
    if len({o for o, _ in spec.objectives}) != len(spec.objectives):
        raise UserError("an objective is named twice", where="--objective")
    if len(spec.objectives) > 1 and pruner not in ("auto", "none"):
        raise UserError("pruning needs a single objective (optuna prunes single-objective studies only)",
                        where="--pruner")
    if spec.sampler_name == "grid":
        grid_of(params)
    spec.recipe_path = str(path.resolve())  # workers elsewhere resolve dependencies next to it
    return spec


def make_sampler(spec: SweepSpec, number: int) -> Any:
    """A fresh sampler for trial ``number``, seeded from (seed, number): one process reproduces a
    study exactly, and workers never draw the same random start."""
    import optuna

    seed = int(np.random.SeedSequence([spec.seed, number]).generate_state(1)[0])
    name = spec.sampler_name
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, spec.trials // 2)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":  # its grid ids index a seed-shuffled order: one seed for the whole study
        return optuna.samplers.GridSampler(grid_of(spec.params), seed=spec.seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, spec.trials // 3)),
                                      multivariate=True, group=True, constant_liar=True)


def make_pruner(spec: SweepSpec) -> Any:
    import optuna

    return {"median": optuna.pruners.MedianPruner(), "hyperband": optuna.pruners.HyperbandPruner(),
            "none": optuna.pruners.NopPruner()}[spec.pruner_name]


# --------------------------------------------------------------------------- storage, study, lock


def open_storage(url: str, *, heartbeat: int | None = None, on_stale: Any = None) -> Any:
    """Optuna RDB storage at ``url`` (tables created when new); an unreachable database is one line."""
    import optuna
    import sqlalchemy as sa

    url = check_storage_url(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if is_database_url(url):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat,
                  "heartbeat_stale_trial_callback": on_stale}
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
        raise UserError(f"cannot open storage: {' '.join(str(e.orig).split())}", where=display_url(url)) from None
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as e:
        raise UserError(f"cannot use storage URL: {e}", where="--storage") from None


class ClaimLock:
    """Serialises trial claims across processes and machines: ``flock`` next to a SQLite storage file,
    a PostgreSQL advisory lock on the storage database. Release is idempotent (a trial releases the
    lock as soon as optuna has created it)."""

    def __init__(self, url: str, study_name: str):
        import sqlalchemy as sa

        self.url = check_storage_url(url)
        self.key = zlib.crc32(f"poise-sweep:{study_name}".encode())
        self._held = False
        self._file = None
        self._conn = None
        if is_database_url(self.url):
            self._engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool,
                                            connect_args={"connect_timeout": 10})
        else:
            db = Path(sa.engine.make_url(self.url).database or "")
            self._file = open(db.with_name(db.name + ".lock"), "a+b")  # noqa: SIM115 - held for the worker's life

    def acquire(self) -> None:
        import sqlalchemy as sa

        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        else:
            if self._conn is None:
                self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        self._held = True

    def release(self) -> None:
        import sqlalchemy as sa

        if not self._held:
            return
        self._held = False
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        else:
            self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})

    def close(self) -> None:
        self.release()
        if self._file is not None:
            self._file.close()
        if self._conn is not None:
            self._conn.close()
            self._engine.dispose()

    def __enter__(self) -> ClaimLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _stale_handler(store: Store, spec_ref: list[SweepSpec]) -> Any:
    """What happens to a trial whose worker stopped sending heartbeats: its run is marked interrupted,
    and the trial is retried (same params and run, resumed from its checkpoint) or left failed."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)

    def on_stale(study: Any, trial: Any) -> None:
        run_id = trial.user_attrs.get("run")
        if run_id:
            try:
                rec = store.get_run(run_id)
                if rec.status == "running":
                    store.set_status(run_id, "interrupted",
                                     error=f"the worker running trial {trial.number} of study {study.study_name} "
                                           f"stopped sending heartbeats")
            except UserError:
                pass
        if spec_ref[0].on_worker_death == "retry":
            retry(study, trial)

    return on_stale


def load_study(storage_url: str, name: str, store: Store) -> tuple[Any, SweepSpec]:
    """The study ``name`` with its spec, on a storage with heartbeats (what a worker pulls trials from)."""
    import optuna

    probe = open_storage(storage_url)
    try:
        names = optuna.get_all_study_names(probe)
        if name not in names:
            raise UserError(f"no study {name!r} in this storage (it has: {', '.join(names) or 'none'})",
                            where="--study")
        attrs = optuna.load_study(study_name=name, storage=probe).user_attrs.get("poise")
    finally:
        probe.remove_session()
        probe.engine.dispose()
    if attrs is None:
        raise UserError(f"study {name!r} was not made by poise sweep (it records no recipe)", where="--study")
    spec = SweepSpec.from_attrs(attrs)
    ref = [spec]
    storage = open_storage(storage_url, heartbeat=spec.heartbeat, on_stale=_stale_handler(store, ref))
    st = optuna.load_study(study_name=name, storage=storage, pruner=make_pruner(spec))
    return st, spec


def create_study(storage_url: str, name: str, spec: SweepSpec) -> Any:
    """Create the study (or join it when it runs the same recipe, space and objectives)."""
    import optuna

    storage = open_storage(storage_url)
    try:
        st = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                 directions=["maximize" if d == "max" else "minimize" for _, d in spec.objectives])
        old = st.user_attrs.get("poise")
        if old is not None:
            other = SweepSpec.from_attrs(old)
            differ = [k for k, v in other.what().items() if v != spec.what()[k]]
            if differ:
                raise UserError(f"study {name!r} already runs a different sweep ({', '.join(differ)} differ); "
                                f"expected the same recipe, space and objectives, or another --study", where="--study")
        if old != spec.as_attrs():
            st.set_user_attr("poise", spec.as_attrs())
    finally:
        storage.remove_session()
        storage.engine.dispose()
    return st


# --------------------------------------------------------------------------- running trials


def _finished(trials: list[Any]) -> int:
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


def work(study: Any, spec: SweepSpec, store: Store, *, storage_url: str, device: str | None = None,
         max_trials: int | None = None, runner: Runner | None = None, parent_id: str | None = None) -> int:
    """Claim and run trials until the study has ``spec.trials`` finished ones (or this worker ran
    ``max_trials``); returns how many this worker ran. While the last trials run elsewhere it waits,
    failing stale ones, so a trial lost with its worker is still retried or replaced."""
    import optuna
    from optuna.trial import TrialState

    runner = runner or Runner(store, get_ui(), device=device if device is not None else spec.device)
    lock = ClaimLock(storage_url, study.study_name)
    single = len(spec.objectives) == 1 and spec.pruner_name != "none"

    def _started(trial: optuna.Trial, rid: str) -> None:
        trial.set_user_attr("run", rid)
        store.set_study(rid, study.study_name)

    def objective(trial: optuna.Trial) -> Any:
        lock.release()  # optuna has created (or popped) this trial: other workers may claim the next
        values = suggest_all(trial, spec.params)
        hook = None
        if single:
            key = spec.objectives[0][0]

            def hook(name: str, value: float, step: int) -> None:
                if name != key or not math.isfinite(value):
                    return
                trial.report(value, step)
                if trial.should_prune():
                    raise Pruned(f"pruned by the sweep at step {step} ({name} = {value:.4g})")

        prior = trial.user_attrs.get("run")  # a retried trial continues the run of the trial it retries
        rec = store.get_run(prior) if prior else None
        if rec is not None and rec.status == "done":
            pass  # finished before its worker died: never run twice
        elif rec is not None:
            rec = runner.resume(rec.id, intermediate=hook)
        else:
            rec = runner.run(spec.recipe(values), parent_id=parent_id,
                             on_start=lambda rid: _started(trial, rid), intermediate=hook)
        if rec.status == "pruned":
            raise optuna.TrialPruned(rec.error or "pruned")
        finals = store.final_metrics([rec.id]).get(rec.id, {})
        missing = [m for m, _ in spec.objectives if m not in finals]
        if missing:
            raise UserError(f"run {rec.id} did not log {', '.join(missing)}", where="--objective")
        out = [finals[m].value for m, _ in spec.objectives]
        return out[0] if len(out) == 1 else out

    ran = 0
    try:
        while max_trials is None or ran < max_trials:
            with lock:
                optuna.storages.fail_stale_trials(study)
                trials = study.get_trials(deepcopy=False)
                if _finished(trials) >= spec.trials:
                    return ran
                live = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING,
                                       TrialState.WAITING) for t in trials)
                if live < spec.trials or any(t.state == TrialState.WAITING for t in trials):
                    study.sampler = make_sampler(spec, len(trials))
                    study.optimize(objective, n_trials=1, gc_after_trial=False)
                    ran += 1
                    continue
            time.sleep(min(spec.heartbeat, 0.5))  # the last trials run elsewhere: wait for them (or their stale end)
    finally:
        lock.close()
    return ran


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_worker(jobs: int) -> int:
    """Torch threads for each of ``jobs`` local workers: the cores shared out, at least one each
    (``jobs`` processes with every core each would oversubscribe the machine and spin)."""
    return max(1, _cores() // max(1, jobs))


def _spawn_workers(n: int, name: str, storage_url: str, store: Store, device: str | None,
                   threads: int) -> list[Any]:
    """Start ``n`` local workers. Where the OS forks (Linux), they are forked from this process after
    the trial's modules are imported, so a worker starts pulling trials at once instead of paying the
    imports again (seconds each, which at tour size is a whole trial); elsewhere they are
    ``poise worker`` processes."""
    import multiprocessing as mp

    store_url, root = _absolute_store_url(store), str(Path(store.root).resolve())
    if sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods():
        ctx = mp.get_context("fork")
        procs = [ctx.Process(target=_forked_worker, args=(name, storage_url, store_url, root, device, threads),
                             name=f"poise-worker-{i}") for i in range(n)]
        for proc in procs:
            proc.start()
        return procs
    env = dict(os.environ, POISE_STORAGE=storage_url, POISE_STORE=store_url, POISE_HOME=root,
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "poise", "--quiet", "worker", "--study", name]
    if device:
        cmd += ["--device", device]
    # their summaries would only repeat this process's (and break its --json output); errors go to stderr
    return [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL) for _ in range(n)]


def _forked_worker(name: str, storage_url: str, store_url: str, root: str, device: str | None,
                   threads: int) -> None:
    """A forked worker: its own store and storage connections (none are shared with the parent), no
    output but one line on stderr if it fails; the exit code says how it went."""
    import torch

    from poise.ui import UI, set_ui

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    set_ui(UI(quiet=True))
    torch.set_num_threads(threads)
    os.environ.update(POISE_STORAGE=storage_url, POISE_STORE=store_url, POISE_HOME=root)
    try:
        run_worker(storage_url, name, Store(store_url, root), device=device)
    except UserError as e:
        print(f"poise worker: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - one line for the parent's summary, not a traceback per worker
        print(f"poise worker: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


def _preload(spec: SweepSpec) -> None:
    """Import what a trial of ``spec`` runs, so forked workers start with it: torch and its compiler front
    end (every optimizer step imports ``torch._dynamo`` on first use, seconds of work), the kind, its
    evaluators, and the modules its domain imports lazily inside runs (the domain package's ``PRELOAD``)."""
    import importlib

    import torch._dynamo  # noqa: F401

    recipe = spec.recipe()
    run_fn = get_kind(recipe.kind).run
    for ev in recipe.eval:
        get_evaluator(ev.name)
    package = importlib.import_module(run_fn.__module__.rsplit(".", 1)[0])
    for module in getattr(package, "PRELOAD", ()):
        importlib.import_module(module)


def _wait(worker: Any) -> int:
    if isinstance(worker, subprocess.Popen):
        return worker.wait()
    worker.join()
    return worker.exitcode


def _absolute_store_url(store: Store) -> str:
    if store.url.startswith("sqlite:///"):
        return f"sqlite:///{Path(store.url.removeprefix('sqlite:///')).resolve()}"
    return store.url


def run_sweep(store: Store, recipe_path: Path, params: list[Param], objectives: list[str], *, trials: int,
              study: str | None = None, quick: bool = False, overrides: dict[str, Any] | None = None,
              seed: int = 0, device: str | None = None, storage: str | None = None, sampler: str = "auto",
              pruner: str = "auto", jobs: int = 1, executor: str = "local", address: str | None = None,
              gpus_per_trial: float = 0.0, on_worker_death: str = "retry", heartbeat: int = 10,
              runner: Runner | None = None, parent_id: str | None = None) -> Any:
    """Run trials until the study has ``trials`` finished ones; return the optuna study.

    ``runner`` runs this process's trials (default: a new one on ``store``); ``parent_id`` records them
    as children of a run (a study that tunes its rows).
    ``jobs`` local worker processes (this one and ``jobs - 1`` ``poise worker`` processes) pull trials;
    ``jobs=0`` only creates the study for workers started elsewhere. ``executor="ray"`` keeps ``jobs``
    trials in flight as Ray tasks (each with ``gpus_per_trial`` GPUs) on the cluster at ``address``.
    """
    optuna = quiet_optuna()
    if jobs < 0:
        raise UserError(f"expected --jobs >= 0 (got {jobs})", where="--jobs")
    if executor not in ("local", "ray"):
        raise UserError(f"unknown executor {executor!r}; expected local or ray", where="--executor")
    if not (math.isfinite(gpus_per_trial) and 0 <= gpus_per_trial <= 1024):
        raise UserError(f"expected a number of GPUs from 0 to 1024 (got {gpus_per_trial})", where="--gpus-per-trial")
    if executor == "local" and (address is not None or gpus_per_trial):
        raise UserError("--address and --gpus-per-trial need --executor ray", where="--executor")
    spec = prepare(recipe_path, params, objectives, trials=trials, quick=quick, overrides=overrides, seed=seed,
                   device=device, sampler=sampler, pruner=pruner, on_worker_death=on_worker_death,
                   heartbeat=heartbeat)
    storage_url = check_storage_url(storage or study_storage(store))
    name = study or f"{spec.recipe().display_name}:" + ",".join(p.field for p in params if p.searched)
    ray_session = connect_ray(address) if executor == "ray" and jobs > 0 else None
    create_study(storage_url, name, spec)
    try:
        if jobs == 0:
            pass
        elif executor == "ray":
            ray_sweep(name, storage_url, store, jobs=jobs, gpus_per_trial=gpus_per_trial, device=device)
        else:
            st, _ = load_study(storage_url, name, store)
            workers: list[Any] = []
            with torch_threads(threads_per_worker(jobs) if jobs > 1 else None) as threads:
                if jobs > 1:
                    _preload(spec)  # import the trial's modules once, before forking
                    workers = _spawn_workers(jobs - 1, name, storage_url, store, device, threads)
                try:
                    work(st, spec, store, storage_url=storage_url, device=device, runner=runner,
                         parent_id=parent_id)
                finally:
                    failed = sum(_wait(w) != 0 for w in workers)
            if failed:
                raise UserError(f"{failed} of {len(workers)} worker processes failed", where="--jobs")
    finally:
        if ray_session:
            import ray

            ray.shutdown()
    return optuna.load_study(study_name=name, storage=open_storage(storage_url))


def run_worker(storage_url: str, name: str, store: Store, *, device: str | None = None) -> Any:
    """``poise worker``: pull trials of study ``name`` until it has its trial count; return the study."""
    quiet_optuna()
    st, spec = load_study(storage_url, name, store)
    work(st, spec, store, storage_url=check_storage_url(storage_url), device=device)
    return st


def worker_store(storage_url: str) -> Store:
    """The run store a worker writes to when no ``--store`` is given: the storage's PostgreSQL
    database, or the SQLite store next to a local ``optuna.db``."""
    import sqlalchemy as sa

    url = check_storage_url(storage_url)
    if is_database_url(url):
        return Store(url)
    db = Path(sa.engine.make_url(url).database or "")
    return Store(root=db.parent)


# --------------------------------------------------------------------------- Ray


def connect_ray(address: str | None) -> bool:
    """Connect to the Ray cluster at ``address`` (HOST:PORT or ``auto``; none starts a local one)."""
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs Ray: pip install 'poise[ray]'", where="--executor") from None
    if address is not None and address != "auto":
        m = re.fullmatch(r"(?:ray://)?\[?([A-Za-z0-9_.:-]+?)\]?:(\d{1,5})", address.strip())
        if not m or not 0 < int(m.group(2)) < 65536:
            raise UserError(f"expected HOST:PORT or auto (got {address!r})", where="--address")
        try:
            socket.create_connection((m.group(1), int(m.group(2))), timeout=5).close()
        except OSError as e:
            raise UserError(f"cannot reach a Ray cluster at {address}: {e.strerror or e}", where="--address") from None
    try:
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(f"cannot connect to Ray: {' '.join(str(e).split())[:200]}", where="--address") from None
    return True


def _ray_trial(storage_url: str, name: str, store_url: str, store_root: str, env: dict[str, str],
               device: str | None) -> int:
    """One Ray task: claim and run one trial of the study (0 when the study needs no more)."""
    os.environ.update(env)
    quiet_optuna()
    store = Store(store_url, root=store_root)
    try:
        st, spec = load_study(storage_url, name, store)
        return work(st, spec, store, storage_url=storage_url, device=device, max_trials=1)
    finally:
        store.close()


def ray_sweep(name: str, storage_url: str, store: Store, *, jobs: int, gpus_per_trial: float,
              device: str | None) -> None:
    """Keep ``jobs`` trials in flight as Ray tasks until one finds the study finished."""
    import ray

    env = {k: v for k, v in os.environ.items()
           if k.startswith("POISE_") or k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH")}
    if gpus_per_trial and device is None:
        device = "cuda"
    task = ray.remote(num_cpus=1, num_gpus=gpus_per_trial, max_retries=0)(_ray_trial)
    args = (storage_url, name, _absolute_store_url(store), str(Path(store.root).resolve()), env, device)
    inflight: list[Any] = []
    done = False
    while True:
        while not done and len(inflight) < jobs:
            inflight.append(task.remote(*args))
        if not inflight:
            return
        ready, inflight = ray.wait(inflight, num_returns=1)
        try:
            ran = ray.get(ready[0])
        except ray.exceptions.RayTaskError as e:
            for ref in inflight:
                ray.cancel(ref, force=True)
            cause = getattr(e, "cause", None)
            if isinstance(cause, UserError):
                raise cause from None
            raise RuntimeError(f"a Ray trial failed: {' '.join(str(cause or e).split())[:300]}") from None
        if ran == 0:
            done = True

