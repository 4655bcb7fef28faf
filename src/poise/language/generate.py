"""Batched chat generation: greedy or sampled decoding through the chat template.

``generate(lm, prompts)`` renders each prompt as a one-turn chat, decodes left-padded batches and
returns the assistant's text; ``complete(lm, texts)`` continues texts already in the model's format (judges
that render their own prompt). vLLM generates when ``backend`` allows it, it is installed, a GPU is present
and the weights in memory are still those of the model's folder (``ChatLM.weights_from_folder``: a trained,
LoRA-adapted or stored model is generated with transformers, since vLLM would load the folder's weights);
``backend = "vllm"`` without them is a ``UserError``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field

from poise.errors import UserError
from poise.recipes import Section


class GenCfg(Section):
    """Decoding: greedy (temperature 0) or sampled; batch size and response length."""

    max_new_tokens: int = Field(32, gt=0)
    temperature: float = Field(0.0, ge=0.0, description="0 is greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    batch_size: int = Field(64, gt=0)
    seed: int = 0
    backend: str = Field("auto", pattern="^(auto|transformers|vllm)$")


def chat_prompt(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """The text a chat model sees for one user turn, up to the assistant's answer."""
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def vllm_blockers(lm: Any) -> list[str]:
    """Why vLLM cannot generate for ``lm`` here (empty: it can)."""
    out = []
    if not torch.cuda.is_available():
        out.append("no CUDA device")
    if importlib.util.find_spec("vllm") is None:
        out.append("the vllm package is not installed")
    if not lm.weights_from_folder():
        out.append("the weights in memory are not the model folder's (trained, LoRA or stored)")
    return out


def use_vllm(lm: Any, cfg: GenCfg) -> bool:
    """vLLM for ``backend = auto`` when nothing blocks it; ``backend = vllm`` with a blocker is a ``UserError``."""
    if cfg.backend == "transformers":
        return False
    blockers = vllm_blockers(lm)
    if blockers and cfg.backend == "vllm":
        raise UserError(f"cannot generate with vLLM: {'; '.join(blockers)}; expected backend auto or transformers",
                        field="backend")
    return not blockers


def _generate_vllm(lm: Any, texts: list[str], cfg: GenCfg) -> list[str]:  # pragma: no cover - needs a GPU
    from vllm import LLM, SamplingParams

    llm = LLM(model=lm.meta["path"], tokenizer=lm.meta.get("tokenizer_path", lm.meta["path"]), seed=cfg.seed)
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens)
    return [o.outputs[0].text.strip() for o in llm.generate(texts, params)]


@torch.no_grad()
def generate(
    lm: Any, prompts: Sequence[str], cfg: GenCfg | None = None, system: str | None = None
) -> list[str]:
    """The model's response to each prompt (same order), decoded greedily or by sampling."""
    cfg = cfg or GenCfg()
    texts = [chat_prompt(lm.tokenizer, p, system) for p in prompts]
    if use_vllm(lm, cfg):
        return _generate_vllm(lm, texts, cfg)
    return complete(lm, texts, cfg)


@torch.no_grad()
def complete(lm: Any, texts: Sequence[str], cfg: GenCfg | None = None, *, add_special_tokens: bool = False
             ) -> list[str]:
    """The model's continuation of each text (transformers ``generate``, left-padded batches)."""
    cfg = cfg or GenCfg()
    texts = list(texts)
    tok, model = lm.tokenizer, lm.model
    model.eval()
    device = next(model.parameters()).device
    limit = getattr(model.config, "max_position_embeddings", None)
    side = tok.padding_side
    tok.padding_side = "left"
    out: list[str] = []
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    try:
        for i in range(0, len(texts), cfg.batch_size):
            enc = tok(
                texts[i : i + cfg.batch_size], return_tensors="pt", padding=True,
                add_special_tokens=add_special_tokens
            )
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            n_new = cfg.max_new_tokens
            if limit:
                n_new = max(1, min(n_new, limit - enc["input_ids"].shape[1]))
            kwargs: dict[str, Any] = dict(
                max_new_tokens=n_new, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
            )
            if cfg.temperature > 0:
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p)
            else:
                kwargs.update(do_sample=False)
            ids = model.generate(**enc, **kwargs)
            new = ids[:, enc["input_ids"].shape[1] :]
            out.extend(t.strip() for t in tok.batch_decode(new, skip_special_tokens=True))
    finally:
        tok.padding_side = side
    return out
