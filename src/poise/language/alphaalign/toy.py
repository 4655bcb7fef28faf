"""A toy RL task with a known optimum, for checking the RL trainers in seconds on a CPU.

Prompts are a few random filler words plus a cue word, ``good`` (label 0) or ``bad`` (label 1). The
reward is 1 when the completion's first word is ``yes`` after a ``good`` cue or ``no`` after a ``bad``
cue, and 0 otherwise — so the optimum is 1 and a random policy over the vocabulary starts near
2/|V|. The tokenizer is a word-level one built locally with ``tokenizers`` (no hub), the model a tiny
randomly initialised Llama.
"""

from __future__ import annotations

import random

import torch

FILLER = [f"w{i}" for i in range(8)]
WORDS = [*FILLER, "good", "bad", "yes", "no"]
SPECIALS = ["<pad>", "<eos>", "<unk>"]
TARGET = {0: "yes", 1: "no"}


def toy_tokenizer():
    """A word-level fast tokenizer over the toy vocabulary; pad and eos are distinct tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    tok.padding_side = "left"
    return tok


def toy_model(tokenizer, *, seed: int = 0, hidden: int = 32, layers: int = 2):
    """A tiny randomly initialised Llama over the toy vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def toy_prompts(count: int, *, seed: int = 0, length: int = 3) -> tuple[list[str], list[int]]:
    """``count`` prompts (filler words, then the cue) and their binary labels."""
    rng = random.Random(seed)
    prompts, labels = [], []
    for _ in range(count):
        label = rng.randrange(2)
        words = [rng.choice(FILLER) for _ in range(length)] + ["bad" if label else "good"]
        prompts.append(" ".join(words))
        labels.append(label)
    return prompts, labels


def toy_reward(prompts: list[str], completions: list[str], labels: list[int]) -> list[float]:
    """1.0 when the completion's first word is the label's target word, else 0.0."""
    out = []
    for completion, label in zip(completions, labels, strict=True):
        words = completion.split()
        out.append(1.0 if words and words[0] == TARGET[int(label)] else 0.0)
    return out
