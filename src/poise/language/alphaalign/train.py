"""``language.alphaalign``: RL with AlphaAlign's verifiable safety reward on a chat model (PPO or GRPO).

Read top to bottom: the base chat model (a ``language.base`` run from the store, trained once, or a local HF
model by path), the binary-labelled prompts, the reward (V_f, V_r and — unless AlphaAlign-Zero — the
group-normalised helpfulness term), then ``train.budget`` RL steps of ``algo`` (each step:
``train.batch_size`` prompts × n rollouts), logging the reward, its parts, refusal rates on harmful and benign
prompts (overall and per prompt language, ``refusal_harmful_<lang>`` / ``refusal_benign_<lang>`` for the
languages in the step's batch), KL to the reference and the step's time split after every step; finally the
recipe's evaluators and the artifact.

Choices: rollout prompts are the user prompt put in ``reward.template`` and then in the model's chat
template (the world recipes use the bare prompt, since the tiny world model has never seen the tags; real
models use the paper's template). ``train.lr`` / ``train.optimizer`` / ``train.schedule`` drive PPO's
optimiser (``ppo.lr`` is unused here). PPO resumes exactly from poise checkpoints (policy, value head,
optimiser, RNG); GRPO runs through TRL's own loop and a resumed GRPO run starts again from the base.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from poise.batching import batch_indices
from poise.context import RunContext
from poise.errors import UserError
from poise.language.alphaalign.grpo import GRPOAdapter, GRPOCfg
from poise.language.alphaalign.helpfulness import HelpfulnessCfg, HFRewardModelScorer, VerifierScorer
from poise.language.alphaalign.ppo import PPOConfig, PPOTrainer, StepResult
from poise.language.alphaalign.prompts import LabelledPrompt, PromptsCfg, from_world, load_prompt_file, select
from poise.language.alphaalign.rewards import AlphaAlignReward, AlphaAlignRewardCfg, format_prompt
from poise.language.alphaalign.rl import NonFiniteRewardError
from poise.language.data import load_lang_data
from poise.language.generate import chat_prompt
from poise.language.models import load_hf, load_lm, save_lm
from poise.language.recipe import ChatRecipe
from poise.recipes import ModelCfg, kind


class AlphaAlignModelCfg(ModelCfg):
    """The chat model to align: a base recipe's stored model, or a local HF folder."""

    name: str = "alphaalign"
    base: str = Field(
        "language/base-aware.toml", description="recipe (or run:<id>) of the base chat model (latent safety awareness)"
    )
    path: str | None = Field(None, description="local HF causal-LM folder, used instead of base")
    tokenizer: str | None = None


class AlphaAlignRecipe(ChatRecipe):
    model: AlphaAlignModelCfg = Field(default_factory=AlphaAlignModelCfg)
    prompts: PromptsCfg = Field(default_factory=PromptsCfg)
    reward: AlphaAlignRewardCfg = Field(default_factory=AlphaAlignRewardCfg)
    helpfulness: HelpfulnessCfg = Field(default_factory=HelpfulnessCfg)
    algo: Literal["ppo", "grpo"] = "ppo"
    n: int = Field(8, description="rollouts per prompt (the helpfulness normalisation needs n >= 2)")
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    grpo: GRPOCfg = Field(default_factory=GRPOCfg)

    @model_validator(mode="after")
    def _check(self) -> AlphaAlignRecipe:
        if self.n < 2:
            raise ValueError(
                f"n = {self.n} rollouts per prompt; expected n >= 2 (group normalisation is undefined)"
            )
        if self.helpfulness.source == "path" and self.helpfulness.path is None:
            raise ValueError("helpfulness.source = 'path' needs helpfulness.path")
        if self.helpfulness.source == "reward_model" and not self.helpfulness.reward_model:
            raise ValueError("helpfulness.source = 'reward_model' needs helpfulness.reward_model")
        if self.algo == "grpo" and self.train.budget.unit != "steps":
            raise ValueError("GRPO runs through TRL's loop: expected train.budget.steps")
        return self

    def preflight(self) -> None:
        """The base recipe gives AlphaAlign what it needs, before any run (this one or the base's) exists."""
        super().preflight()
        check_base(self)


