"""``language.sft`` and ``language.dpo``: supervised and preference fine-tuning through TRL.

Read top to bottom: the starting chat model (a ``language.base`` run, an SFT run for DPO(SFT), or a local HF
model by path, optionally with LoRA adapters), the training mix (:mod:`poise.language.mix`), TRL's trainer
built on it, then ``train.budget`` optimiser steps, then the recipe's evaluators and the artifact.

TRL does the method: ``SFTTrainer`` tokenises prompt–completion chats with the model's chat template and
computes the completion-only loss; ``DPOTrainer`` tokenises the preference pairs, keeps the frozen reference
(a copy of the starting model; for LoRA, the adapter switched off) and computes the DPO loss (``dpo.loss_type``,
``dpo.beta``). poise drives the steps (choice): each step calls the trainer's ``compute_loss`` on the
batch that :func:`poise.batching.batch_indices` picks for that step, and poise's optimiser, budget-aware
schedule, FLOP counter and checkpoints do the rest. So budgets in seconds or grams of CO2, every schedule
and ``poise runs resume`` work as for every other kind, and a resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field

from poise.batching import batch_indices, steps_per_epoch
from poise.context import RunContext
from poise.errors import UserError
from poise.language.data import load_lang_data
from poise.language.mix import MixCfg, preference_rows, select, sft_rows
from poise.language.models import (
    ChatLM,
    LoraCfg,
    TrainableState,
    apply_lora,
    is_peft,
    load_hf,
    load_lm,
    save_lm,
)
from poise.language.recipe import ChatRecipe
from poise.language.world import Example
from poise.recipes import ModelCfg, Section, kind

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class TuneModelCfg(ModelCfg):
    """The model to fine-tune: a stored run (recipe file or ``run:<id>``) or a local HF folder."""

    name: str = "chat"
    base: str = Field("language/base.toml", description="recipe (or run:<id>) of the starting chat model")
    base_set: dict[str, Any] = Field(
        default_factory=dict, description="--set style overrides of the base recipe (e.g. its seed)"
    )
    path: str | None = Field(None, description="local HF causal-LM folder, used instead of base")
    tokenizer: str | None = None
    lora: LoraCfg | None = Field(None, description="train LoRA adapters only (big models)")


class SFTParams(Section):
    """TRL ``SFTConfig`` fields poise exposes."""

    max_length: int | None = Field(None, gt=0, description="token limit; default: the model's context length")
    completion_only_loss: bool = Field(True, description="loss on the assistant's tokens only")


class DPOParams(Section):
    """TRL ``DPOConfig`` fields poise exposes."""

    beta: float = Field(0.1, gt=0.0, description="strength of the KL constraint to the reference")
    loss_type: str = Field("sigmoid", description="TRL loss_type: sigmoid (DPO), ipo, hinge, robust, ...")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    rpo_alpha: float = Field(
        0.0, ge=0.0, description="weight of an NLL term on the chosen answer (RPO; TRL loss_type 'sft'); 0: plain DPO"
    )
    max_length: int | None = Field(None, gt=0, description="token limit; default: the model's context length")


class TuneRecipe(ChatRecipe):
    model: TuneModelCfg = Field(default_factory=TuneModelCfg)
    mix: MixCfg = Field(default_factory=MixCfg)
    log_every: int = Field(10, gt=0, description="log the loss and TRL's metrics every N steps")


class SFTRecipe(TuneRecipe):
    sft: SFTParams = Field(default_factory=SFTParams)


class DPORecipe(TuneRecipe):
    dpo: DPOParams = Field(default_factory=DPOParams)


# --------------------------------------------------------------------------- pieces


def start_model(cfg: TuneRecipe, ctx: RunContext) -> tuple[ChatLM, dict[str, Any] | None]:
    """The model training starts from, and (for LoRA artifacts) where its base weights live."""
    if cfg.model.path:
        lm = load_hf(cfg.model.path, cfg.model.tokenizer, where=cfg.source)
        base = {"path": lm.meta["path"]}
    else:
        run = ctx.dependency(cfg.model.base, field="model.base", overrides=cfg.model.base_set or None)
        lm = load_lm(ctx, run)
        base = {"run": run.id, "name": "model"}
    if cfg.model.lora is not None:
        lm = apply_lora(lm, cfg.model.lora)
    return lm, base


def context_length(lm: ChatLM, asked: int | None) -> int:
    n = getattr(lm.model.config, "max_position_embeddings", None) or 1024
    return min(asked, n) if asked else n


def _quiet_datasets() -> None:
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)


def _sft_trainer(lm: ChatLM, common: dict[str, Any], params: Section, dataset: Any) -> Any:
    from trl import SFTConfig, SFTTrainer

    assert isinstance(params, SFTParams)
    args = SFTConfig(**common, completion_only_loss=params.completion_only_loss, packing=False)
    return SFTTrainer(lm.model, args=args, train_dataset=dataset, processing_class=lm.tokenizer)


def _dpo_trainer(lm: ChatLM, common: dict[str, Any], params: Section, dataset: Any) -> Any:
    from trl import DPOConfig, DPOTrainer

    assert isinstance(params, DPOParams)
    losses, weights = [params.loss_type], None
    if params.rpo_alpha > 0:  # RPO (Pang et al., 2024): DPO plus the chosen answer's NLL keeps it likely
        losses, weights = [params.loss_type, "sft"], [1.0, params.rpo_alpha]
    args = DPOConfig(**common, beta=params.beta, loss_type=losses, loss_weights=weights,
                     label_smoothing=params.label_smoothing)
    ref = None
    if not is_peft(lm.model):  # the frozen reference: the starting model (LoRA: adapters disabled)
        ref = copy.deepcopy(lm.model).eval()
        ref.requires_grad_(False)
    try:
        return DPOTrainer(lm.model, ref_model=ref, args=args, train_dataset=dataset, processing_class=lm.tokenizer)
    except ValueError as e:
        raise UserError(f"TRL rejected the DPO settings: {e}", field="dpo") from None


def _reward_trainer(lm: ChatLM, common: dict[str, Any], params: Section, dataset: Any) -> Any:
    from trl import RewardConfig, RewardTrainer

    args = RewardConfig(**common)
    return RewardTrainer(lm.model, args=args, train_dataset=dataset, processing_class=lm.tokenizer)


@dataclass(frozen=True)
class Objective:
    """One training objective: its recipe section, the TRL trainer built on it and the rows it trains on.

    ``params`` is the recipe section's class (the section is named after the objective: ``[sft]``, ``[dpo]``,
    ``[reward]``); ``trainer(lm, common, params, dataset)`` builds TRL's trainer from the TrainingArguments
    fields every objective shares; ``rows(examples, mix)`` turns world examples into TRL's rows (``None``: the
    kind builds its own rows, as the reward model does).
    """

    name: str
    params: type[Section]
    trainer: Callable[[ChatLM, dict[str, Any], Section, Any], Any]
    rows: Callable[[Sequence[Example], MixCfg], list[dict]] | None = None


OBJECTIVES: dict[str, Objective] = {}


def objective(name: str, params: type[Section], trainer: Callable, rows: Callable | None = None) -> Objective:
    """Register an objective (one table: a new objective is one call here, nothing else branches on it)."""
    OBJECTIVES[name] = Objective(name, params, trainer, rows)
    return OBJECTIVES[name]


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise UserError(f"unknown objective {name!r}; expected one of: {', '.join(OBJECTIVES)}") from None


class TRLSteps:
    """A TRL trainer used for its data processing and loss: ``loss(indices)`` of one batch, with TRL's metrics.

    ``method`` names an entry of :data:`OBJECTIVES`: ``sft`` (rows: prompt/completion), ``dpo`` (rows:
    prompt/chosen/rejected) or ``reward`` (the same rows, for a sequence-classification model: TRL's
    Bradley–Terry ``RewardTrainer`` loss). The trainer's own ``train()`` loop is never run; the caller owns
    the optimiser, schedule and checkpoints.
    """

    def __init__(self, method: str, lm: ChatLM, rows: list[dict], params: Section, *,
                 batch_size: int, seed: int, device: torch.device):
        from datasets import Dataset

        _quiet_datasets()
        obj = get_objective(method)
        self.method = method
        self.model = lm.model
        self._tmp = tempfile.TemporaryDirectory(prefix=f"poise-{method}-")
        cuda = device.type == "cuda"
        common = dict(
            output_dir=self._tmp.name,
            per_device_train_batch_size=batch_size,
            max_length=context_length(lm, getattr(params, "max_length", None)),
            seed=seed,
            data_seed=seed,
            use_cpu=not cuda,
            bf16=False,
            fp16=False,
            report_to="none",
            disable_tqdm=True,
            save_strategy="no",
            dataloader_num_workers=0,
            gradient_checkpointing=False,
        )
        lm.tokenizer.padding_side = "right"
        self.trainer = obj.trainer(lm, common, params, Dataset.from_list(rows))
        self.dataset = self.trainer.train_dataset
        if len(self.dataset) == 0:
            raise UserError("every training example was dropped by TRL (too long for max_length?)",
                            field=f"{method}.max_length")

    def __len__(self) -> int:
        return len(self.dataset)

    def loss(self, indices: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """The trainer's loss on these examples, and the metrics TRL recorded for them."""
        tr = self.trainer
        mode = "train" if self.model.training else "eval"  # where TRL records this batch's metrics
        tr._metrics[mode].clear()
        batch = tr._prepare_inputs(tr.data_collator([self.dataset[i] for i in indices]))
        loss = tr.compute_loss(self.model, batch)
        metrics = {}
        for k, v in tr._metrics[mode].items():
            if v and isinstance(v[-1], (int, float)) and math.isfinite(v[-1]):
                metrics[k.replace("/", "_")] = float(v[-1])
        return loss, metrics


