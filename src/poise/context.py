"""The run context: everything a recipe kind needs from poise, and nothing more.

A kind's ``run(cfg, ctx)`` reads top to bottom: build data and model, ask ``ctx.meter`` for the budget,
``ctx.optimizer``/``ctx.scheduler`` for the optimiser and lr schedule, ``ctx.track(...)`` what a
checkpoint holds, then ``for step in ctx.steps(meter): ...`` — the loop resumes after the last
checkpoint, checkpoints every ``train.checkpoint_every`` steps, and shows a progress bar. Finally
``ctx.evaluate(model, data)`` runs the recipe's evaluators and ``ctx.save_artifact`` stores the
weights. Cost tracking wraps the whole run from outside; kinds never call it. To split a run's time
and energy by the parts of its step, a kind wraps them in ``with ctx.phase("attack"): ...`` (names are
free-form; see :meth:`RunContext.phase`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from poise.budget import BudgetMeter
from poise.errors import UserError
from poise.evaluators import run_evaluators
from poise.prediction import CostPredictor
from poise.recipes import Recipe, TrainCfg, load_recipe, resolve_recipe_path
from poise.schedules import BudgetSchedule
from poise.statefile import flatten, unflatten
from poise.store import ArtifactRecord, RunRecord, Store

if TYPE_CHECKING:
    from poise.carbon import CostTracker
    from poise.runner import Runner


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class RunContext:
    """What a running kind sees: its store records, budget, schedule, device, RNG and progress."""

    def __init__(self, *, run_id: str, recipe: Recipe, store: Store, device: torch.device, runner: Runner,
                 cost: CostTracker, segment: int):
        self.run_id = run_id
        self.cfg = recipe
        self.store = store
        self.device = device
        self.runner = runner
        self.quick = recipe.is_quick
        self.seed = recipe.seed
        self.step = 0
        self._cost = cost
        self._segment = segment
        self._tracked: dict[str, Any] = {}
        self._meter: BudgetMeter | None = None
        self.flops_per_step: int | None = None
        self._predicted = False
        self._resumed = False
        self._bar: Any = None
        seed_everything(recipe.seed)
        self.rng = np.random.default_rng(recipe.seed)

    # ------------------------------------------------------------------ logging

    def log_metric(self, name: str, value: float, *, step: int | None = None, axis: str = "train",
                   direction: str = "min") -> None:
        """Record one metric value at ``step`` (default: the current training step)."""
        self.store.log_metrics(self.run_id, [(name, axis, direction, self.step if step is None else step, value)])

    def log_metrics(self, values: dict[str, float], *, step: int | None = None, axis: str = "train",
                    direction: str = "min") -> None:
        s = self.step if step is None else step
        self.store.log_metrics(self.run_id, [(k, axis, direction, s, float(v)) for k, v in values.items()])

    def info(self, message: str) -> None:
        self.runner.ui.info(message)

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
        return self.store.save_tensors(self.run_id, name, tensors, meta)

    def save_file(self, name: str, data: bytes, media: str, meta: dict[str, Any] | None = None) -> ArtifactRecord:
        """Store a file (PNG figure, JSON table) that reports show next to this run."""
        return self.store.save_file(self.run_id, name, data, media, meta)

    def load_artifact(
        self, run: RunRecord | str, name: str = "model"
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        run_id = run.id if isinstance(run, RunRecord) else run
        return self.store.load_tensors(run_id, name)

    def dependency(self, ref: str, *, field: str, overrides: dict[str, Any] | None = None) -> RunRecord:
        """A finished run this one builds on (a teacher, a base model), trained first if missing.

        ``ref`` is ``run:<id>`` or a recipe file (next to this recipe, or among the shipped ones). A
        recipe's run is reused when the store already holds a finished run with the same config hash.
        """
        return self.runner.dependency(self, ref, field=field, overrides=overrides)

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
        with self.runner.ui.progress(label, meter.total_steps) as bar:
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
        """Save tracked objects, the meter and RNG states at ``step``, and the cost so far."""
        payload: dict[str, Any] = {"rng": self._rng_state(), "objects": {}}
        for key, obj in self._tracked.items():
            payload["objects"][key] = obj if isinstance(obj, dict) else obj.state_dict()
        if self._meter is not None:
            payload["meter"] = self._meter.state_dict()
        tensors, skeleton = flatten(payload)
        path = self.store.save_checkpoint(self.run_id, step, tensors, {"step": step, "state": skeleton})
        self.store.record_cost(self.run_id, self._segment, self._cost.snapshot())
        return path

    def restore(self) -> int:
        """Load the newest checkpoint into the tracked objects; returns its step (0 when starting fresh)."""
        found = self.store.latest_checkpoint(self.run_id)
        if found is None:
            return 0
        step, tensors, skeleton = found
        payload = unflatten(tensors, skeleton["state"])
        for key, obj in self._tracked.items():
            if key not in payload["objects"]:
                raise RuntimeError(f"checkpoint of run {self.run_id} has no {key!r}")
            state = payload["objects"][key]
            if isinstance(obj, dict):
                obj.clear()
                obj.update(state)
            else:
                obj.load_state_dict(state)
        if self._meter is not None and "meter" in payload:
            self._meter.load_state_dict(payload["meter"])
        self._set_rng_state(payload["rng"])
        self.step = step
        self._resumed = True  # this segment makes no cost prediction: its loop started in an earlier one
        self.info(f"resumed run {self.run_id} at step {step}")
        return step

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, model: Any, data: Any, *, step: int | None = None) -> dict[str, float]:
        """Run the recipe's ``[[eval]]`` evaluators and log their metrics (axis and direction attached)."""
        return run_evaluators(self.cfg.eval, model, data, self, step=step)


def resolve_dependency_recipe(ctx: RunContext, ref: str, overrides: dict[str, Any] | None, field: str) -> Recipe:
    """Load the recipe a dependency names, in the parent's quick mode."""
    try:
        path = resolve_recipe_path(ref, ctx.cfg.source)
    except UserError as e:
        raise UserError(e.message, where=ctx.cfg.source or "recipe", field=field) from None
    return load_recipe(path, overrides, quick=ctx.quick)
