"""Helpfulness reward models for AlphaAlign's benign prompts: ``scorer(prompts, completions) -> scores``.

* ``verifier`` (default) — the world's verifier: 1 when the answer equals the prompt's reference answer
  (case, spaces and end punctuation ignored, as the language lab's exact judge), plus a small length term
  ``length_weight · (1 − min(1, |len(y) − len(ref)| / len(ref)))`` against the reference answer or, for
  prompts without one (borderline), the reference helpful response. Prompts with neither score 0.
* ``path`` — any local HF sequence-classification reward model (one logit per text); a folder whose
  config is not a sequence-classification architecture is a :class:`~poise.errors.UserError`;
* ``reward_model`` — a Bradley–Terry reward model trained by poise (``language.reward_model``, TRL's
  RewardTrainer loss on world preferences), named by recipe or ``run:<id>`` and scored like ``path``.

The answer scored is the ``<answer>`` text when the completion is formatted, else the whole completion.
Scores are raw; :func:`~poise.language.alphaalign.rewards.normalised_helpfulness` normalises each group.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from poise.errors import UserError
from poise.language.alphaalign.rewards import extract_answer
from poise.recipes import Section

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class HelpfulnessCfg(Section):
    """Which reward model scores benign completions (``[helpfulness]`` table)."""

    source: Literal["verifier", "path", "reward_model"] = "verifier"
    path: Path | None = Field(
        None, description="local HF sequence-classification reward model (source = path)"
    )
    reward_model: str | None = Field(
        None, description="language.reward_model recipe or run:<id> (source = reward_model)"
    )
    length_weight: float = Field(0.1, ge=0.0, description="verifier: weight of the length term")
    batch_size: int = Field(32, gt=0, description="path: texts scored per forward pass")

    @field_validator("path")
    @classmethod
    def _is_reward_model(cls, v: Path | None) -> Path | None:
        if v is not None:
            check_reward_model_folder(v)
        return v


def check_reward_model_folder(path: str | Path) -> list[str]:
    """Architectures of a local HF folder that must be a sequence-classification model (else ValueError)."""
    import json

    folder = Path(path).expanduser()
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(
            f"no HF model folder at {str(folder)!r} (config.json missing); expected a local "
            "sequence-classification reward model"
        )
    try:
        archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError):
        raise ValueError(f"unreadable config.json in {str(folder)!r}") from None
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise ValueError(
            f"{str(folder)!r} is a {', '.join(archs) or 'model without architectures'}; expected a "
            "sequence-classification reward model (...ForSequenceClassification)"
        )
    return archs


def normalise_text(text: str) -> str:
    """Case, whitespace and end punctuation folded (the language lab's exact-answer normalisation)."""
    text = unicodedata.normalize("NFC", text).casefold().strip()
    text = re.sub(r"\s+", " ", text)
    return text.rstrip(" .!?。")


def _answer(completion: str) -> str:
    a = extract_answer(completion)
    return a if a is not None else completion


class VerifierScorer:
    """Exact-answer correctness plus a small length term, from each prompt's references."""

    def __init__(self, references: dict[str, tuple[str | None, str | None]], length_weight: float = 0.1):
        self.references = references  # prompt text -> (exact answer, reference response)
        self.length_weight = length_weight

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        out = []
        for p, c in zip(prompts, completions, strict=True):
            answer, reference = self.references.get(p, (None, None))
            y = normalise_text(_answer(c))
            score = 0.0
            if answer is not None:
                ref = normalise_text(answer)
                score += float(y == ref or y.startswith(ref + " "))
            target = answer if answer is not None else reference
            if target:
                n = max(len(target), 1)
                score += self.length_weight * (1.0 - min(1.0, abs(len(y) - len(normalise_text(target))) / n))
            out.append(score)
        return out


class HFRewardModelScorer:
    """A local HF sequence-classification reward model: the score is its (first) logit on prompt + answer."""

    def __init__(
        self, path: str | Path, *, device: str = "cpu", batch_size: int = 32, where: str | None = None
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(path).expanduser()
        try:
            check_reward_model_folder(folder)
        except ValueError as e:
            raise UserError(str(e), where=where, field="helpfulness.path") from None
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).to(
            device
        )
        self.model.eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device, self.batch_size, self._torch = device, batch_size, torch

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        texts = [p + _answer(c) for p, c in zip(prompts, completions, strict=True)]
        out: list[float] = []
        with self._torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[i : i + self.batch_size], return_tensors="pt", padding=True, truncation=True
                ).to(self.device)
                out += self.model(**enc).logits[:, 0].float().tolist()
        return out
