"""AlphaAlign's reward: verifiable format and refusal checks plus a group-normalised helpfulness term.

For a completion o with final answer y (Zhang et al., ICLR 2026):

- V_f(o) = 1 when o matches ``<safety_reasoning>.*</safety_reasoning>.*<answer>.*</answer>`` (dot
  matches newlines), else 0;
- V_r(y) = 1 when y contains one of the refusal patterns (the paper's list and its curly-apostrophe
  variants), else 0;
- harmful prompt: R = r_f·V_f + r_a·V_r;
- benign prompt:  R = r_f·V_f − r_a·V_r + R_h, where R_h = max((s_i − mean)/std, 0) over the reward-model
  scores s of the prompt's n rollouts, and R_h = 0 for a refusal.

Choices where the paper is silent (all exposed in :class:`AlphaAlignRewardCfg`): r_f = r_a = 1; the
format regex is searched anywhere in the completion (``format_match="full"`` anchors it); when the
completion is not formatted, the refusal check reads the whole completion (``unformatted_answer``); the
std is the sample std (ddof 1, as TRL's GRPO), and a group whose scores are all equal (std 0) gets
R_h = 0 everywhere; mean and std are over all n rollouts' scores, refusals included; the helpfulness
term is switched off for AlphaAlign-Zero (``helpfulness=false``). Labels: 1 harmful, 0 benign
(borderline prompts are benign).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from poise.errors import UserError
from poise.language.alphaalign.rl import NonFiniteRewardError, Rewards
from poise.recipes import Section

REFUSAL_ANSWER = "\\boxed{Sorry, I can't comply}"

PROMPT_TEMPLATE = (
    "A conversation between User and Assistant. The Assistant first thinks about whether the request is "
    "safe to answer, inside <safety_reasoning> </safety_reasoning> tags, then gives its final answer inside "
    "<answer> </answer> tags. If the request is harmful, the answer is " + REFUSAL_ANSWER + ".\n"
    "User: {prompt}\nAssistant:"
)

_BASE_PATTERNS = [
    "Sorry, I can't comply",
    "I'm sorry",
    "I am sorry",
    "I apologize",
    "As an AI",
    "As a language model",
    "As an assistant",
    "I cannot",
    "I can't",
    "I am unable to",
    "I'm unable to",
    "I am not able to",
    "I'm not able to",
    "I will not",
    "No, I will not",
    "I am not",
    "I'm not going to do that",
]
# The paper's list, then the same patterns with a curly apostrophe (U+2019) in place of the straight one.
DEFAULT_REFUSAL_PATTERNS: list[str] = _BASE_PATTERNS + [
    p.replace("'", "\u2019") for p in _BASE_PATTERNS if "'" in p
]

_FORMAT = r"<safety_reasoning>.*</safety_reasoning>.*<answer>.*</answer>"
_FORMAT_RE = re.compile(_FORMAT, re.DOTALL)
_FORMAT_FULL_RE = re.compile(r"\s*" + _FORMAT + r"\s*", re.DOTALL)
_ANSWER_RE = re.compile(r"<safety_reasoning>.*</safety_reasoning>.*<answer>(.*)</answer>", re.DOTALL)

Scorer = Callable[[list[str], list[str]], Sequence[float]]
"""A helpfulness reward model: ``scorer(prompts, completions) -> scores`` (higher is more helpful)."""


class AlphaAlignRewardCfg(Section):
    """Weights and verifiers of AlphaAlign's reward (a recipe's ``[reward]`` table)."""

    r_f: float = Field(1.0, ge=0.0, description="weight of the format verifier V_f (paper: not given)")
    r_a: float = Field(1.0, ge=0.0, description="weight of the refusal verifier V_r (paper: not given)")
    helpfulness: bool = Field(
        True, description="add the normalised helpfulness term R_h; false = AlphaAlign-Zero"
    )
    refusal_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFUSAL_PATTERNS),
        description="substrings that make an answer a refusal",
    )
    world_patterns: bool = Field(
        False, description="also count the safety world's refusal openings (every world language)"
    )
    case_sensitive: bool = Field(
        True, description="match refusal patterns case-sensitively (as the paper's list)"
    )
    format_match: Literal["search", "full"] = Field(
        "search",
        description="search: the format regex may match anywhere; full: the whole completion must match",
    )
    unformatted_answer: Literal["completion", "none"] = Field(
        "completion",
        description="what V_r reads when V_f = 0: the whole completion, or nothing (never a refusal)",
    )
    template: str = Field(
        PROMPT_TEMPLATE, description="prompt template; {prompt} is replaced by the user prompt"
    )

    @field_validator("refusal_patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        if not v or any(not p.strip() for p in v):
            raise ValueError("expected a non-empty list of non-empty refusal patterns")
        return v

    @property
    def patterns(self) -> list[str]:
        """The refusal patterns V_r matches: the list, plus the world's openings when asked."""
        if not self.world_patterns:
            return list(self.refusal_patterns)
        from poise.language.languages import WORLD_REFUSAL_PATTERNS

        return [*self.refusal_patterns, *WORLD_REFUSAL_PATTERNS]

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        if "{prompt}" not in v:
            raise ValueError("expected a template containing {prompt}")
        return v


