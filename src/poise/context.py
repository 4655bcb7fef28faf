"""The run context: everything a recipe kind needs from poise, and nothing more.

A kind's ``run(cfg, ctx)`` reads top to bottom: build data and model, ask ``ctx.meter`` for the budget,
``ctx.optimizer``/``ctx.scheduler`` for the optimiser and lr schedule, ``ctx.track(...)`` what a
checkpoint holds, then ``for step in ctx.steps(meter): ...`` — the loop resumes after the last
checkpoint, checkpoints every ``train.checkpoint_every`` steps, and shows a progress bar; inside it,
``ctx.optimizer_step(loss, opt, sched)`` and ``with ctx.phase("attack"): ...`` to account time and
energy per phase (see :meth:`RunContext.phase`). Finally ``ctx.evaluate(model, data)`` runs the
recipe's evaluators and ``ctx.save_artifact`` stores the weights.

Kinds that build on other runs use ``ctx.dependency`` (a teacher, a base model), ``ctx.child_run`` (a
run this one asks for), ``ctx.run_record``, ``ctx.final_metrics`` and ``ctx.artifact``; files go through
``ctx.save_file``, ``ctx.incoming_path``/``ctx.adopt_file`` and ``ctx.scratch_dir``. Kinds never touch the
store or the runner directly. Cost tracking wraps the whole run from outside; kinds never call it.

A kind that can measure its objective while it trains (validation accuracy at each epoch end) passes
it to ``ctx.report_intermediate(name, value_or_fn, step)``: a single-objective sweep reports it to
optuna and may prune the run there (it then stops and ends with status ``pruned``); outside a sweep
the call does nothing, and a callable value is never even computed.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from poise.budget import BudgetMeter
from poise.errors import UserError
from poise.evaluators import run_evaluators
from poise.prediction import CostPredictor
from poise.recipes import Recipe, TrainCfg, load_recipe, resolve_recipe_path
from poise.schedules import BudgetSchedule
from poise.statefile import flatten, unflatten
from poise.store import ArtifactRecord, MetricRow, RunRecord, Store

METRIC_BATCH = 512  # training-log rows per write
METRIC_FLUSH_S = 2.0  # at most this long between writes of the training log

if TYPE_CHECKING:
    from poise.carbon import CostTracker
    from poise.ui import UI, ProgressTask


class DivergedError(UserError):
    """The loss or a metric became NaN or infinite: the run stops, ``failed``, resumable from its last
    good checkpoint (with other settings, e.g. a lower learning rate)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class RunHost(Protocol):
    """What a run needs from whatever executes it (:class:`poise.runner.Runner`): a UI, and running the
    runs it depends on."""

    ui: UI

    def child(self, ctx: RunContext, recipe: Recipe, *, field: str) -> RunRecord: ...

    def sweep(self, ctx: RunContext, recipe_path: Path, params: list[Any], objectives: list[str], *, trials: int,
              study: str, overrides: dict[str, Any], seed: int) -> Any: ...


