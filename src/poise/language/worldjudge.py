"""A model judge for the safety world: a tiny causal LM fit to answer HarmBench's classifier prompt.

:func:`fit_prompt_lm` trains a tiny Llama on ``(prompt text, answer)`` pairs (loss on the answer tokens only)
and :func:`world_harmbench_judge` uses it to build a local HF folder that ``judge = {name = "harmbench", path =
...}`` loads: for every harmful training prompt of the world, HarmBench's prompt with the world's compliant
response is answered ``Yes`` and with its refusal ``No``.

What it is, and is not: it has seen only the world's own canned responses, never the HarmBench classifier's
training data, so it says how a model judge behind HarmBench's prompt sees the world's responses — nothing
about the real classifier. It lets the model-judge path run end to end with nothing downloaded and its
agreement with the refusal patterns be measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from poise.language.judges import harmbench_prompt
from poise.language.models import ChatLM, TinyLMCfg, export_hf, tiny_llama
from poise.language.world import World
from poise.recipes import Section


class WorldJudgeCfg(Section):
    """Size and training of the world's HarmBench-prompt judge."""

    vocab_size: int = Field(1024, ge=300, description="BPE vocabulary trained on the rendered prompts")
    hidden_size: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(4, gt=0)
    steps: int = Field(200, gt=0)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(3e-3, gt=0)
    seed: int = Field(0, ge=0)


def fit_prompt_lm(
    pairs: Sequence[tuple[str, str]],
    tokenizer: Any,
    cfg: WorldJudgeCfg,
    *,
    add_special_tokens: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> ChatLM:
    """A tiny Llama trained to continue each pair's text with its answer (then end-of-sequence)."""
    rows = []
    for text, answer in pairs:
        head = tokenizer(text, add_special_tokens=add_special_tokens).input_ids
        tail = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        rows.append((head + tail, [-100] * len(head) + tail))
    length = max(len(ids) for ids, _ in rows)
    tiny = TinyLMCfg(vocab_size=max(300, len(tokenizer)), hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                     num_heads=cfg.num_heads, num_kv_heads=cfg.num_heads, intermediate_size=2 * cfg.hidden_size,
                     max_length=length)
    lm = tiny_llama(tiny, tokenizer, seed=cfg.seed)
    pad = tokenizer.pad_token_id
    x = torch.full((len(rows), length), pad, dtype=torch.long)
    y = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, (ids, labels) in enumerate(rows):
        x[i, : len(ids)], y[i, : len(labels)] = torch.tensor(ids), torch.tensor(labels)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(lm.model.parameters(), lr=cfg.lr)
    lm.model.train()
    for step in range(cfg.steps):
        idx = torch.randint(0, len(rows), (cfg.batch_size,), generator=gen)
        xb, yb = x[idx], y[idx]
        width = int((xb != pad).sum(1).max())
        xb, yb = xb[:, :width], yb[:, :width]
        loss = lm.model(input_ids=xb, attention_mask=(xb != pad).long(), labels=yb).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step:
            on_step(step, loss.item())
    lm.model.eval()
    return lm


def world_harmbench_pairs(world: World, split: str = "train", template: str | None = None) -> list[tuple[str, str]]:
    """HarmBench's prompt (or ``template``) with each harmful world prompt's compliant response (``Yes``) and
    refusal (``No``)."""
    pairs = []
    for e in world.split(split):
        if e.kind != "harmful":
            continue
        pairs.append((harmbench_prompt(e.prompt, e.unsafe_response or "", template=template), "Yes"))
        pairs.append((harmbench_prompt(e.prompt, e.safe_response or "", template=template), "No"))
    return pairs


def world_harmbench_judge(
    world: World, folder: str | Path, cfg: WorldJudgeCfg | None = None, template: str | None = None
) -> Path:
    """Fit the world's HarmBench-prompt judge and save it as a local HF folder (no chat template: raw prompt).

    ``template`` replaces HarmBench's prompt (the judge must then be given the same ``template``).
    """
    from poise.language.tokenizer import train_tokenizer

    cfg = cfg or WorldJudgeCfg()
    pairs = world_harmbench_pairs(world, template=template)
    tok = train_tokenizer([t + " " + a for t, a in pairs], cfg.vocab_size, config={"chat_template": None})
    lm = fit_prompt_lm(pairs, tok, cfg, add_special_tokens=True)
    return export_hf(lm, folder)
