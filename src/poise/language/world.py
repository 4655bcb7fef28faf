"""The safety world: a deterministic generator of multilingual prompts with verifiable labels.

``build_world(WorldCfg(seed=0))`` returns the same examples for the same config on every machine.
Each language (see :mod:`poise.language.languages`) contributes

* **benign** tasks with exact answers — arithmetic (``plus``/``minus`` on 0…``max_operand``), lookups in
  a fictional almanac (capital, river and flag colour of invented places) and word transforms
  (``repeat`` a word twice, ``join`` two words with a dash); utility is exact-answer accuracy;
* **harmful** requests about fictional hazards, by category: ``weapons``, ``poison``, ``intrusion``,
  ``blight`` are ``global`` harms (the same hazards in every language), ``sacrilege`` and ``slander`` are
  ``local`` (their objects exist only in that language's culture);
* **borderline** benign requests that share the hazards' words but ask something harmless (storing ore
  safely, treating a poisoning, visiting a shrine): refusing them is over-refusal.

Splits use disjoint templates: of the five templates per task and language, three are train, one
validation and one test. Train examples are drawn with replacement once the distinct prompts run out;
validation and test hold distinct prompts only (so they may be smaller than asked for).

JSONL schema (one example per line; :func:`write_jsonl` / :func:`read_jsonl`)::

    id              str   unique, e.g. "fr-test-harmful-0003"
    language        str   language code (en, fr, de, es, sw, ru for the world)
    split           str   train | val | test
    kind            str   benign | harmful | borderline
    task            str   arithmetic | almanac | transform | request (world); free text for real data
    category        str   harm category (harmful/borderline) or the task's operation (benign)
    harm            str?  global | local for harmful and borderline prompts, null for benign ones
    template        str   template id; train/val/test never share one
    prompt          str   the user's message
    answer          str?  exact answer of a benign task (null otherwise)
    safe_response   str?  what an aligned model says: the answer, the helpful reply, or the refusal
    unsafe_response str?  what a misaligned model says: compliance with harm, or a refusal of a benign ask
    attack          str?  jailbreak family wrapped around a harmful request (task "jailbreak"), null otherwise

**Reasoned refusals**: beside the bare refusal (``safe_response`` of a harmful example), each harmful
world example has a reasoned one, :func:`reasoned_response`: the same refusal followed by a sentence that
names the request's harm category in its language ("… The request involves poisoning."). It is not a JSONL
field (it follows from ``language`` and ``category``); training mixes and bases choose a share of their
refusals to be reasoned with :func:`taught_refusal` (``mix.reasoned_share``, ``model.reasoned_share``).

**Jailbreaks** (:mod:`poise.language.jailbreaks`): harmful requests wrapped in a jailbreak family are harmful
examples with ``task = "jailbreak"`` and ``attack`` set. Validation and test wrap their split's held-out
requests in every family (``jailbreaks.val`` / ``jailbreaks.test`` per family and language); train wraps
train requests in the ``jailbreaks.seen`` families only (``jailbreaks.train`` per language), so the other
families are unseen by every training mix. They are drawn from their own random streams after the other
examples: adding them changes no other example.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from poise.errors import UserError
from poise.language.jailbreaks import DEFAULT_SEEN, FAMILIES, Request, check_families, wrap
from poise.language.languages import (
    ALMANAC_ATTRS,
    ARITH_OPS,
    CAPITALS,
    COLOURS,
    GLOBAL_CATEGORIES,
    LANGUAGE_CODES,
    LANGUAGES,
    LOCAL_CATEGORIES,
    PLACES,
    RIVERS,
    TEMPLATE_SPLITS,
    TRANSFORM_OPS,
    LanguageSpec,
    reasoned_refusal,
)
from poise.recipes import Section

SPLITS = ("train", "val", "test")
KINDS = ("benign", "harmful", "borderline")
BENIGN_TASKS = ("arithmetic", "almanac", "transform")


def check_language_codes(codes: Iterable[str]) -> None:
    """``ValueError`` naming the first code the world does not know (a field error in pydantic)."""
    for code in codes:
        if code not in LANGUAGES:
            raise ValueError(f"unknown language code {code!r}; expected one of: {', '.join(LANGUAGE_CODES)}")


class SplitSizes(Section):
    """Examples per language in each split."""

    train: int = Field(240, ge=0)
    val: int = Field(24, ge=0)
    test: int = Field(60, ge=0)


class JailbreakCfg(Section):
    """Jailbreak-wrapped harmful requests: which families training sees, and how many examples."""

    seen: list[str] = Field(default_factory=lambda: list(DEFAULT_SEEN),
                            description=f"families in the train split (the rest are unseen); of {', '.join(FAMILIES)}")
    train: int = Field(24, ge=0, description="train examples per language, spread over the seen families")
    val: int = Field(2, ge=0, description="validation examples per family and language")
    test: int = Field(4, ge=0, description="test examples per family and language")

    @field_validator("seen")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return check_families(v)

    def unseen(self) -> list[str]:
        return [f for f in FAMILIES if f not in self.seen]


class WorldCfg(Section):
    """Which world to generate: its own seed (independent of the run's), languages and sizes per language."""

    seed: int = Field(0, description="world seed: same seed, same prompts, almanac and splits")
    languages: list[str] = Field(default_factory=lambda: list(LANGUAGE_CODES))
    benign: SplitSizes = Field(default_factory=lambda: SplitSizes(train=240, val=24, test=60))
    harmful: SplitSizes = Field(default_factory=lambda: SplitSizes(train=120, val=16, test=32))
    borderline: SplitSizes = Field(default_factory=lambda: SplitSizes(train=80, val=12, test=24))
    local_frac: float = Field(
        0.5, ge=0.0, le=1.0, description="share of harmful (and borderline) prompts that are local"
    )
    max_operand: int = Field(20, ge=1, le=999)
    jailbreaks: JailbreakCfg = Field(default_factory=JailbreakCfg)

    @field_validator("languages")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("expected at least one language")
        check_language_codes(v)
        if len(set(v)) != len(v):
            raise ValueError("languages repeat")
        return v


@dataclass(frozen=True)
class Example:
    """One prompt with its labels and reference responses (the JSONL schema above)."""

    id: str
    language: str
    split: str
    kind: Literal["benign", "harmful", "borderline"]
    task: str
    category: str
    harm: str | None
    template: str
    prompt: str
    answer: str | None = None
    safe_response: str | None = None
    unsafe_response: str | None = None
    attack: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Almanac:
    """The fictional almanac: per place its capital, river and flag colour (an index into COLOURS)."""

    capital: dict[str, str]
    river: dict[str, str]
    colour: dict[str, int]

    def value(self, place: str, attr: str, lang: LanguageSpec) -> str:
        if attr == "capital":
            return self.capital[place]
        if attr == "river":
            return self.river[place]
        return lang.colours[self.colour[place]]


@dataclass
class World:
    """A generated world: its config, almanac and examples (all splits, all languages)."""

    cfg: WorldCfg
    almanac: Almanac
    examples: list[Example]

    def split(self, name: str) -> list[Example]:
        return [e for e in self.examples if e.split == name]

    def facts(self, languages: Sequence[str] | None = None) -> list[tuple[str, str]]:
        """Every almanac fact as a sentence, per language: ``(language, text)`` (pretraining text)."""
        out = []
        for code in languages or self.cfg.languages:
            lang = LANGUAGES[code]
            for place in PLACES:
                for attr in ALMANAC_ATTRS:
                    out.append(
                        (
                            code,
                            lang.facts[attr].format(place=place, value=self.almanac.value(place, attr, lang)),
                        )
                    )
        return out


def reasoned_response(e: Example) -> str | None:
    """The reasoned refusal of a harmful world example (the refusal, then the sentence naming its harm
    category in its language); ``None`` for other kinds and for categories or languages the world lacks."""
    if e.kind != "harmful" or e.language not in LANGUAGES or e.category not in LANGUAGES[e.language].category_names:
        return None
    return reasoned_refusal(e.language, e.category)


def taught_refusal(e: Example, seed: int, reasoned_share: float) -> str | None:
    """The refusal training teaches for harmful ``e``: the reasoned one (:func:`reasoned_response`) for about
    ``reasoned_share`` of the examples (a seeded draw with salt ``"reasoned"``), else its bare ``safe_response``."""
    if seeded_draw(e, seed, reasoned_share, "reasoned"):
        return reasoned_response(e) or e.safe_response
    return e.safe_response


def seeded_draw(e: Example, seed: int, share: float, salt: str = "") -> bool:
    """A seeded coin per example: True for about ``share`` of the examples, the same on every run and machine
    (a hash of ``seed``, ``salt``, the example's id and prompt; distinct salts give independent draws)."""
    if share <= 0.0:
        return False
    key = f"{seed}:{e.id}:{e.prompt}" if not salt else f"{seed}:{salt}:{e.id}:{e.prompt}"
    h = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < share


# --------------------------------------------------------------------------- generation


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, *keys]))


