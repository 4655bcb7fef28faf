"""AlphaAlign's training prompts: binary labels only (1 harmful, 0 benign; borderline counts as benign).

From the safety world's train split, or from a local JSONL / CSV file whose rows carry a prompt and a
label (``harmful``/``unsafe``/``1`` or ``benign``/``safe``/``borderline``/``0``). A file without a label
column, or a row with an unknown label, is a :class:`~poise.errors.UserError` — AlphaAlign needs the labels
and nothing else (no refusal demonstrations, no preferences). ``answer`` / ``reference`` columns, when a
file has them, feed the world verifier's helpfulness score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from poise.errors import UserError
from poise.language.data import read_rows
from poise.recipes import Section

HARMFUL_LABELS = {"harmful", "unsafe", "1", "true", "yes"}
BENIGN_LABELS = {"benign", "safe", "borderline", "0", "false", "no"}


class PromptsCfg(Section):
    """Where the RL prompts come from (``[prompts]`` table): the world's train split, or a local file."""

    file: Path | None = Field(
        None, description="local JSONL/CSV with prompt and label columns (else: the world)"
    )
    prompt_column: str = "prompt"
    label_column: str = "label"
    harmful_frac: float | None = Field(
        None, ge=0.0, le=1.0, description="resample so this share of prompts is harmful (None: as given)"
    )
    limit: int | None = Field(
        None, gt=0, description="use at most this many prompts (the first, after shuffling)"
    )

    def preflight(self) -> None:
        """A prompt file exists and has labelled rows before a run starts."""
        if self.file is not None:
            load_prompt_file(self)


@dataclass(frozen=True)
class LabelledPrompt:
    """One RL prompt: its text, binary label, and (for the verifier) a reference answer and response."""

    prompt: str
    label: int
    language: str = "und"
    kind: str = ""
    answer: str | None = None
    reference: str | None = None


def from_world(examples: list[Any]) -> list[LabelledPrompt]:
    """World examples (any objects with ``prompt``, ``kind``, ``language``, ``answer``, ``safe_response``)."""
    return [
        LabelledPrompt(e.prompt, int(e.kind == "harmful"), e.language, e.kind, e.answer, e.safe_response)
        for e in examples
    ]


def load_prompt_file(cfg: PromptsCfg) -> list[LabelledPrompt]:
    """The labelled prompts of ``cfg.file``; every row needs a prompt and a binary label."""
    assert cfg.file is not None
    path = Path(cfg.file).expanduser()
    if not path.is_file():
        raise UserError(f"no such prompt file {str(path)!r}", field="prompts.file")
    rows = read_rows(path, "prompts.file")
    if not rows:
        raise UserError("prompt file holds no rows", where=path, field="prompts.file")
    out = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise UserError(
                "expected one JSON object per line", where=f"{path}: row {i}", field="prompts.file"
            )
        prompt = row.get(cfg.prompt_column)
        if prompt is None or str(prompt).strip() == "":
            raise UserError(
                f"row has no {cfg.prompt_column!r}", where=f"{path}: row {i}", field="prompts.prompt_column"
            )
        if cfg.label_column not in row or row[cfg.label_column] in (None, ""):
            raise UserError(
                f"row has no label column {cfg.label_column!r}; AlphaAlign needs a binary harmful/"
                "benign label on every prompt",
                where=f"{path}: row {i}",
                field="prompts.label_column",
            )
        raw = str(row[cfg.label_column]).strip().casefold()
        if raw in HARMFUL_LABELS:
            label = 1
        elif raw in BENIGN_LABELS:
            label = 0
        else:
            raise UserError(
                f"label {row[cfg.label_column]!r}: expected harmful/unsafe/1 or benign/safe/borderline/0",
                where=f"{path}: row {i}",
                field="prompts.label_column",
            )
        answer = row.get("answer")
        out.append(
            LabelledPrompt(
                str(prompt),
                label,
                str(row.get("language") or "und"),
                raw,
                None if answer in (None, "") else str(answer),
                row.get("reference") or None,
            )
        )
    return out


def select(prompts: list[LabelledPrompt], cfg: PromptsCfg, seed: int) -> list[LabelledPrompt]:
    """Shuffle (seeded), rebalance to ``harmful_frac`` when set, and cut to ``limit``."""
    import random

    rng = random.Random(seed)
    pool = list(prompts)
    rng.shuffle(pool)
    if cfg.harmful_frac is not None:
        harmful = [p for p in pool if p.label == 1]
        benign = [p for p in pool if p.label == 0]
        total = cfg.limit or len(pool)
        want_h = round(total * cfg.harmful_frac)
        if (want_h and not harmful) or (total - want_h and not benign):
            raise UserError(
                "prompts.harmful_frac asks for a label the prompt set does not have",
                field="prompts.harmful_frac",
            )
        pool = [harmful[i % len(harmful)] for i in range(want_h)] + [
            benign[i % len(benign)] for i in range(total - want_h)
        ]
        rng.shuffle(pool)
    if cfg.limit is not None:
        pool = pool[: cfg.limit]
    if not pool:
        raise UserError("no training prompts", field="prompts")
    return pool