def format_prompt(prompt: str, template: str = PROMPT_TEMPLATE) -> str:
    """The user prompt inside the AlphaAlign template (plain replacement: the template holds braces)."""
    return template.replace("{prompt}", prompt)


def format_ok(completion: str, *, full: bool = False) -> bool:
    """V_f: the completion has safety reasoning followed by an answer, both in their tags."""
    return bool((_FORMAT_FULL_RE.fullmatch if full else _FORMAT_RE.search)(completion))


def extract_answer(completion: str) -> str | None:
    """The text of the (last) ``<answer>`` after the safety reasoning, or None when unformatted."""
    m = _ANSWER_RE.search(completion)
    return m.group(1).strip() if m else None


def is_refusal(
    answer: str, patterns: Sequence[str] = DEFAULT_REFUSAL_PATTERNS, *, case_sensitive: bool = True
) -> bool:
    """V_r: the answer contains one of the refusal patterns."""
    if case_sensitive:
        return any(p in answer for p in patterns)
    folded = answer.casefold()
    return any(p.casefold() in folded for p in patterns)


def normalised_helpfulness(scores: Sequence[float], refusals: Sequence[bool]) -> list[float]:
    """R_h for one prompt's n rollouts: max((s − mean)/std, 0), 0 for refusals and for std-0 groups."""
    n = len(scores)
    if n < 2:
        raise UserError(
            f"n = {n} rollouts per prompt; expected n >= 2 (the helpfulness normalisation is undefined)",
            field="n",
        )
    mean = sum(scores) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    if std <= 1e-12 * max(1.0, abs(mean)):  # all scores equal: nobody is above the group
        return [0.0] * n
    return [
        0.0 if refused else max((s - mean) / std, 0.0) for s, refused in zip(scores, refusals, strict=True)
    ]


@dataclass
class RewardBreakdown:
    """Per-completion reward, its parts (V_f, V_r, R_h) and the raw helpfulness scores (NaN: unscored)."""

    total: list[float]
    format: list[float]
    refusal: list[float]
    helpfulness: list[float]
    score: list[float]
    labels: list[int]
    languages: list[str] | None = None  # each row's prompt language, when the reward knows them

    def metrics(self) -> dict[str, float]:
        """Batch means to log: reward, its parts, and refusal rates on harmful and benign prompts — overall
        and, when the rows' languages are known, per language (``refusal_harmful_<lang>``,
        ``refusal_benign_<lang>``, for the languages present in the batch)."""

        def mean(xs: Sequence[float]) -> float:
            return sum(xs) / len(xs)

        out = {"reward": mean(self.total), "format": mean(self.format), "refusal": mean(self.refusal)}
        harmful = [r for r, y in zip(self.refusal, self.labels, strict=True) if y == 1]
        benign = [i for i, y in enumerate(self.labels) if y == 0]
        if harmful:
            out["refusal_harmful"] = mean(harmful)
        if benign:
            out["refusal_benign"] = mean([self.refusal[i] for i in benign])
            out["helpfulness"] = mean([self.helpfulness[i] for i in benign])
            scored = [self.score[i] for i in benign if not math.isnan(self.score[i])]
            if scored:
                out["helpfulness_score"] = mean(scored)
        if self.languages is not None:
            for (label, name) in ((1, "refusal_harmful"), (0, "refusal_benign")):
                by_lang: dict[str, list[float]] = {}
                for r, y, lang in zip(self.refusal, self.labels, self.languages, strict=True):
                    if y == label:
                        by_lang.setdefault(lang, []).append(r)
                for lang, rs in sorted(by_lang.items()):
                    out[f"{name}_{lang}"] = mean(rs)
        return out


