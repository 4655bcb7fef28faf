"""GRPO through TRL's ``GRPOTrainer``, driven by the same reward function as :mod:`.ppo`.

A thin adapter: it turns prompts and binary labels into a ``datasets.Dataset``, our reward function
``(prompts, completions, labels)`` into TRL's ``reward_func(prompts, completions, label=…, **kw)``,
and measures each optimiser step's split (generation, reward, update) so the bench can compare it with
PPO. One TRL step here is one fresh generation batch of ``prompts_per_step`` prompts × n completions
(``steps_per_generation = 1``), the same unit as one :meth:`PPOTrainer.step`. TRL's sampler keeps each
prompt's n rollouts next to each other, which is what the AlphaAlign reward's grouping expects.

With ``kl_coef > 0`` TRL builds its reference by loading the policy's ``config._name_or_path``; the
adapter first saves the model as it is now under ``output_dir/reference`` and points there, so the
reference is the starting policy even for a model built in memory. Nothing is downloaded.

Resuming goes through TRL's own checkpoints (``trainer.train(resume_from_checkpoint=…)``, which
transformers loads with ``weights_only=True``); wiring them into poise's store comes with the recipe kinds.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from poise.language.alphaalign.ppo import StepResult
from poise.language.alphaalign.rl import PhaseFn, RewardFn, Rewards, StepTiming, as_rewards, no_phase, timed
from poise.recipes import Section

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class GRPOCfg(Section):
    """GRPO's knobs, named like :class:`PPOConfig`'s where they mean the same thing."""

    n_rollouts: int = Field(8, ge=2, description="completions per prompt (TRL num_generations)")
    prompts_per_step: int = Field(4, ge=1, description="prompts per optimiser step")
    max_new_tokens: int = Field(64, gt=0)
    temperature: float = Field(1.0, gt=0.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    lr: float = Field(1e-6, gt=0.0)
    kl_coef: float = Field(0.05, ge=0.0, description="TRL beta: KL penalty to the starting policy")
    clip_range: float = Field(0.2, gt=0.0, description="TRL epsilon")
    num_iterations: int = Field(1, ge=1, description="updates per generation batch (TRL μ)")
    loss_type: str = Field("grpo", description="TRL loss_type: grpo, dr_grpo, dapo, bnpo, ...")
    scale_rewards: str = Field("group", description="TRL scale_rewards: group, batch or none")
    max_grad_norm: float = Field(1.0, gt=0.0)


class GRPOAdapter:
    """Train ``model`` with TRL's GRPO for ``steps`` optimiser steps on ``prompts`` with binary ``labels``.

    ``on_step(result)`` is called after each step with a :class:`StepResult` (reward parts from the
    reward function, TRL's KL, and the timing split).
    """

    def __init__(
        self,
        model,
        tokenizer,
        reward_fn: RewardFn,
        prompts: list[str],
        labels: list[int],
        cfg: GRPOCfg | None = None,
        *,
        steps: int,
        seed: int = 0,
        output_dir: str | Path | None = None,
        on_step: Callable[[StepResult], None] | None = None,
        phase: PhaseFn = no_phase,
    ):
        from datasets import Dataset
        from transformers import PrinterCallback, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

        self.cfg = cfg = cfg or GRPOCfg()
        if len(prompts) != len(labels):
            raise ValueError(f"got {len(prompts)} prompts and {len(labels)} labels")
        self.reward_fn = reward_fn
        self.on_step = on_step
        self.phase = phase  # ctx.phase in a run: generation and reward nest inside each step's update
        self._step_phase: Any = None
        self.results: list[StepResult] = []
        self._timing = StepTiming()
        self._reward_metrics: dict[str, float] = {}
        self._rewards: list[float] = []
        self._completions: list[str] = []
        self._tmp = None
        if output_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="poise-grpo-")
            output_dir = self._tmp.name
        output_dir = Path(output_dir)
        cuda = next(model.parameters()).device.type == "cuda"
        tokenizer.padding_side = "left"

        # transformers 5 renamed gradient checkpointing; TRL still passes the old name (harmless here)
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        args = GRPOConfig(
            output_dir=str(output_dir),
            max_steps=steps,
            per_device_train_batch_size=cfg.prompts_per_step * cfg.n_rollouts,
            steps_per_generation=1,
            num_generations=cfg.n_rollouts,
            max_completion_length=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            learning_rate=cfg.lr,
            lr_scheduler_type="constant",
            beta=cfg.kl_coef,
            epsilon=cfg.clip_range,
            num_iterations=cfg.num_iterations,
            loss_type=cfg.loss_type,
            scale_rewards=cfg.scale_rewards,
            max_grad_norm=cfg.max_grad_norm,
            seed=seed,
            data_seed=seed,
            use_cpu=not cuda,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            log_completions=False,
        )
        dataset = Dataset.from_dict({"prompt": list(prompts), "label": [int(y) for y in labels]})

        adapter = self

        class _Timed(GRPOTrainer):
            def _generate(self, prompts):  # sampling + decoding, as in PPOTrainer's generation phase
                with adapter.phase("generation"), timed(self.accelerator.device) as t:
                    out = super()._generate(prompts)
                adapter._timing.generation += t[0]
                return out

        class _Steps(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                adapter._timing = StepTiming()
                adapter._step_phase = adapter.phase("update")
                adapter._step_phase.__enter__()
                adapter._step_start = _now(cuda)

            def on_step_end(self, args, state, control, **kw):
                seconds = _now(cuda) - adapter._step_start
                adapter._step_phase.__exit__(None, None, None)
                adapter._step_phase = None
                adapter._finish_step(state.global_step, seconds)

        def alphaalign_reward(prompts, completions, label, **kw):
            with adapter.phase("reward"), timed(model.device) as t:
                out = reward_fn(list(prompts), list(completions), [int(y) for y in label])
                rewards: Rewards = as_rewards(out, len(completions))
            adapter._timing.reward += t[0]
            adapter._reward_metrics = dict(rewards.metrics)
            adapter._rewards = list(rewards.total)
            adapter._completions = list(completions)
            return rewards.total

        alphaalign_reward.__name__ = getattr(reward_fn, "__name__", "reward")

        # TRL builds the reference from config._name_or_path: point it at a copy of the starting policy.
        original_path = model.config._name_or_path
        if cfg.kl_coef > 0:
            ref_dir = output_dir / "reference"
            model.save_pretrained(ref_dir)
            model.config._name_or_path = str(ref_dir)
        try:
            self.trainer = _Timed(
                model=model,
                reward_funcs=alphaalign_reward,
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
                callbacks=[_Steps()],
            )
        finally:
            model.config._name_or_path = original_path
        self.trainer.remove_callback(PrinterCallback)  # per-step metrics go to on_step, not stdout

    def _finish_step(self, step: int, seconds: float) -> None:
        timing = self._timing
        timing.update = max(seconds - timing.generation - timing.reward, 0.0)
        trl = self.trainer._metrics.get("train", {})  # this step's values (logging_steps = 1 clears them)
        metrics = dict(self._reward_metrics)
        metrics.setdefault("reward", sum(self._rewards) / max(len(self._rewards), 1))
        for ours, theirs in (
            ("kl", "kl"),
            ("entropy", "entropy"),
            ("completion_length", "completions/mean_length"),
        ):
            if trl.get(theirs):
                metrics[ours] = float(trl[theirs][-1])
        metrics.update(timing.as_dict())
        result = StepResult(step, metrics, timing, self._completions, self._rewards)
        self.results.append(result)
        if self.on_step is not None:
            self.on_step(result)

    def train(self) -> list[StepResult]:
        try:
            self.trainer.train()
        finally:
            if self._step_phase is not None:  # a step that raised leaves its phase open
                self._step_phase.__exit__(None, None, None)
                self._step_phase = None
        return self.results

    @property
    def model(self):
        return self.trainer.model


def _now(cuda: bool) -> float:
    import time

    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter()