def rl_languages(cfg: AlphaAlignRecipe) -> list[str]:
    """The languages of the RL prompts: the prompt file's ``language`` column, else the world's languages."""
    if cfg.prompts.file is not None:
        return sorted({p.language for p in load_prompt_file(cfg.prompts)} - {"und"})
    return list(cfg.data.world.languages)


def check_base(cfg: AlphaAlignRecipe) -> None:
    """What AlphaAlign needs of a base *recipe* (a stored run or a local HF folder is taken as it is).

    The base must be a ``language.base`` world model whose world (and so tokenizer, trained on it) covers every
    language of the RL prompts, with refusal data in each of them (``refuse_languages``, ``refusal_share`` or
    ``harm_notes``): the verifiable reward only reinforces refusals the base already samples.
    """
    if cfg.model.path or cfg.model.base.startswith("run:"):
        return
    from poise.language.base import BaseRecipe
    from poise.recipes import load_recipe, resolve_recipe_path

    where = str(cfg.source or "recipe")
    try:
        path = resolve_recipe_path(cfg.model.base, cfg.source)
    except UserError as e:
        raise UserError(e.message, where=where, field="model.base") from None
    base = load_recipe(path, quick=cfg.is_quick)
    if not isinstance(base, BaseRecipe):
        raise UserError(f"{cfg.model.base} is a {base.kind} recipe; expected a language.base recipe (the chat model "
                        "AlphaAlign starts from)", where=where, field="model.base")
    if base.model.path:
        return  # a local HF base: its own tokenizer, no world to compare
    known = list(base.data.world.languages)
    ours = rl_languages(cfg)
    missing = [lang for lang in ours if lang not in known]
    if missing:
        field = "prompts.file" if cfg.prompts.file is not None else "data.world.languages"
        raise UserError(f"languages {missing} are not in the world (and tokenizer) of the base {cfg.model.base} "
                        f"({known}); expected the base's data.world.languages to cover every RL prompt language",
                        where=where, field=field)
    aware = base.model.refusal_share > 0 or base.model.harm_notes > 0
    unaware = [lang for lang in ours if not aware and lang not in base.model.refuse_languages]
    if unaware:
        raise UserError(f"the base {cfg.model.base} has no refusal data in {unaware} (refusal_share = 0, harm_notes "
                        f"= 0, refuse_languages = {base.model.refuse_languages}); AlphaAlign needs a base with latent "
                        "safety awareness in every RL language, e.g. language/base-aware.toml",
                        where=where, field="model.base")


def load_policy(cfg: AlphaAlignRecipe, ctx: RunContext):
    """The model RL starts from (and whose frozen copy is the KL reference)."""
    if cfg.model.path:
        return load_hf(cfg.model.path, cfg.model.tokenizer, where=cfg.source)
    run = ctx.dependency(cfg.model.base, field="model.base")
    return load_lm(ctx, run, device="cpu")


def training_prompts(cfg: AlphaAlignRecipe, data) -> list[LabelledPrompt]:
    raw = load_prompt_file(cfg.prompts) if cfg.prompts.file is not None else from_world(data.world.split("train"))
    return select(raw, cfg.prompts, cfg.seed)


def build_scorer(cfg: AlphaAlignRecipe, rendered: dict[str, LabelledPrompt], device, ctx: RunContext):
    if not cfg.reward.helpfulness:
        return None
    if cfg.helpfulness.source in ("path", "reward_model"):
        folder = cfg.helpfulness.path
        if cfg.helpfulness.source == "reward_model":
            from poise.language.alphaalign.reward_model import export_reward_model

            assert cfg.helpfulness.reward_model is not None
            rm = ctx.dependency(cfg.helpfulness.reward_model, field="helpfulness.reward_model")
            if rm.kind != "language.reward_model":
                raise UserError(f"run {rm.id} is a {rm.kind}; expected a language.reward_model run",
                                where=cfg.source, field="helpfulness.reward_model")
            folder = export_reward_model(*ctx.load_artifact(rm), ctx.scratch_dir("reward-model"))
        assert folder is not None
        return HFRewardModelScorer(
            folder,
            device=str(device),
            batch_size=cfg.helpfulness.batch_size,
            where=str(cfg.source or "recipe"),
        )
    refs = {text: (p.answer, p.reference) for text, p in rendered.items()}
    return VerifierScorer(refs, cfg.helpfulness.length_weight)


