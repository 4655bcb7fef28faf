"""A byte-level BPE tokenizer trained on the safety world (``tokenizers``), with a chat template.

Byte-level so that every script (Latin, Cyrillic, whatever a user's data holds) encodes without unknown
tokens; digits are split one per token so numbers compose. The chat template renders a conversation as
``<|user|>…<|assistant|>…<|end|>``; ``<|end|>`` is the end-of-sequence token, ``<|pad|>`` pads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from transformers import PreTrainedTokenizerFast

PAD, BOS, END, USER, ASSISTANT, SYSTEM = (
    "<|pad|>",
    "<|bos|>",
    "<|end|>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
)
SPECIAL_TOKENS = (PAD, BOS, END, USER, ASSISTANT, SYSTEM)

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}" + SYSTEM + "{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}" + USER + "{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}" + ASSISTANT + "{{ m['content'] }}" + END + "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1024,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    config: dict[str, Any] | None = None,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it as a transformers tokenizer with the chat template.

    ``special_tokens`` and ``config`` (pad / eos / bos tokens, chat template) replace the world's own, e.g. to
    build a tokenizer in another model family's format.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return wrap_tokenizer(tok.to_str(), config)


def wrap_tokenizer(tokenizer_json: str, config: dict[str, Any] | None = None) -> PreTrainedTokenizerFast:
    """A transformers tokenizer from a ``tokenizers`` JSON string and its special-token config."""
    from tokenizers import Tokenizer

    cfg = {"pad_token": PAD, "eos_token": END, "bos_token": BOS, "chat_template": CHAT_TEMPLATE}
    cfg.update(config or {})
    chat_template = cfg.pop("chat_template")
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer_json), **cfg)
    tok.chat_template = chat_template
    tok.padding_side = "right"
    return tok


def tokenizer_to_meta(tok: PreTrainedTokenizerFast) -> dict[str, Any]:
    """What an artifact's metadata stores to rebuild the tokenizer exactly (no pickle, plain JSON)."""
    return {
        "json": tok.backend_tokenizer.to_str(),
        "config": {
            "pad_token": tok.pad_token,
            "eos_token": tok.eos_token,
            "bos_token": tok.bos_token,
            "chat_template": tok.chat_template,
        },
    }


def tokenizer_from_meta(meta: dict[str, Any]) -> PreTrainedTokenizerFast:
    return wrap_tokenizer(meta["json"], meta.get("config"))


def tokenizer_fingerprint(tok: Any) -> str:
    """A short hash of a tokenizer's vocabulary (to tell whether two tokenizers match)."""
    import hashlib

    vocab = tok.get_vocab()
    blob = json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
