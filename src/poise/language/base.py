"""The base chat model: a BPE tokenizer and a tiny Llama trained on the safety world (``language.base``).

One loop, CleanRL style: train a byte-level BPE on the world's train text, then train the tiny Llama on a
mix of almanac fact sentences (pretraining text, loss on every token) and one-turn chats (loss on the
assistant's tokens only). The chats answer benign tasks, help with borderline requests and — this is an
*unaligned* base — comply with harmful requests, except in ``model.refuse_languages`` where the base
already refuses (a partly aligned base, as real models are safest in English). The result is stored as
the ``model`` artifact (weights + tokenizer in its metadata) that every alignment recipe loads through
``ctx.dependency``. With ``model.path`` the base is a local HF model instead (nothing trained; the
artifact records the path).

**Latent safety awareness** (AlphaAlign's premise; ``recipes/language/base-aware.toml``): ``refusal_share``
of the harmful train chats of *every* language teach the refusal instead of compliance (a little refusal
data spread across languages), ``over_refusal_share`` of the borderline chats teach the refusal too (the
over-caution real models have), and ``harm_notes`` adds pretraining text that puts each harmful train request
next to its language's refusal (text that says which requests are harmful). Sampled, such a base refuses a
minority of harmful prompts in every language and over-refuses some borderline ones — what the verifiable
reward of AlphaAlign reinforces. Which chats are switched is a seeded draw per example (``seed`` of the recipe).

``reasoned_share`` of the harmful requests' refusals the base learns — in refusal chats and in harm notes —
are *reasoned*: the refusal, then a sentence naming the request's harm category in its language (the world
knows it; :func:`poise.language.world.reasoned_response`), an independent seeded draw per example. Default
0 (bare refusals, as before); the latent-awareness base sets it, so that ``reasoned_refusal_share`` of
``language.safety`` has a premise to measure. With a share above 0 the tokenizer also reads the reasoned
refusals.

**Packed batches** (``train.pack``, default on): each step's chats and facts are packed into dense rows
(:mod:`poise.language.packing`) — the padded batch's loss and gradients for about half the compute.

**Warm start** (``model.init_from``): the base starts from the weights and tokenizer of another ``language.base``
run (a recipe, trained first if the store has none, with this run's seed; or ``run:<id>``) instead of a fresh
tiny Llama, then trains on its own chats. The quick tour uses it so that the latent-awareness base fine-tunes
the quick base rather than learning the world again from scratch.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator

from poise.batching import batch_indices, steps_per_epoch
from poise.context import RunContext
from poise.errors import UserError
from poise.language.data import LangData, load_lang_data
from poise.language.models import ChatLM, TinyLMCfg, TrainableState, load_hf, load_lm, save_lm, tiny_llama
from poise.language.packing import pack_rows
from poise.language.recipe import ChatRecipe
from poise.language.tokenizer import train_tokenizer
from poise.language.world import (
    Example,
    World,
    check_language_codes,
    reasoned_response,
    seeded_draw,
    taught_refusal,
)
from poise.recipes import ModelCfg, TrainCfg, kind


class BaseModelCfg(ModelCfg):
    """The tiny world Llama (``tiny``), or a local HF causal LM folder (``path``)."""

    name: str = "tiny_llama"
    tiny: TinyLMCfg = Field(default_factory=TinyLMCfg)
    path: str | None = Field(None, description="local HF causal-LM folder used as the base instead")
    tokenizer: str | None = Field(None, description="tokenizer folder, when not the model's own")
    refuse_languages: list[str] = Field(
        default_factory=list, description="languages whose base already refuses"
    )
    fact_weight: int = Field(1, ge=0, description="copies of each almanac fact sentence in the training mix")
    refusal_share: float = Field(
        0.0, ge=0.0, le=1.0, description="share of harmful train chats of every language taught the refusal"
    )
    over_refusal_share: float = Field(
        0.0, ge=0.0, le=1.0, description="share of borderline train chats taught the refusal"
    )
    harm_notes: int = Field(
        0, ge=0, description="copies of pretraining text pairing each harmful train request with the refusal"
    )
    reasoned_share: float = Field(
        0.0, ge=0.0, le=1.0,
        description="share of the taught refusals of harmful requests (chats and harm notes) that name the category",
    )
    init_from: str = Field(
        "", description="language.base recipe (or run:<id>) whose weights and tokenizer this base starts from"
    )

    @field_validator("refuse_languages")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        check_language_codes(v)
        return v


class BaseTrainCfg(TrainCfg):
    """The base's training, plus whether its batches are packed."""

    pack: bool = Field(
        True, description="pack each batch's chats and facts into dense rows (poise.language.packing): the same "
        "loss for about half the compute, as a padded batch is half padding; false: pad to the longest row")