def train_steps(cfg: TuneRecipe, ctx: RunContext, steps: TRLSteps) -> None:
    """poise's loop over TRL's loss: budget, schedule, clipping, logging, checkpoints."""
    model = steps.model
    n, bs = len(steps), cfg.train.batch_size
    meter = ctx.meter(steps_per_epoch(n, bs))
    opt = ctx.optimizer([p for p in model.parameters() if p.requires_grad])
    sched = ctx.scheduler(opt, meter)
    ctx.track(model=TrainableState(model), optimizer=opt, scheduler=sched)
    for step in ctx.steps(meter):
        idx = batch_indices(step, n, bs, cfg.seed).tolist()
        model.train()
        with ctx.count_flops(), ctx.phase("update"), ctx.autocast():
            loss, metrics = steps.loss(idx)
            ctx.optimizer_step(loss, opt, sched)
        if step % cfg.log_every == 0 or meter.done(step + 1):
            ctx.log_metrics({"loss": loss.item(), "lr": sched.get_last_lr()[0], **metrics}, step=step)
    model.eval()


def tune(cfg: TuneRecipe, ctx: RunContext, method: str) -> None:
    data = load_lang_data(cfg.data)
    if data.world is None:
        raise UserError("alignment trains on the safety world; a data.file is for evaluation only",
                        where=cfg.source, field="data.file")
    lm, base = start_model(cfg, ctx)
    lm.to(ctx.device)
    examples = select(data.world.split("train"), cfg.mix, cfg.seed)
    obj = get_objective(method)
    assert obj.rows is not None
    rows = obj.rows(examples, cfg.mix)
    params = getattr(cfg, method)
    steps = TRLSteps(method, lm, rows, params, batch_size=cfg.train.batch_size, seed=cfg.seed, device=ctx.device)
    ctx.info(f"{method}: {len(steps)} training examples ({cfg.mix.objective}, harms {'+'.join(cfg.mix.harms)}, "
             f"languages {','.join(cfg.mix.languages or ['all'])})")
    train_steps(cfg, ctx, steps)
    ctx.evaluate(lm, data)
    save_lm(ctx, lm, meta={method: {"mix": cfg.mix.model_dump(mode="json")}}, base=base)


objective("sft", SFTParams, _sft_trainer, sft_rows)
objective("dpo", DPOParams, _dpo_trainer, preference_rows)
objective("reward", Section, _reward_trainer)


@kind("language.sft", SFTRecipe)
def run_sft(cfg: SFTRecipe, ctx: RunContext) -> None:
    """Supervised fine-tuning (TRL SFTTrainer's loss) on refusals, helpful replies and answers."""
    tune(cfg, ctx, "sft")


@kind("language.dpo", DPORecipe)
def run_dpo(cfg: DPORecipe, ctx: RunContext) -> None:
    """Direct preference optimisation (TRL DPOTrainer's loss) on safe ≻ unsafe pairs from the world."""
    tune(cfg, ctx, "dpo")