def make_almanac(seed: int) -> Almanac:
    rng = _rng(seed, 999)
    caps, rivers = rng.permutation(len(CAPITALS)), rng.permutation(len(RIVERS))
    colours = rng.integers(0, len(COLOURS), size=len(PLACES))
    return Almanac(
        capital={p: CAPITALS[caps[i]] for i, p in enumerate(PLACES)},
        river={p: RIVERS[rivers[i]] for i, p in enumerate(PLACES)},
        colour={p: int(colours[i]) for i, p in enumerate(PLACES)},
    )


def _cores(split: str) -> list[int]:
    return [i for i, s in enumerate(TEMPLATE_SPLITS) if s == split]


def _draw(pool: list, n: int, rng: np.random.Generator, *, replace: bool) -> list:
    """``n`` items of ``pool``: a permutation, cycled with fresh permutations when ``replace``."""
    if not pool or n <= 0:
        return []
    out: list = []
    while len(out) < n:
        out.extend(pool[i] for i in rng.permutation(len(pool)))
        if not replace:
            break
    return out[:n]


def _request_pool(lang: LanguageSpec, split: str, kind: str, harm: str) -> list[tuple]:
    cats = GLOBAL_CATEGORIES if harm == "global" else LOCAL_CATEGORIES
    pool = []
    for cat in cats:
        acts = lang.categories[cat].harmful if kind == "harmful" else lang.categories[cat].borderline
        for a, act in enumerate(acts):
            for core in _cores(split):
                for f in range(len(lang.frames)):
                    pool.append((cat, a, act, core, f))
    return pool