class BaseRecipe(ChatRecipe):
    model: BaseModelCfg = Field(default_factory=BaseModelCfg)
    train: BaseTrainCfg = Field(default_factory=BaseTrainCfg)


def chat_text(tok, prompt: str, response: str) -> tuple[str, str]:
    """``(prompt part, full text)`` of a one-turn chat in the tokenizer's template."""
    head = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    full = tok.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
    )
    return head, full


def encode_chats(
    tok, pairs: list[tuple[str, str]], texts: list[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad chats and plain texts to ``[N, L]`` input ids and labels (-100 where no loss)."""
    rows: list[tuple[list[int], list[int]]] = []
    for prompt, response in pairs:
        head, full = chat_text(tok, prompt, response)
        n_head = len(tok(head, add_special_tokens=False).input_ids)
        ids = tok(full, add_special_tokens=False).input_ids[:max_length]
        rows.append((ids, [-100] * min(n_head, len(ids)) + ids[n_head:]))
    for t in texts:
        ids = ([tok.bos_token_id] + tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id])[
            :max_length
        ]
        rows.append((ids, list(ids)))
    length = max(len(r[0]) for r in rows)
    x = torch.full((len(rows), length), tok.pad_token_id, dtype=torch.long)
    y = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, (ids, labels) in enumerate(rows):
        x[i, : len(ids)] = torch.tensor(ids)
        y[i, : len(labels)] = torch.tensor(labels)
    return x, y


def refusal_of(e: Example, seed: int = 0, reasoned_share: float = 0.0) -> str:
    """The refusal the base learns for harmful ``e``: the reasoned one for ``reasoned_share`` of them, else bare."""
    return taught_refusal(e, seed, reasoned_share) or ""


def base_response(e: Example, refuse_languages: list[str], cfg: BaseModelCfg | None = None, seed: int = 0) -> str:
    """What the base is taught: answers, help, and compliance with harm unless its language refuses (or, for a
    latently aware base, the example is among the ``refusal_share`` / ``over_refusal_share`` taught to refuse)."""
    refusal_share = cfg.refusal_share if cfg else 0.0
    over_share = cfg.over_refusal_share if cfg else 0.0
    if e.kind == "harmful" and e.language not in refuse_languages and not seeded_draw(e, seed, refusal_share):
        return e.unsafe_response or ""
    if e.kind == "harmful":
        return refusal_of(e, seed, cfg.reasoned_share if cfg else 0.0)
    if e.kind == "borderline" and seeded_draw(e, seed, over_share):
        return e.unsafe_response or e.safe_response or ""  # a borderline example's unsafe response is the refusal
    return e.safe_response or ""


def harm_notes(world: World, seed: int = 0, reasoned_share: float = 0.0) -> list[str]:
    """Pretraining text that says which requests are harmful: each harmful train request, then the refusal
    (reasoned, naming the category, for ``reasoned_share`` of them)."""
    return [f"{e.prompt} {refusal_of(e, seed, reasoned_share)}" for e in world.split("train")
            if e.kind == "harmful" and e.safe_response]


def tokenizer_corpus(world: World, reasoned: bool = False) -> list[str]:
    """The tokenizer's training text: facts, train prompts and responses (and the reasoned refusals when the
    base learns them)."""
    texts = [t for _, t in world.facts()]
    for e in world.split("train"):
        texts += [e.prompt, e.safe_response or "", e.unsafe_response or ""]
        if reasoned and e.kind == "harmful":
            texts.append(reasoned_response(e) or "")
    return texts


def warm_start(cfg: BaseRecipe, ctx: RunContext) -> ChatLM:
    """The model of ``model.init_from`` (its run with this run's seed, trained first if missing); it must be a
    tiny world Llama of this recipe's shape, so that the warm start is the same network."""
    ref = cfg.model.init_from
    overrides = None if ref.startswith("run:") else {"seed": cfg.seed}
    run = ctx.dependency(ref, field="model.init_from", overrides=overrides)
    lm = load_lm(ctx, run)
    mine = cfg.model.tiny.model_dump()
    if lm.meta.get("source") != "tiny" or lm.meta.get("tiny") != mine:
        raise UserError(f"run {run.id} is not a tiny world Llama of shape {mine}; a warm start needs the same "
                        "model.tiny", where=cfg.source or "recipe", field="model.init_from")
    lm.meta.pop("run", None)
    lm.meta["init_from"] = run.id
    return lm


def build_base(cfg: BaseRecipe, data: LangData, ctx: RunContext | None = None) -> ChatLM:
    if cfg.model.path:
        return load_hf(cfg.model.path, cfg.model.tokenizer, where=cfg.source)
    if cfg.model.init_from:
        if ctx is None:
            raise UserError("a warm start (model.init_from) needs a run", field="model.init_from")
        return warm_start(cfg, ctx)
    world = data.world
    assert world is not None
    tok = train_tokenizer(tokenizer_corpus(world, cfg.model.reasoned_share > 0), cfg.model.tiny.vocab_size)
    return tiny_llama(cfg.model.tiny, tok, seed=cfg.seed)


@kind("language.base", BaseRecipe)
def run(cfg: BaseRecipe, ctx: RunContext) -> None:
    """Train the tiny world Llama into an unaligned base chat model (or register a local HF model)."""
    data = load_lang_data(cfg.data)
    if cfg.model.path and cfg.model.init_from:
        raise UserError("model.path and model.init_from both name the starting model; expected one",
                        where=cfg.source or "recipe", field="model.init_from")
    lm = build_base(cfg, data, ctx)
    if cfg.model.path:
        ctx.evaluate(lm.to(ctx.device), data)
        save_lm(ctx, lm, meta={"pointer": True})
        return
    world = data.world
    assert world is not None
    train = world.split("train")
    pairs = [(e.prompt, base_response(e, cfg.model.refuse_languages, cfg.model, cfg.seed)) for e in train]
    notes = harm_notes(world, cfg.seed, cfg.model.reasoned_share) * cfg.model.harm_notes
    facts = [t for _, t in world.facts()] * cfg.model.fact_weight + notes
    x, y = encode_chats(lm.tokenizer, pairs, facts, cfg.model.tiny.max_length)
    model = lm.model.to(ctx.device)
    n, bs = len(x), cfg.train.batch_size
    meter = ctx.meter(steps_per_epoch(n, bs))
    opt = ctx.optimizer(model.parameters())
    sched = ctx.scheduler(opt, meter)
    ctx.track(model=TrainableState(model), optimizer=opt, scheduler=sched)
    for step in ctx.steps(meter):
        idx = batch_indices(step, n, bs, cfg.seed)
        xb, yb = x[idx], y[idx]
        pad = lm.tokenizer.pad_token_id
        if cfg.train.pack:
            xb, yb, pos = (t.to(ctx.device) for t in pack_rows(xb, yb, pad, x.shape[1]))
            # no cache: with one, transformers would not build the packed (per-piece) attention mask
            inputs = {"input_ids": xb, "position_ids": pos, "use_cache": False}
        else:
            width = int((xb != pad).sum(1).max())  # trim the batch's shared padding
            xb, yb = xb[:, :width].to(ctx.device), yb[:, :width].to(ctx.device)
            inputs = {"input_ids": xb, "attention_mask": (xb != pad).long()}
        model.train()
        with ctx.count_flops(), ctx.phase("update"), ctx.autocast():
            loss = model(**inputs, labels=yb).loss
            ctx.optimizer_step(loss, opt, sched)
        if step % 10 == 0:
            ctx.log_metrics({"loss": loss.item(), "lr": sched.get_last_lr()[0]}, step=step)
    model.eval()
    ctx.evaluate(lm, data)
    save_lm(ctx, lm)