def log_step(ctx: RunContext, result: StepResult, step: int) -> None:
    """One RL step's metrics under stable names: reward parts, refusal rates, KL, time split."""
    m = result.metrics
    names = {
        "reward": "reward",
        "format": "reward_format",
        "refusal": "reward_refusal",
        "helpfulness": "reward_helpfulness",
        "helpfulness_score": "helpfulness_score",
        "refusal_harmful": "refusal_harmful",
        "refusal_benign": "refusal_benign",
        "kl": "kl",
        "completion_length": "completion_length",
        "loss_policy": "loss_policy",
        "loss_value": "loss_value",
        "time_generation": "time_generation",
        "time_reward": "time_reward",
        "time_update": "time_update",
        "time_step": "time_step",
    }
    names.update({k: k for k in m if k.startswith(("refusal_harmful_", "refusal_benign_"))})  # per language
    ctx.log_metrics({ours: m[k] for k, ours in names.items() if k in m and math.isfinite(m[k])}, step=step)


@kind("language.alphaalign", AlphaAlignRecipe)
def run(cfg: AlphaAlignRecipe, ctx: RunContext) -> None:
    """AlphaAlign: PPO/GRPO with the verifiable format + refusal reward and normalised helpfulness."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # poise shows its own progress; keeps stderr to one line on errors
    data = load_lang_data(cfg.data)
    prompts = training_prompts(cfg, data)
    lm = load_policy(cfg, ctx).to(ctx.device)
    tok = lm.tokenizer
    rendered = {chat_prompt(tok, format_prompt(p.prompt, cfg.reward.template)): p for p in prompts}
    texts = [chat_prompt(tok, format_prompt(p.prompt, cfg.reward.template)) for p in prompts]
    labels = [p.label for p in prompts]
    reward = AlphaAlignReward(cfg.reward, group_size=cfg.n, scorer=build_scorer(cfg, rendered, ctx.device, ctx),
                              languages={text: p.language for text, p in rendered.items()})

    if cfg.algo == "grpo":
        steps = int(cfg.train.budget.amount)
        grpo = cfg.grpo.model_copy(
            update={"n_rollouts": cfg.n, "prompts_per_step": cfg.train.batch_size, "lr": cfg.train.lr}
        )
        out_dir = ctx.scratch_dir("trl")
        adapter = GRPOAdapter(
            lm.model,
            tok,
            reward,
            texts,
            labels,
            grpo,
            steps=steps,
            seed=cfg.seed,
            output_dir=out_dir,
            on_step=lambda r: log_step(ctx, r, r.step - 1),
            phase=ctx.phase,
        )
        adapter.train()
        ctx.step = steps
        lm.model = adapter.model
    else:
        ppo = cfg.ppo.model_copy(update={"n_rollouts": cfg.n})
        meter = ctx.meter(max(1, len(texts) // cfg.train.batch_size))
        trainer = PPOTrainer(
            lm.model,
            tok,
            reward,
            ppo,
            optimizer=ctx.optimizer,
            scheduler=lambda opt: ctx.scheduler(opt, meter),
            phase=ctx.phase,
        )
        ctx.track(ppo=trainer)
        for step in ctx.steps(meter):
            idx = batch_indices(step, len(texts), cfg.train.batch_size, cfg.seed).tolist()
            try:
                result = trainer.step([texts[i] for i in idx], [labels[i] for i in idx])
            except NonFiniteRewardError:
                ctx.checkpoint(step)  # the state before this step: `poise runs resume` continues from here
                raise
            log_step(ctx, result, step)

    lm.model.eval()
    ctx.evaluate(lm, data)
    save_lm(ctx, lm, meta={"alphaalign": {"algo": cfg.algo, "zero": not cfg.reward.helpfulness}})
