"""Executing recipes: create the run record, wrap it in cost tracking, call the kind, record the end.

Also resumes killed runs (``poise runs resume ID``) and trains the runs a recipe depends on (teachers,
base models) before it, reusing any finished run with the same config hash.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch
from sqlalchemy.exc import OperationalError

from poise import prediction
from poise.carbon import CostTracker
from poise.context import DivergedError, RunContext
from poise.errors import DiskFull, Pruned, RunInterrupted, Terminated, UserError
from poise.recipes import Recipe, build_recipe
from poise.registry import get_kind
from poise.store import HEARTBEAT_S, STALE_S, RunRecord, Store
from poise.ui import UI, get_ui

Intermediate = Callable[[str, float, int], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; an unavailable device is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but no CUDA device is available; expected cpu or auto", field="device")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("MPS was asked for but is not available; expected cpu or auto", field="device")
    return torch.device(name)


def is_alive(rec: RunRecord) -> bool:
    """Whether a run marked running still has an owner: a live process on this host, or, on another host,
    one whose heartbeat is younger than ``STALE_S``."""
    if rec.status != "running":
        return False
    if rec.host != socket.gethostname():
        return rec.heartbeat is None or time.time() - rec.heartbeat < STALE_S
    if not rec.pid or rec.pid == os.getpid():
        return False
    try:
        return psutil.Process(rec.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class _Heartbeat:
    """Renews the lease (heartbeat) of the runs this process executes, from a daemon thread."""

    def __init__(self, store: Store, run_ids: list[str]):
        self.store, self.run_ids = store, run_ids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="poise-heartbeat", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            # a missed beat is retried next time; the run itself reports store errors
            with contextlib.suppress(Exception):
                self.store.beat(list(self.run_ids))

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _non_finite_result(store: Store, run_id: str) -> str | None:
    """The first evaluation metric of a run that is NaN (a diverged model must not finish ``done``)."""
    for key, m in sorted(store.final_metrics([run_id]).get(run_id, {}).items()):
        if key.split(".", 1)[0] in ("utility", "robustness", "safety") and math.isnan(m.value):
            return key
    return None


class Runner:
    """Runs recipes against one store (and is the :class:`poise.context.RunHost` of the runs it starts)."""

    def __init__(self, store: Store, ui: UI | None = None, *, device: str | None = None):
        self.store = store
        self.ui = ui or get_ui()
        self.device_override = device
        self._active: list[RunContext] = []

    def run(self, recipe: Recipe, *, parent_id: str | None = None, on_start: Callable[[str], None] | None = None,
            intermediate: Intermediate | None = None) -> RunRecord:
        """Start a new run of ``recipe`` and carry it to the end (after its preflight checks).

        ``on_start(run_id)`` is called once the run is recorded (a sweep links its trial to it);
        ``intermediate(name, value, step)`` receives what the kind reports with ``ctx.report_intermediate``
        and may raise :class:`~poise.errors.Pruned` to stop the run (it then ends ``pruned``).
        """
        spec = get_kind(recipe.kind)
        resolve_device(self.device_override or recipe.device)
        recipe.preflight()
        run_id = self.store.create_run(
            kind=recipe.kind, name=recipe.display_name, config=recipe.resolved(), config_hash=recipe.config_hash(),
            seed=recipe.seed, quick=recipe.is_quick, source=str(recipe.source) if recipe.source else None,
            parent_id=parent_id,
        )
        if on_start is not None:
            on_start(run_id)
        return self._execute(spec.run, recipe, run_id, intermediate)

    def resume(self, run_id: str, *, intermediate: Intermediate | None = None) -> RunRecord:
        """Continue a killed or failed run from its last checkpoint."""
        rec = self.store.get_run(run_id)
        if rec.status == "done":
            raise UserError(f"run {rec.id} already finished; nothing to resume", where="run")
        if is_alive(rec):
            raise UserError(f"run {rec.id} is still running (pid {rec.pid} on {rec.host}); stop it first", where="run")
        recipe = build_recipe(rec.config, where=f"run {rec.id}")
        recipe._quick = rec.quick
        if rec.source:
            recipe._source = Path(rec.source)
        resolve_device(self.device_override or recipe.device)
        dead = rec.pid if rec.status == "running" and rec.host == socket.gethostname() else None
        if not self.store.claim(rec.id, dead_pid=dead):  # another process took it since we looked
            now = self.store.get_run(rec.id)
            raise UserError(f"run {rec.id} is being continued by pid {now.pid} on {now.host}; one owner at a time",
                            where="run")
        self.ui.info(f"resuming run {rec.id} ({rec.kind})")
        return self._execute(get_kind(recipe.kind).run, recipe, rec.id, intermediate)

    def _execute(self, fn: Any, recipe: Recipe, run_id: str, intermediate: Intermediate | None = None) -> RunRecord:
        device = resolve_device(self.device_override or recipe.device)
        segment = self.store.next_segment(run_id)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        cost = CostTracker(recipe.cost.country, pue=recipe.cost.pue, device=str(device),
                           track_energy=recipe.cost.track_energy, device_label=label)
        if self._active:
            self._active[-1]._cost.pause()
        cost.start()
        ctx = RunContext(run_id=run_id, recipe=recipe, store=self.store, device=device, host=self, cost=cost,
                         segment=segment, intermediate=intermediate)
        self._active.append(ctx)
        status, error = "failed", None
        try:
            with _Heartbeat(self.store, [c.run_id for c in self._active]):
                fn(recipe, ctx)
            ctx.flush_metrics()
            bad = _non_finite_result(self.store, run_id)
            if bad is not None:
                raise DivergedError(f"metric {bad} is NaN: the model diverged or its evaluation failed; the run can "
                                    "be resumed from its last checkpoint with other settings", where=f"run {run_id}")
            status = "done"
        except Pruned as e:
            status, error = "pruned", str(e)
        except (KeyboardInterrupt, RunInterrupted) as e:
            status, error = "interrupted", ("terminated" if isinstance(e, Terminated) else "interrupted by the user")
            raise RunInterrupted(f"run {run_id} ({recipe.display_name}) stopped at step {ctx.step}; continue it with "
                                 f"poise runs resume {run_id}", where="interrupted") from None
        except UserError as e:
            error = e.line()
            raise
        except OSError as e:
            if e.errno != errno.ENOSPC:
                error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
                raise
            error = "no space left on the device"
            raise DiskFull(f"no space left on the device while run {run_id} was writing; free some space, then "
                           f"poise runs resume {run_id}", where=getattr(e, "filename", None) or "disk") from None
        except Exception as e:
            error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
            raise
        finally:
            self._active.pop()
            record = cost.stop()
            try:
                ctx.flush_metrics()
                self.store.record_cost(run_id, segment, record)
                if status == "done":
                    total = self.store.cost(run_id)
                    rows = [(k, "cost", "min", ctx.step, v) for k, v in total.as_metrics().items()]
                    if ctx.flops_per_step:
                        rows.append(("flops", "cost", "min", ctx.step, float(ctx.flops_per_step * ctx.step)))
                    self.store.log_metrics(run_id, rows)
                    prediction.finish(self.store, run_id, total)
                self.store.set_status(run_id, status, error=error)
            except OperationalError as e:  # e.g. a full disk: the run stays resumable from its checkpoint
                self.ui.info(f"could not record the end of run {run_id}: {e.orig}")
            if self._active:
                self._active[-1]._cost.resume()
        return self.store.get_run(run_id)

    def sweep(self, ctx: RunContext, recipe_path: Path, params: list[Any], objectives: list[str], *, trials: int,
              study: str, overrides: dict[str, Any], seed: int) -> Any:
        """A ``poise sweep`` study run inside ``ctx``'s run: its trials are children of that run (costs not
        counted twice), and re-running continues the study (see :func:`poise.sweep.run_sweep`)."""
        from poise.sweep import run_sweep

        return run_sweep(self.store, recipe_path, params, objectives, trials=trials, study=study,
                         overrides=overrides, quick=ctx.quick, seed=seed, runner=self, parent_id=ctx.run_id)

    def child(self, ctx: RunContext, recipe: Recipe, *, field: str) -> RunRecord:
        """The finished run of ``recipe`` for ``ctx``'s run: reused by config hash, resumed, or run now."""
        found = self.store.find_done(recipe.config_hash(), eval_split=recipe.eval_split)
        if found is not None and found.config.get("eval") == recipe.resolved().get("eval"):
            return found  # the same training, scored by the same evaluations (a changed list runs again)
        unfinished = self.store.find_unfinished(recipe.config_hash())
        if unfinished is not None and unfinished.config.get("eval_split", "test") != recipe.eval_split:
            unfinished = None
        # a run's result must not depend on whether its dependencies were already in the store: the
        # nested run seeds and consumes the global RNGs, so they are put back as they were afterwards
        state = ctx._rng_state()
        try:
            active = {c.run_id for c in self._active}  # never "resume" a run that is running in this process
            if unfinished is not None and unfinished.id not in active and not is_alive(unfinished):
                self.ui.info(f"{field}: resuming unfinished run {unfinished.id} of {recipe.display_name}")
                return self.resume(unfinished.id)
            self.ui.info(f"{field}: training {recipe.display_name} first")
            return self.run(recipe, parent_id=ctx.run_id)
        finally:
            ctx._set_rng_state(state)
