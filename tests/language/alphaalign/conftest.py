"""AlphaAlign tests: register the kind (language/kinds.py may not import it yet) and a tiny model folder."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

with contextlib.suppress(ImportError):  # registers language.alphaalign; needs the language lab merged in
    import poise.language.alphaalign.kinds  # noqa: F401

WORLD = [
    "[data.world]",
    "seed = 0",
    'languages = ["en", "fr"]',
    "benign = { train = 24, val = 2, test = 6 }",
    "harmful = { train = 16, val = 2, test = 6 }",
    "borderline = { train = 8, val = 2, test = 4 }",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny untrained world Llama with the world's BPE tokenizer, as a local HF folder (built once)."""
    from poise.language.base import tokenizer_corpus
    from poise.language.models import TinyLMCfg, export_hf, tiny_llama
    from poise.language.tokenizer import train_tokenizer
    from poise.language.world import WorldCfg, build_world

    world = build_world(WorldCfg(languages=["en", "fr"]))
    tok = train_tokenizer(tokenizer_corpus(world), 320)
    cfg = TinyLMCfg(
        vocab_size=320,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        intermediate_size=64,
        max_length=80,
    )
    folder = tmp_path_factory.mktemp("tiny-base") / "model"
    export_hf(tiny_llama(cfg, tok, seed=0), folder)
    return folder


def tiny_recipe(folder: Path, model_dir: Path) -> Path:
    """An AlphaAlign recipe on the tiny model folder (PPO, 2 steps of 2 prompts x n = 2) in ``folder``."""
    lines = [
        'kind = "language.alphaalign"',
        "seed = 0",
        'algo = "ppo"',
        "n = 2",
        "[model]",
        f'path = "{model_dir}"',
        *WORLD,
        "[reward]",
        'template = "{prompt}"',
        "[ppo]",
        "max_new_tokens = 6",
        "minibatch_size = 4",
        "[train]",
        "lr = 1e-3",
        "batch_size = 2",
        "checkpoint_every = 1",
        "budget = { steps = 2 }",
        "[[eval]]",
        'name = "language.safety"',
        "max_new_tokens = 6",
    ]
    path = folder / "alphaalign.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tiny_alphaalign(tmp_path: Path, tiny_model_dir: Path) -> Path:
    return tiny_recipe(tmp_path, tiny_model_dir)