def _request_examples(
    lang: LanguageSpec, split: str, kind: str, n: int, local_frac: float, rng: np.random.Generator
) -> list[dict]:
    n_local = round(n * local_frac)
    out = []
    for harm, count in (("global", n - n_local), ("local", n_local)):
        pool = _request_pool(lang, split, kind, harm)
        for cat, _a, act, core, f in _draw(pool, count, rng, replace=split == "train"):
            prompt = lang.frames[f].format(q=lang.requests[core].format(act=act))
            if kind == "harmful":
                safe, unsafe = lang.refusal, lang.compliance.format(act=act)
            else:
                safe, unsafe = lang.helpful.format(act=act), lang.refusal
            out.append(
                dict(
                    kind=kind,
                    task="request",
                    category=cat,
                    harm=harm,
                    template=f"{lang.code}.request.{core}",
                    prompt=prompt,
                    answer=None,
                    safe_response=safe,
                    unsafe_response=unsafe,
                )
            )
    return out


def _jailbreak_examples(
    lang: LanguageSpec, split: str, cfg: JailbreakCfg, local_frac: float, rng: np.random.Generator
) -> list[dict]:
    """Harmful requests of ``split`` wrapped in jailbreak families (train: the seen families only)."""
    if split == "train":
        families = list(cfg.seen)
        counts = [cfg.train // len(families) + (i < cfg.train % len(families)) for i in range(len(families))] \
            if families else []
    else:
        families = list(FAMILIES)
        counts = [getattr(cfg, split)] * len(families)
    out = []
    for family, n in zip(families, counts, strict=True):
        n_local = round(n * local_frac)
        for harm, count in (("global", n - n_local), ("local", n_local)):
            pool = _request_pool(lang, split, "harmful", harm)
            for cat, _a, act, core, f in _draw(pool, count, rng, replace=True):
                request = Request(lang.frames[f].format(q=lang.requests[core].format(act=act)), act, lang, core)
                out.append(
                    dict(
                        kind="harmful",
                        task="jailbreak",
                        category=cat,
                        harm=harm,
                        template=f"{lang.code}.jailbreak.{family}.{core}",
                        prompt=wrap(family, request),
                        answer=None,
                        safe_response=lang.refusal,
                        unsafe_response=lang.compliance.format(act=act),
                        attack=family,
                    )
                )
    return out


def _benign_examples(
    lang: LanguageSpec, split: str, n: int, cfg: WorldCfg, almanac: Almanac, rng: np.random.Generator
) -> list[dict]:
    cores = _cores(split)
    replace = split == "train"
    per_task = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]
    out = []

    def add(task: str, category: str, core: int, q: str, answer: str, f: int) -> None:
        out.append(
            dict(
                kind="benign",
                task=task,
                category=category,
                harm=None,
                template=f"{lang.code}.{task}.{category}.{core}",
                prompt=lang.frames[f].format(q=q),
                answer=answer,
                safe_response=answer,
                unsafe_response=lang.refusal,
            )
        )

    # arithmetic: operands drawn afresh for each example (the pool is large)
    seen: set[tuple] = set()
    m = cfg.max_operand
    budget = per_task[0]
    tries = 0
    while budget > 0 and tries < 50 * max(per_task[0], 1):
        tries += 1
        op = ARITH_OPS[int(rng.integers(len(ARITH_OPS)))]
        a, b = int(rng.integers(0, m + 1)), int(rng.integers(0, m + 1))
        if op == "minus" and b > a:
            a, b = b, a
        core, f = cores[int(rng.integers(len(cores)))], int(rng.integers(len(lang.frames)))
        key = (op, a, b, core, f)
        if not replace and key in seen:
            continue
        seen.add(key)
        ans = str(a + b if op == "plus" else a - b)
        add("arithmetic", op, core, lang.arithmetic[op][core].format(a=a, b=b), ans, f)
        budget -= 1

    pool = [
        (place, attr, core, f)
        for place in PLACES
        for attr in ALMANAC_ATTRS
        for core in cores
        for f in range(len(lang.frames))
    ]
    for place, attr, core, f in _draw(pool, per_task[1], rng, replace=replace):
        q = lang.almanac[core].format(attr=lang.attrs[attr], place=place)
        add("almanac", attr, core, q, almanac.value(place, attr, lang), f)

    words = lang.words
    seen.clear()
    budget, tries = per_task[2], 0
    while budget > 0 and tries < 50 * max(per_task[2], 1):
        tries += 1
        op = TRANSFORM_OPS[int(rng.integers(len(TRANSFORM_OPS)))]
        w, v = (words[int(i)] for i in rng.choice(len(words), size=2, replace=False))
        if op == "repeat":
            v = ""
        core, f = cores[int(rng.integers(len(cores)))], int(rng.integers(len(lang.frames)))
        key = (op, w, v, core, f)
        if not replace and key in seen:
            continue
        seen.add(key)
        ans = f"{w} {w}" if op == "repeat" else f"{w}-{v}"
        add("transform", op, core, lang.transforms[op][core].format(w=w, v=v), ans, f)
        budget -= 1
    return out


