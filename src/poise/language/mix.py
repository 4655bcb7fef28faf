"""Training mixes for alignment: which world examples an SFT or DPO run learns from, and in what form.

A :class:`MixCfg` is the ``[mix]`` table of ``language.sft`` and ``language.dpo`` recipes. It selects
train-split examples of the safety world by language, by harm scope and by objective:

* ``objective = "general"``: benign tasks only (utility data);
* ``objective = "safety"``: harmful requests and borderline look-alikes only (safety data);
* ``objective = "mix"``: both, the data mix that model merging is compared against.

``harms`` filters the **harmful** prompts by scope (``global`` / ``local``), so that a model trained on one
scope can be tested on the other; borderline prompts are benign and always kept (choice: dropping them would
teach blanket refusal of a hazard's words). ``languages`` picks the training languages; evaluation always
covers every language of ``data.world``.

SFT targets are each example's ``safe_response`` (the exact answer, the helpful reply, or the refusal of a
harmful request). DPO pairs are ``safe_response ≻ unsafe_response``: refusal ≻ compliance for harmful
prompts, help ≻ refusal for borderline ones, and for benign tasks the exact answer ≻ the answer of another
task of the same operation (``benign_rejected = "wrong_answer"``, the default).

Why not answer ≻ refusal for benign tasks (``benign_rejected = "refusal"``, the former default): the same
refusal sentence is then the *rejected* answer of most pairs of a language (benign and borderline outnumber
harmful prompts) and the chosen one of the few harmful pairs. The base already ranks an answer far above a
refusal on a benign task, so those pairs teach nothing about the task, but DPO still pushes the refusal
down in them, and a small model carries that over to harmful prompts: DPO unlearned the refusals it was
meant to teach and harmful compliance rose (README, "DPO that learns"). ``"none"`` drops benign pairs.

``reasoned_share`` of the harmful examples refuse with the world's *reasoned* refusal (the refusal, then a
sentence naming the request's harm category in its language; :func:`poise.language.world.reasoned_response`)
instead of the bare one: as the SFT target and as DPO's chosen answer. Which examples is a fixed draw per
example (its id and prompt, salt ``"reasoned"``), so every run of a mix reasons on the same ones. Default 0:
bare refusals only, as before the field existed (choice: the shipped recipes' numbers stay comparable; a
share above 0 is how deep, reason-giving refusals enter training).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar

import numpy as np
from pydantic import Field, field_validator

from poise.errors import UserError
from poise.language.world import Example, check_language_codes, taught_refusal
from poise.recipes import Section

T = TypeVar("T")
Objective = Literal["mix", "general", "safety"]
OBJECTIVE_KINDS: dict[str, tuple[str, ...]] = {
    "mix": ("benign", "harmful", "borderline"),
    "general": ("benign",),
    "safety": ("harmful", "borderline"),
}


class MixCfg(Section):
    """Which train examples an alignment run sees: languages, harm scopes and objective."""

    languages: list[str] | None = Field(None, description="training languages; None: every world language")
    harms: list[Literal["global", "local"]] = Field(
        default_factory=lambda: ["global", "local"], min_length=1, description="harm scopes of harmful prompts"
    )
    objective: Objective = Field("mix", description="mix (all), general (benign tasks) or safety (harm + borderline)")
    max_examples: int | None = Field(None, gt=0, description="cap on training examples (a seeded subset)")
    benign_rejected: Literal["wrong_answer", "refusal", "none"] = Field(
        "wrong_answer",
        description="DPO: a benign task's rejected answer — another task's answer, the refusal, or no benign pair",
    )
    reasoned_share: float = Field(
        0.0, ge=0.0, le=1.0,
        description="share of harmful examples whose refusal names the harm category (SFT target, DPO chosen)",
    )

    @field_validator("languages")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("expected at least one language (or leave it unset for all)")
            check_language_codes(v)
        return v


def select(examples: Sequence[Example], cfg: MixCfg, seed: int = 0) -> list[Example]:
    """The train examples ``cfg`` keeps, in world order (a seeded subset when ``max_examples`` is set)."""
    kinds = OBJECTIVE_KINDS[cfg.objective]
    out = [
        e
        for e in examples
        if e.kind in kinds
        and (cfg.languages is None or e.language in cfg.languages)
        and (e.kind != "harmful" or e.harm in cfg.harms)
    ]
    if cfg.languages is not None:
        have = {e.language for e in examples}
        missing = [lang for lang in cfg.languages if lang not in have]
        if missing:
            raise UserError(
                f"language {missing[0]!r} is not in the world's data; expected one of {sorted(have)}",
                field="mix.languages",
            )
    if not out:
        raise UserError(
            f"the mix keeps no training example (objective {cfg.objective}, harms {cfg.harms}, "
            f"languages {cfg.languages or 'all'})",
            field="mix",
        )
    if cfg.max_examples is not None:
        out = seeded_subset(out, cfg.max_examples, np.random.default_rng(seed))
    return out


def seeded_subset(items: list[T], n: int, rng: np.random.Generator) -> list[T]:
    """``n`` of ``items`` drawn without replacement by ``rng``, kept in their order (all when fewer)."""
    if len(items) <= n:
        return items
    return [items[i] for i in np.sort(rng.choice(len(items), n, replace=False))]


def aligned_response(e: Example, cfg: MixCfg | None = None) -> str | None:
    """What the mix teaches for ``e``: its ``safe_response``, or for ``cfg.reasoned_share`` of harmful examples
    the reasoned refusal that names the request's harm category."""
    if e.kind == "harmful":
        return taught_refusal(e, 0, cfg.reasoned_share if cfg else 0.0)
    return e.safe_response


def sft_rows(examples: Sequence[Example], cfg: MixCfg | None = None) -> list[dict]:
    """TRL's conversational prompt–completion rows: the user prompt and the aligned answer."""
    return [
        {
            "prompt": [{"role": "user", "content": e.prompt}],
            "completion": [{"role": "assistant", "content": aligned_response(e, cfg) or ""}],
        }
        for e in examples
    ]


def wrong_answer(i: int, examples: Sequence[Example]) -> str | None:
    """The answer of the next benign task after ``examples[i]`` of its language and operation whose answer
    differs (wrapping around)."""
    e = examples[i]
    for o in [*examples[i + 1:], *examples[:i]]:
        if (o.kind == "benign" and o.language == e.language and o.category == e.category and o.answer
                and o.answer != e.answer):
            return o.answer
    return None


def preference_rows(examples: Sequence[Example], cfg: MixCfg | None = None) -> list[dict]:
    """TRL's conversational preference rows: chosen = aligned response (:func:`aligned_response`), rejected =
    misaligned one (for benign tasks: ``cfg.benign_rejected``)."""
    how = (cfg or MixCfg()).benign_rejected
    rows = []
    for i, e in enumerate(examples):
        rejected = e.unsafe_response
        if e.kind == "benign" and how != "refusal":
            rejected = wrong_answer(i, examples) if how == "wrong_answer" else None
        chosen = aligned_response(e, cfg)
        if not chosen or not rejected:
            continue
        rows.append(
            {
                "prompt": [{"role": "user", "content": e.prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    if not rows:
        raise UserError("no example of the mix has both a safe and an unsafe response", field="mix")
    return rows
