"""``language.reward_model``: a Bradley–Terry helpfulness reward model for AlphaAlign, trained with TRL.

The model is the base chat model's backbone with a one-logit sequence-classification head
(``AutoModelForSequenceClassification`` of the same architecture, head freshly initialised), trained with
TRL ``RewardTrainer``'s loss −log σ(r(chosen) − r(rejected)) through poise's loop
(:func:`poise.language.finetune.train_steps`: budget, schedule, checkpoints, resume).

Preferences from the world's train split, benign prompts only (helpfulness is AlphaAlign's benign-prompt
term): for a benign task, the exact answer ≻ the refusal and the exact answer ≻ a wrong answer (the answer of
the next train task of the same operation with a different answer); for a borderline request, the helpful
reply ≻ the refusal. Texts are the chat-rendered prompt followed by the answer, exactly what
:class:`~poise.language.alphaalign.helpfulness.HFRewardModelScorer` scores during RL. The run logs pairwise
accuracy on validation pairs (``utility.reward_accuracy``) and stores the model; AlphaAlign recipes use it
with ``helpfulness.source = "reward_model"`` and ``helpfulness.reward_model = "reward-model.toml"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from poise.context import RunContext
from poise.evaluators import MetricSpec, evaluator
from poise.language.data import LangDataCfg, load_lang_data
from poise.language.finetune import TRLSteps, train_steps
from poise.language.generate import chat_prompt
from poise.language.mix import seeded_subset
from poise.language.models import ChatLM, load_lm, model_from_config, save_lm, tokenizer_from_meta_or_path
from poise.language.world import Example
from poise.recipes import ModelCfg, Recipe, Section, kind


class RewardModelCfg(ModelCfg):
    name: str = "reward-model"
    base: str = Field("language/base.toml", description="recipe (or run:<id>) whose backbone the model starts from")


class RewardParams(Section):
    max_length: int | None = Field(None, gt=0, description="token limit; default: the model's context length")
    max_pairs: int | None = Field(None, gt=0, description="cap on training pairs (a seeded subset)")


class RewardModelRecipe(Recipe):
    model: RewardModelCfg = Field(default_factory=RewardModelCfg)
    data: LangDataCfg = Field(default_factory=LangDataCfg)
    reward: RewardParams = Field(default_factory=RewardParams)
    log_every: int = Field(10, gt=0)


def preference_pairs(tok: Any, examples: list[Example]) -> list[dict[str, str]]:
    """Helpfulness pairs (prompt text, chosen answer, rejected answer) from benign and borderline examples."""
    rows = []
    benign = [e for e in examples if e.kind == "benign" and e.answer]
    for i, e in enumerate(benign):
        prompt = chat_prompt(tok, e.prompt)
        rows.append({"prompt": prompt, "chosen": e.answer, "rejected": e.unsafe_response or ""})
        wrong = next((o.answer for o in benign[i + 1:] + benign[:i]
                      if o.category == e.category and o.answer != e.answer), None)
        if wrong:
            rows.append({"prompt": prompt, "chosen": e.answer, "rejected": wrong})
    for e in examples:
        if e.kind == "borderline" and e.safe_response and e.unsafe_response:
            rows.append({"prompt": chat_prompt(tok, e.prompt), "chosen": e.safe_response,
                         "rejected": e.unsafe_response})
    return [r for r in rows if r["rejected"]]


def sequence_classifier(lm: ChatLM) -> ChatLM:
    """The chat model's backbone under a fresh one-logit classification head (same architecture)."""
    from transformers import AutoModelForSequenceClassification

    cfg = {**lm.model.config.to_dict(), "num_labels": 1, "pad_token_id": lm.tokenizer.pad_token_id,
           "architectures": None}
    model = model_from_config(cfg, AutoModelForSequenceClassification)
    prefix = model.base_model_prefix
    getattr(model, prefix).load_state_dict(getattr(lm.model, prefix).state_dict())
    model.config.architectures = [type(model).__name__]
    return ChatLM(model, lm.tokenizer, {k: v for k, v in lm.meta.items() if k not in ("run",)})


def pairwise_accuracy(model: Any, tok: Any, rows: list[dict[str, str]], batch_size: int = 64) -> float:
    """Share of pairs whose chosen text scores above the rejected one."""
    model.eval()
    wins = 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            texts = [r["prompt"] + r["chosen"] for r in chunk] + [r["prompt"] + r["rejected"] for r in chunk]
            enc = tok(texts, return_tensors="pt", padding=True).to(next(model.parameters()).device)
            r = model(**enc).logits[:, 0]
            wins += int((r[: len(chunk)] > r[len(chunk):]).sum())
    return wins / max(len(rows), 1)


@evaluator("language.reward_accuracy",
           metrics=[MetricSpec("reward_accuracy", "utility", "max", "pairwise accuracy on validation preferences")])
def reward_accuracy(model, data, ctx, **kw) -> dict[str, float]:
    """Pairwise accuracy of a reward model on the world's validation helpfulness preferences."""
    return {"reward_accuracy": pairwise_accuracy(model.model, model.tokenizer,
                                                 preference_pairs(model.tokenizer, data.world.split("val")))}


@kind("language.reward_model", RewardModelRecipe)
def run(cfg: RewardModelRecipe, ctx: RunContext) -> None:
    """Train a Bradley–Terry helpfulness reward model (TRL RewardTrainer's loss) on world preferences."""
    data = load_lang_data(cfg.data)
    base = ctx.dependency(cfg.model.base, field="model.base")
    rm = sequence_classifier(load_lm(ctx, base)).to(ctx.device)
    rows = preference_pairs(rm.tokenizer, data.world.split("train"))
    if cfg.reward.max_pairs is not None:
        rows = seeded_subset(rows, cfg.reward.max_pairs, ctx.rng)
    rm.tokenizer.padding_side = "right"
    steps = TRLSteps("reward", rm, rows, cfg.reward, batch_size=cfg.train.batch_size, seed=cfg.seed,
                     device=ctx.device)
    ctx.info(f"reward model: {len(steps)} preference pairs")
    train_steps(cfg, ctx, steps)
    ctx.evaluate(rm, data)
    save_lm(ctx, rm, meta={"reward_model": {"base": base.id}})


def export_reward_model(tensors: dict[str, Any], meta: dict[str, Any], folder: Path) -> Path:
    """Write a stored reward model (its ``model`` artifact) as a standard HF folder (config, safetensors,
    tokenizer) and return it."""
    from transformers import AutoModelForSequenceClassification

    model = model_from_config(meta["hf_config"], AutoModelForSequenceClassification)
    model.load_state_dict(tensors)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer_from_meta_or_path(meta).save_pretrained(str(folder))
    return folder