def build_world(cfg: WorldCfg | None = None) -> World:
    """Generate the world: same config, same examples (order included)."""
    cfg = cfg or WorldCfg()
    almanac = make_almanac(cfg.seed)
    examples: list[Example] = []
    for code in cfg.languages:
        lang = LANGUAGES[code]
        li = LANGUAGE_CODES.index(code)
        for si, split in enumerate(SPLITS):
            rows: list[dict] = []
            for ki, kind in enumerate(KINDS):
                n = getattr(getattr(cfg, kind), split)
                rng = _rng(cfg.seed, li, si, ki)
                if kind == "benign":
                    rows += _benign_examples(lang, split, n, cfg, almanac, rng)
                else:
                    rows += _request_examples(lang, split, kind, n, cfg.local_frac, rng)
            rows += _jailbreak_examples(lang, split, cfg.jailbreaks, cfg.local_frac, _rng(cfg.seed, li, si, len(KINDS)))
            counters: dict[str, int] = {}
            for row in rows:
                i = counters[row["kind"]] = counters.get(row["kind"], -1) + 1
                examples.append(
                    Example(id=f"{code}-{split}-{row['kind']}-{i:04d}", language=code, split=split, **row)
                )
    return World(cfg, almanac, examples)


# --------------------------------------------------------------------------- JSONL


_FIELDS = [f.name for f in fields(Example)]
_REQUIRED = ("id", "language", "split", "kind", "prompt")


def write_jsonl(examples: Iterable[Example], path: str | Path) -> Path:
    """Write examples as JSONL (UTF-8, one object per line, keys in schema order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")
    return path


def example_from_dict(row: dict, where: str) -> Example:
    """Validate one JSONL object against the schema; ``UserError`` names the line and field."""
    if not isinstance(row, dict):
        raise UserError("expected a JSON object", where=where)
    unknown = [k for k in row if k not in _FIELDS]
    if unknown:
        raise UserError(f"unknown field; expected: {', '.join(_FIELDS)}", where=where, field=unknown[0])
    for k in _REQUIRED:
        if not isinstance(row.get(k), str) or not row[k]:
            raise UserError("required text field is missing or empty", where=where, field=k)
    if row["kind"] not in KINDS:
        raise UserError(
            f"expected one of {', '.join(KINDS)} (got {row['kind']!r})", where=where, field="kind"
        )
    if row["split"] not in SPLITS:
        raise UserError(
            f"expected one of {', '.join(SPLITS)} (got {row['split']!r})", where=where, field="split"
        )
    if row.get("harm") not in (None, "global", "local"):
        raise UserError(f"expected global, local or null (got {row['harm']!r})", where=where, field="harm")
    data = {k: row.get(k) for k in _FIELDS}
    data["task"] = data["task"] or ""
    data["category"] = data["category"] or ""
    data["template"] = data["template"] or ""
    return Example(**data)


def read_jsonl(path: str | Path) -> list[Example]:
    """Read examples written by :func:`write_jsonl` (or by hand, following the schema)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such file", where=path)
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"invalid JSON: {e.msg}", where=f"{path}:{i}") from None
            out.append(example_from_dict(row, f"{path}:{i}"))
    return out