class RunContext:
    """What a running kind sees: its store records, budget, schedule, device, RNG and progress."""

    def __init__(self, *, run_id: str, recipe: Recipe, store: Store, device: torch.device, host: RunHost,
                 cost: CostTracker, segment: int, intermediate: Callable[[str, float, int], None] | None = None):
        self.run_id = run_id
        self.cfg = recipe
        self._store = store
        self.device = device
        self._host = host
        self.quick = recipe.is_quick
        self.seed = recipe.seed
        self.step = 0
        self._cost = cost
        self._segment = segment
        self._tracked: dict[str, Any] = {}
        self._meter: BudgetMeter | None = None
        self.flops_per_step: int | None = None
        self._intermediate = intermediate
        self._predicted = False
        self._resumed = False
        self._bar: Any = None
        self._pending: list[tuple[str, str, str, int, float]] = []
        self._flushed = time.monotonic()
        seed_everything(recipe.seed)
        self.rng = np.random.default_rng(recipe.seed)

    # ------------------------------------------------------------------ logging

    def log_metric(self, name: str, value: float, *, step: int | None = None, axis: str = "train",
                   direction: str = "min") -> None:
        """Record one metric value at ``step`` (default: the current training step)."""
        self.log_metrics({name: value}, step=step, axis=axis, direction=direction)

    def log_metrics(self, values: dict[str, float], *, step: int | None = None, axis: str = "train",
                    direction: str = "min") -> None:
        """Record metric values at ``step``. Training-log rows (axis ``train``) are written in batches (every
        ``METRIC_BATCH`` rows or ``METRIC_FLUSH_S`` seconds, before every checkpoint and at the end of the
        run), so a kill loses only rows logged after the last checkpoint, which the resumed run logs
        again; rows of other axes (evaluations) are written at once."""
        s = self.step if step is None else step
        rows = [(k, axis, direction, s, float(v)) for k, v in values.items()]
        if axis != "train":
            self.flush_metrics()
            self._store.log_metrics(self.run_id, rows)
            return
        self._pending.extend(rows)
        if len(self._pending) >= METRIC_BATCH or time.monotonic() - self._flushed >= METRIC_FLUSH_S:
            self.flush_metrics()

    def flush_metrics(self) -> None:
        """Write the buffered training-log rows (one transaction)."""
        if self._pending:
            rows, self._pending = self._pending, []
            self._store.log_metrics(self.run_id, rows)
        self._flushed = time.monotonic()

    def report_intermediate(self, name: str, value: float | Callable[[], float], step: int | None = None) -> None:
        """Report an intermediate value of metric ``name`` (``axis.metric``, e.g. ``utility.clean_acc``
        measured on the validation split) at ``step``. In a sweep whose single objective is ``name`` the
        trial may be pruned here: :class:`~poise.errors.Pruned` is raised and the run ends ``pruned``
        (resumable from its last checkpoint). Elsewhere nothing happens; pass a callable to skip the
        measurement then."""
        if self._intermediate is None:
            return
        v = float(value() if callable(value) else value)
        self._intermediate(name, v, self.step if step is None else step)

    def info(self, message: str) -> None:
        self._host.ui.info(message)

    def progress(self, description: str, total: int | None) -> AbstractContextManager[ProgressTask]:
        """A progress bar with ETA for work outside ``ctx.steps`` (hidden by ``--quiet``)."""
        return self._host.ui.progress(description, total)

    def phase(self, name: str) -> AbstractContextManager[None]:
        """Count the time inside ``with ctx.phase(name):`` towards phase ``name`` (e.g. attack / update,
        rollout / learn, generate / reward / update, io / compute; free-form, nesting allowed).

        Cheap enough for every step: two clock reads (wall and process CPU time) on entry and exit, no
        energy tracker started or stopped. Energy per phase is the run's *measured* total split by
        share — CPU energy by the phase's process CPU time, RAM and GPU energy by its wall time — and
        labelled measured or estimated like the total (see :mod:`poise.phases`). Time outside every
        phase is reported as ``other``. The store keeps the split per run (``Store.phase_costs``).
        """
        return self._cost.phase(name)

    # ------------------------------------------------------------------ artifacts

    def save_artifact(self, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None
                      ) -> ArtifactRecord:
        """Store weights as a content-addressed safetensors artifact of this run."""
        return self._store.save_tensors(self.run_id, name, tensors, meta)

    def save_file(self, name: str, data: bytes, media: str, meta: dict[str, Any] | None = None) -> ArtifactRecord:
        """Store a file (PNG figure, JSON table) that reports show next to this run."""
        return self._store.save_file(self.run_id, name, data, media, meta)

    def load_artifact(
        self, run: RunRecord | str, name: str = "model"
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        run_id = run.id if isinstance(run, RunRecord) else run
        return self._store.load_tensors(run_id, name)

    def artifact(self, run: RunRecord | str, name: str = "model") -> ArtifactRecord:
        """The record (path, SHA-256, media, metadata) of artifact ``name`` of a run."""
        return self._store.artifact(run.id if isinstance(run, RunRecord) else run, name)

    def incoming_path(self, suffix: str = "") -> Path:
        """A fresh path on the store's filesystem to write a large file that :meth:`adopt_file` then moves in."""
        return self._store.incoming_dir / f".{self.run_id}-{uuid.uuid4().hex}{suffix}"

    def adopt_file(self, name: str, path: str | Path, media: str, meta: dict[str, Any] | None = None
                   ) -> ArtifactRecord:
        """Record a file written at :meth:`incoming_path` as artifact ``name`` of this run (moved, never copied)."""
        return self._store.adopt_file(self.run_id, name, path, media, meta)

    def scratch_dir(self, name: str) -> Path:
        """A folder of this run that survives a resume and is deleted with the run (caches, exports)."""
        path = self._store.checkpoint_dir(self.run_id) / "scratch" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ other runs

    def run_record(self, ref: RunRecord | str) -> RunRecord:
        """A run of the store by ``run:<id>``, ID or unique prefix."""
        return ref if isinstance(ref, RunRecord) else self._store.get_run(ref)

    def final_metrics(self, run: RunRecord | str) -> dict[str, MetricRow]:
        """A run's metrics at their last logged step, keyed ``axis.name``."""
        run_id = run.id if isinstance(run, RunRecord) else self.run_record(run).id
        if run_id == self.run_id:
            self.flush_metrics()
        return self._store.final_metrics([run_id]).get(run_id, {})

    def recipe(self, ref: str, *, field: str, overrides: dict[str, Any] | None = None) -> Recipe:
        """The recipe a dependency names (next to this recipe, or shipped), in this run's quick mode."""
        try:
            path = resolve_recipe_path(ref, self.cfg.source)
        except UserError as e:
            raise UserError(e.message, where=self.cfg.source or "recipe", field=field) from None
        return load_recipe(path, overrides, quick=self.quick)

    def dependency(self, ref: str, *, field: str, overrides: dict[str, Any] | None = None) -> RunRecord:
        """A finished run this one builds on (a teacher, a base model), trained first if missing.

        ``ref`` is ``run:<id>`` or a recipe file (next to this recipe, or among the shipped ones). A
        recipe's run is reused when the store already holds a finished run with the same config hash.
        """
        if ref.startswith("run:"):
            rec = self._store.get_run(ref)
            if rec.status != "done":
                raise UserError(f"run {rec.id} has status {rec.status}; expected a finished run",
                                where=self.cfg.source or "recipe", field=field)
            return rec
        return self.child_run(self.recipe(ref, field=field, overrides=overrides), field=field)

    def sweep(self, ref: str, params: list[Any], objectives: list[str], *, trials: int, study: str,
              overrides: dict[str, Any] | None = None, seed: int = 0, field: str = "") -> Any:
        """Tune the recipe ``ref`` names with ``poise sweep`` (``params`` from :func:`poise.sweep.parse_param`)
        until the optuna study ``study`` has ``trials`` finished trials; every trial is a child run of
        this one. Returns the optuna study (re-running continues it)."""
        try:
            path = resolve_recipe_path(ref, self.cfg.source)
        except UserError as e:
            raise UserError(e.message, where=self.cfg.source or "recipe", field=field or None) from None
        return self._host.sweep(self, path, params, objectives, trials=trials, study=study,
                                overrides=dict(overrides or {}), seed=seed)

    def child_run(self, recipe: Recipe, *, field: str = "") -> RunRecord:
        """The finished run of ``recipe``: reused when the store holds one with the same config hash,
        an unfinished one resumed, else run now as a child of this run."""
        return self._host.child(self, recipe, field=field or recipe.display_name)

    # ------------------------------------------------------------------ training plumbing

    def meter(self, steps_per_epoch: int | None = None, train: TrainCfg | None = None) -> BudgetMeter:
        """The budget meter of this run (resource budgets are measured on this run's own cost)."""
        train = train or self.cfg.train
        probe = None
        if train.budget.unit in ("kwh", "co2_g"):
            if not self.cfg.cost.track_energy:
                raise UserError("an energy or CO2 budget needs cost.track_energy = true", field="train.budget")
            attr = "energy_kwh" if train.budget.unit == "kwh" else "co2_g"
            probe = lambda: getattr(self._cost.snapshot(), attr)  # noqa: E731
        self._meter = BudgetMeter(train.budget, steps_per_epoch=steps_per_epoch, probe=probe)
        if not self._predicted:  # the run's first budget loop predicts its final cost (poise.prediction)
            self._predicted = True
            predictor = CostPredictor(self)
            self._meter.hooks.append(
                lambda step, m: None if self._resumed else predictor.after_step(step, m.total_steps, self._bar,
                                                                                done=m.done(step)))
        return self._meter

    def optimizer(self, params: Any, train: TrainCfg | None = None) -> torch.optim.Optimizer:
        """The recipe's optimiser (sgd, adam, adamw) over ``params``."""
        t = train or self.cfg.train
        if t.optimizer == "sgd":
            return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                                   nesterov=t.nesterov and t.momentum > 0)
        if t.optimizer == "adam":
            return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)

    def scheduler(self, optimizer: torch.optim.Optimizer, meter: BudgetMeter, train: TrainCfg | None = None
                  ) -> BudgetSchedule:
        """The recipe's lr schedule, reading the budget's total steps as it goes."""
        t = train or self.cfg.train
        return BudgetSchedule(optimizer, t.schedule, lambda: meter.total_steps)

    def optimizer_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler: Any = None, *,
                       params: Any = None, train: TrainCfg | None = None) -> None:
        """One update: zero the gradients, backpropagate ``loss``, clip them to ``train.grad_clip`` (the
        optimiser's parameters unless ``params`` is given), step the optimiser and the schedule.

        A loss that is NaN or infinite stops the run (:class:`DivergedError`) before it can reach the
        weights, so the last checkpoint stays good and the run can be resumed with other settings.
        """
        if not bool(torch.isfinite(loss.detach()).all()):
            value = loss.detach().float().mean().item()
            raise DivergedError(f"loss became {value} at step {self.step}; the run can be resumed from its last "
                                "checkpoint (e.g. with a lower train.lr)", where=f"run {self.run_id}")
        t = train or self.cfg.train
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip:
            if params is None:
                params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

    def autocast(self) -> AbstractContextManager[Any]:
        """Mixed precision on CUDA when ``train.amp`` is set; a no-op elsewhere."""
        if self.cfg.train.amp and self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return nullcontext()

    def count_flops(self) -> AbstractContextManager[Any]:
        """Wrap one training step: its FLOPs are counted once (torch's FlopCounterMode) and the run logs
        ``cost.flops`` = FLOPs per step × steps taken, which ``poise carbon estimate --calibrate`` reads."""
        if self.flops_per_step is not None:
            return nullcontext()
        return self._count_flops()

    @contextmanager
    def _count_flops(self) -> Iterator[None]:
        from torch.utils.flop_counter import FlopCounterMode

        mode = FlopCounterMode(display=False)
        with mode:
            yield
        self.flops_per_step = int(mode.get_total_flops())

    def track(self, **objects: Any) -> None:
        """Register what a checkpoint holds: objects with ``state_dict``/``load_state_dict``, or dicts."""
        self._tracked.update(objects)

    def steps(self, meter: BudgetMeter | None = None, *, description: str | None = None) -> Iterator[int]:
        """Yield optimizer step indices until the budget is spent, resuming after the last checkpoint.

        After each step's body the meter is updated, and every ``train.checkpoint_every`` steps (and
        at the end) the tracked objects, the meter and all RNG states are checkpointed. From 5 % of the
        budget on, the bar shows the run's predicted final time, energy and CO2 (:mod:`poise.prediction`).
        """
        meter = meter or self._meter
        if meter is None:
            raise RuntimeError("call ctx.meter(...) before ctx.steps()")
        every = self.cfg.train.checkpoint_every
        step = self.restore()
        label = description or f"{self.cfg.display_name} [{self.run_id[:6]}]"
        with self.progress(label, meter.total_steps) as bar:
            self._bar = bar  # the cost prediction (a meter hook) shows in it
            bar.update(step, meter.total_steps)
            while not meter.done(step):
                self.step = step
                yield step
                step += 1
                self.step = step
                bar.update(step, meter.total_steps)
                meter.after_step(step)
                if step % every == 0 or meter.done(step):
                    self.checkpoint(step)
        self._bar = None
        self.step = step
        self.log_metric("budget_used", meter.used_fraction(step), axis="train", direction="min")

    # ------------------------------------------------------------------ checkpoints

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "ctx": self.rng.bit_generator.state,
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        self.rng.bit_generator.state = state["ctx"]
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def checkpoint(self, step: int) -> Path:
        """Save tracked objects, the meter and RNG states at ``step``, and the cost so far.

        Weights or optimiser state that became NaN or infinite are never saved: the run stops
        (:class:`DivergedError`) and its last checkpoint stays the last good one."""
        payload: dict[str, Any] = {"rng": self._rng_state(), "objects": {}}
        for key, obj in self._tracked.items():
            payload["objects"][key] = obj if isinstance(obj, dict) else obj.state_dict()
        if self._meter is not None:
            payload["meter"] = self._meter.state_dict()
        tensors, skeleton = flatten(payload)
        for name, t in tensors.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise DivergedError(f"the training state became non-finite by step {step} "
                                    f"({name.removeprefix('s.').removeprefix('objects.')}); the run can "
                                    "be resumed from its last checkpoint (e.g. with a lower train.lr)",
                                    where=f"run {self.run_id}")
        self.flush_metrics()  # the log holds every row up to the checkpoint before the checkpoint exists
        path = self._store.save_checkpoint(self.run_id, step, tensors, {"step": step, "state": skeleton})
        self._store.record_cost(self.run_id, self._segment, self._cost.snapshot())
        return path

    def restore(self) -> int:
        """Load the newest intact checkpoint into the tracked objects; returns its step (0 when starting
        fresh). A checkpoint that cannot be read back (torn by a kill or a full disk) is passed over for the
        one before it."""
        for step, tensors, skeleton in self._store.checkpoints(self.run_id):
            try:
                payload = unflatten(tensors, skeleton["state"])
                for key, obj in self._tracked.items():
                    if key not in payload["objects"]:
                        raise KeyError(f"checkpoint of run {self.run_id} has no {key!r}")
                    state = payload["objects"][key]
                    if isinstance(obj, dict):
                        obj.clear()
                        obj.update(state)
                    else:
                        obj.load_state_dict(state)
                if self._meter is not None and "meter" in payload:
                    self._meter.load_state_dict(payload["meter"])
                self._set_rng_state(payload["rng"])
            except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
                self.info(f"checkpoint at step {step} of run {self.run_id} is unusable ({type(e).__name__}); "
                          "trying the one before")
                continue
            self.step = step
            self._resumed = True  # this segment makes no cost prediction: its loop started in an earlier one
            self.info(f"resumed run {self.run_id} at step {step}")
            return step
        return 0

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, model: Any, data: Any, *, step: int | None = None) -> dict[str, float]:
        """Run the recipe's ``[[eval]]`` evaluators and log their metrics (axis and direction attached)."""
        return run_evaluators(self.cfg.eval, model, data, self, step=step)

