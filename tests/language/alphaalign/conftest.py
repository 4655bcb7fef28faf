"""AlphaAlign tests: register the kind and write tiny AlphaAlign recipes (the tiny model is tests/language's)."""

from __future__ import annotations

from pathlib import Path

import pytest

import poise.language.alphaalign.kinds  # noqa: F401  (registers language.alphaalign)
from tests.language.conftest import WORLD


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
