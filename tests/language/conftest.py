"""Language tests: a tiny untrained world Llama as a local HF folder (built once a session), and a tiny world."""

from __future__ import annotations

from pathlib import Path

import pytest

WORLD = [
    "[data.world]",
    "seed = 0",
    'languages = ["en", "fr"]',
    "benign = { train = 24, val = 2, test = 6 }",
    "harmful = { train = 16, val = 2, test = 6 }",
    "borderline = { train = 8, val = 2, test = 4 }",
]


TINY = dict(vocab_size=320, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
            max_length=80)
TINY_TOML = "tiny = { " + ", ".join(f"{k} = {v}" for k, v in TINY.items()) + " }"  # a [model] line


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny untrained world Llama with the world's BPE tokenizer, as a local HF folder (built once)."""
    from poise.language.base import tokenizer_corpus
    from poise.language.models import TinyLMCfg, export_hf, tiny_llama
    from poise.language.tokenizer import train_tokenizer
    from poise.language.world import WorldCfg, build_world

    world = build_world(WorldCfg(languages=["en", "fr"]))
    tok = train_tokenizer(tokenizer_corpus(world), 320)
    cfg = TinyLMCfg(**TINY)
    folder = tmp_path_factory.mktemp("tiny-base") / "model"
    export_hf(tiny_llama(cfg, tok, seed=0), folder)
    return folder