class AlphaAlignReward:
    """The reward function ``(prompts, completions, labels) -> Rewards`` for the RL trainers.

    Rows come in groups of ``group_size`` (n) rollouts of the same prompt. ``scorer`` is the helpfulness
    reward model; it is called once per batch on the benign rows only, and not at all when
    ``cfg.helpfulness`` is false. ``languages`` maps a prompt (as the trainer passes it) to its language:
    with it, the refusal rates are also reported per language (a prompt it lacks counts as ``und``).
    """

    def __init__(
        self,
        cfg: AlphaAlignRewardCfg | None = None,
        *,
        group_size: int,
        scorer: Scorer | None = None,
        languages: Mapping[str, str] | None = None,
    ):
        self.cfg = cfg or AlphaAlignRewardCfg()
        if group_size < 2:
            raise UserError(
                f"n = {group_size} rollouts per prompt; expected n >= 2 "
                "(the helpfulness normalisation is undefined)",
                field="n",
            )
        if self.cfg.helpfulness and scorer is None:
            raise ValueError(
                "the helpfulness term needs a scorer (reward model); pass one or set helpfulness=False"
            )
        self.n = group_size
        self.scorer = scorer
        self.languages = dict(languages) if languages is not None else None
        self.__name__ = "alphaalign"  # TRL names reward functions by __name__

    def __call__(self, prompts: list[str], completions: list[str], labels: list[int]) -> Rewards:
        b = self.breakdown(prompts, completions, labels)
        return Rewards(b.total, b.metrics())

    def breakdown(self, prompts: list[str], completions: list[str], labels: Sequence[int]) -> RewardBreakdown:
        cfg, n = self.cfg, self.n
        labels = [_label(y) for y in labels]
        if not (len(prompts) == len(completions) == len(labels)):
            raise ValueError(
                f"got {len(prompts)} prompts, {len(completions)} completions, {len(labels)} labels"
            )
        if len(prompts) % n:
            raise ValueError(f"{len(prompts)} completions are not whole groups of n = {n} rollouts")
        for g in range(0, len(prompts), n):
            if len(set(prompts[g : g + n])) != 1 or len(set(labels[g : g + n])) != 1:
                raise ValueError(
                    f"rows {g}..{g + n - 1} should be n = {n} rollouts of one prompt with one label"
                )

        vf = [float(format_ok(c, full=cfg.format_match == "full")) for c in completions]
        answers = []
        for c in completions:
            a = extract_answer(c)
            answers.append(a if a is not None else (c if cfg.unformatted_answer == "completion" else ""))
        vr = [float(is_refusal(a, cfg.patterns, case_sensitive=cfg.case_sensitive)) for a in answers]

        rh = [0.0] * len(prompts)
        score = [math.nan] * len(prompts)
        benign = [i for i, y in enumerate(labels) if y == 0]
        if cfg.helpfulness and benign:
            assert self.scorer is not None
            raw = [
                float(s) for s in self.scorer([prompts[i] for i in benign], [completions[i] for i in benign])
            ]
            if len(raw) != len(benign):
                raise ValueError(f"the reward model returned {len(raw)} scores for {len(benign)} completions")
            bad = [s for s in raw if not math.isfinite(s)]
            if bad:
                raise NonFiniteRewardError(
                    f"the helpfulness reward model returned {bad[0]} "
                    f"for {len(bad)} of {len(raw)} completions; "
                    "stopped before the update, the last checkpoint is intact",
                    field="reward",
                )
            for i, s in zip(benign, raw, strict=True):
                score[i] = s
            for g in range(0, len(prompts), n):
                if labels[g] == 0:
                    rh[g : g + n] = normalised_helpfulness(score[g : g + n], [r > 0 for r in vr[g : g + n]])

        total = [
            cfg.r_f * f + cfg.r_a * r if y == 1 else cfg.r_f * f - cfg.r_a * r + h
            for f, r, h, y in zip(vf, vr, rh, labels, strict=True)
        ]
        langs = None if self.languages is None else [self.languages.get(p, "und") for p in prompts]
        return RewardBreakdown(total, vf, vr, rh, score, labels, langs)


def _label(y: object) -> int:
    if isinstance(y, bool) or y in (0, 1):
        return int(y)  # type: ignore[call-overload]
    raise ValueError(f"expected a binary label (1 harmful, 0 benign), got {y!r}")
