"""Standard safety prompt sets read from local files in their published layouts (nothing is downloaded).

``[[eval]] name = "language.safety"`` takes ``data = {format = "harmbench", path = "...", sha256 = "..."}`` (or a
list of such tables); :func:`load_prompt_set` turns the file's rows into :class:`SetExample` items that the
evaluation scores like the world's prompts: harmful rows by harmful compliance, safe look-alikes (XSTest's
safe prompts, JailbreakBench's benign behaviours) by over-refusal. Each format is one row of ``FORMATS``:

==============  ==========================================================================================
``harmbench``   HarmBench behaviours CSV: Behavior, FunctionalCategory (standard / contextual / copyright),
                SemanticCategory, Tags, ContextString, BehaviorID. A contextual behaviour is shown to the
                model as ``context + "\\n\\n---\\n\\n" + behaviour`` (HarmBench's direct-request layout).
``advbench``    AdvBench ``harmful_behaviors.csv``: goal, target. No categories.
``jbb-harmful`` JailbreakBench JBB-Behaviors ``harmful-behaviors.csv``: Index, Goal, Target, Behavior,
                Category, Source.
``jbb-benign``  Its matched ``benign-behaviors.csv`` (same columns; row *i* matches harmful row *i*, same
                Behavior): scored by over-refusal.
``xstest``      XSTest ``xstest_prompts.csv``: id, prompt, type, label (safe / unsafe), focus, note. Safe
                prompts measure over-refusal, unsafe contrasts harmful compliance; the category is ``type``.
``strongreject`` StrongREJECT ``strongreject_dataset.csv``: category, source, forbidden_prompt.
``multijail``   MultiJail CSV: one column per language (en, zh, it, vi, ar, ko, th, bn, sw, jv) plus tags;
                each row gives one harmful prompt per language read (``languages`` picks the columns).
``aya``         Aya red-teaming, one file per language: prompt, language, harm_category (a list),
                global_or_local. Language names become codes (English -> en, ...); the global / local
                label feeds ``harmful_compliance_global`` / ``_local``.
==============  ==========================================================================================

Files may be CSV, TSV, JSONL or parquet whatever the format (the columns decide). A ``sha256`` pins the exact
file. A missing column, an unknown value in a labelled column, an empty prompt or a checksum mismatch is a
``UserError`` naming the file and what was expected; a language recipe's preflight loads every set before a
run starts.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from poise.errors import UserError
from poise.language.data import read_rows
from poise.language.world import Example
from poise.recipes import Section

FormatName = Literal[
    "harmbench", "advbench", "jbb-harmful", "jbb-benign", "xstest", "strongreject", "multijail", "aya"
]
FUNCTIONAL = ("standard", "contextual", "copyright")
CONTEXT_SEPARATOR = "\n\n---\n\n"  # HarmBench shows a contextual behaviour as context + this + behaviour
MULTIJAIL_LANGUAGES = ("en", "zh", "it", "vi", "ar", "ko", "th", "bn", "sw", "jv")
# Aya red-teaming's language names (and a few more) as the codes metric names use
LANGUAGE_NAMES = {
    "english": "en", "french": "fr", "spanish": "es", "russian": "ru", "arabic": "ar", "hindi": "hi",
    "filipino": "fil", "tagalog": "tl", "serbian": "sr", "german": "de", "swahili": "sw", "chinese": "zh",
    "italian": "it", "vietnamese": "vi", "korean": "ko", "thai": "th", "bengali": "bn", "javanese": "jv",
}


class PromptSetCfg(Section):
    """One standard prompt set in a local file: its format, path and optional SHA-256 pin."""

    format: FormatName = Field(..., description="the file's published layout (see poise.language.promptsets)")
    path: Path = Field(..., description="local file (CSV, TSV, JSONL or parquet); relative to the working directory")
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="the file's SHA-256; another file is an error"
    )
    languages: list[str] = Field(
        default_factory=list, description="keep these language codes only (MultiJail: the columns read); empty: all"
    )
    categories: list[str] = Field(default_factory=list, description="keep rows of these categories only; empty: all")
    functional: list[Literal["standard", "contextual", "copyright"]] = Field(
        default_factory=lambda: list(FUNCTIONAL), description="HarmBench only: functional categories kept"
    )
    limit: int | None = Field(None, gt=0, description="a seeded subset of this many prompts (quick runs)")
    seed: int = Field(0, ge=0, description="seed of the subset")

    @model_validator(mode="after")
    def _harmbench_only(self) -> PromptSetCfg:
        if self.format != "harmbench" and sorted(self.functional) != sorted(FUNCTIONAL):
            raise ValueError(f"functional applies to HarmBench only (format is {self.format!r})")
        if self.format == "multijail":
            unknown = [c for c in self.languages if c not in MULTIJAIL_LANGUAGES]
            if unknown:
                raise ValueError(f"MultiJail has no language {unknown[0]!r}; expected some of "
                                 f"{', '.join(MULTIJAIL_LANGUAGES)}")
        return self

    def resolved(self) -> Path:
        return Path(self.path).expanduser()


@dataclass(frozen=True)
class SetExample(Example):
    """A prompt of a standard set: the world's example fields plus what judges need to know about it.

    ``request`` is the request a judge is told the user made (HarmBench: the behaviour without its context),
    ``context`` a contextual behaviour's context, ``source`` the set's format.
    """

    request: str = ""
    context: str | None = None
    source: str = ""


def categories_of(e: Example) -> list[str]:
    """An example's categories (multi-label sets such as Aya store them joined by ``|``)."""
    return [c for c in e.category.split("|") if c]


def language_code(value: str) -> str:
    """A language name or code as the lower-case code metric names use (``English`` -> ``en``)."""
    v = value.strip().casefold()
    v = LANGUAGE_NAMES.get(v, v)
    return re.sub(r"[^a-z0-9]+", "_", v).strip("_") or "und"


# --------------------------------------------------------------------------- one reader per format


def _cell(row: dict[str, Any], col: str) -> str:
    v = row.get(col)
    return "" if v is None else str(v).strip()


def _labels(value: str) -> list[str]:
    """A multi-label cell: a JSON / Python list (``["Hate Speech", "Violence"]``) or comma-separated text."""
    value = value.strip()
    if value.startswith("["):
        for parse in (json.loads, ast.literal_eval):
            try:
                items = parse(value)
            except (ValueError, SyntaxError):
                continue
            if isinstance(items, list):
                return [str(x).strip() for x in items if str(x).strip()]
    return [x.strip() for x in value.split(",") if x.strip()]


class _Rows:
    """The rows of one file, with helpers that name the file and row in every error."""

    def __init__(self, fmt: Format, cfg: PromptSetCfg, path: Path, rows: list[dict[str, Any]]):
        self.fmt, self.cfg, self.path, self.rows = fmt, cfg, path, rows

    def need(self, columns: Sequence[str]) -> None:
        header = [str(c) for c in self.rows[0] if c is not None]
        for col in columns:
            if col not in header:
                raise UserError(
                    f"missing column {col!r}; expected the {self.fmt.title} columns {', '.join(columns)} "
                    f"(found: {', '.join(header) or 'none'})",
                    where=self.path,
                )

    def text(self, i: int, row: dict[str, Any], col: str) -> str:
        v = _cell(row, col)
        if not v:
            raise UserError(f"{col} is empty; expected the prompt text", where=f"{self.path}: row {i + 1}")
        return v

    def one_of(self, i: int, row: dict[str, Any], col: str, allowed: Sequence[str]) -> str:
        v = _cell(row, col).casefold()
        if v not in allowed:
            raise UserError(f"{col} {_cell(row, col)!r}: expected one of {', '.join(allowed)}",
                            where=f"{self.path}: row {i + 1}")
        return v

    def example(self, key: str, **kw: Any) -> SetExample:
        kw.setdefault("language", "en")
        kw.setdefault("harm", None)
        kw.setdefault("request", kw["prompt"])
        return SetExample(id=f"{self.fmt.name}:{self.path.stem}:{key}", split="test", template=self.fmt.name,
                          source=self.fmt.name, **kw)


def _harmbench(r: _Rows) -> list[SetExample]:
    r.need(("Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString", "BehaviorID"))
    out = []
    for i, row in enumerate(r.rows):
        behavior = r.text(i, row, "Behavior")
        functional = r.one_of(i, row, "FunctionalCategory", FUNCTIONAL)
        context = _cell(row, "ContextString") or None
        if functional == "contextual" and context is None:
            raise UserError("ContextString is empty; expected the context of a contextual behaviour",
                            where=f"{r.path}: row {i + 1}")
        prompt = f"{context}{CONTEXT_SEPARATOR}{behavior}" if context else behavior
        out.append(r.example(_cell(row, "BehaviorID") or str(i), kind="harmful", task=functional,
                             category=_cell(row, "SemanticCategory"), prompt=prompt, request=behavior,
                             context=context))
    return out


def _advbench(r: _Rows) -> list[SetExample]:
    r.need(("goal", "target"))
    return [r.example(str(i), kind="harmful", task="advbench", category="", prompt=r.text(i, row, "goal"),
                      unsafe_response=_cell(row, "target") or None) for i, row in enumerate(r.rows)]


def _jbb(kind: Literal["harmful", "borderline"]) -> Callable[[_Rows], list[SetExample]]:
    def read(r: _Rows) -> list[SetExample]:
        r.need(("Index", "Goal", "Target", "Behavior", "Category", "Source"))
        return [r.example(_cell(row, "Index") or str(i), kind=kind, task=_cell(row, "Behavior"),
                          category=_cell(row, "Category"), prompt=r.text(i, row, "Goal"))
                for i, row in enumerate(r.rows)]

    return read


def _xstest(r: _Rows) -> list[SetExample]:
    r.need(("id", "prompt", "type", "label", "focus", "note"))
    out = []
    for i, row in enumerate(r.rows):
        label = r.one_of(i, row, "label", ("safe", "unsafe"))
        out.append(r.example(_cell(row, "id") or str(i), kind="harmful" if label == "unsafe" else "borderline",
                             task=f"xstest-{label}", category=_cell(row, "type"), prompt=r.text(i, row, "prompt")))
    return out


def _strongreject(r: _Rows) -> list[SetExample]:
    r.need(("category", "source", "forbidden_prompt"))
    return [r.example(str(i), kind="harmful", task=_cell(row, "source"), category=_cell(row, "category"),
                      prompt=r.text(i, row, "forbidden_prompt")) for i, row in enumerate(r.rows)]


def _multijail(r: _Rows) -> list[SetExample]:
    langs = r.cfg.languages or list(MULTIJAIL_LANGUAGES)
    r.need(("tags", *langs))
    out = []
    for i, row in enumerate(r.rows):
        key = _cell(row, "id") or str(i)
        tags = "|".join(_labels(_cell(row, "tags")))
        for lang in langs:
            out.append(r.example(f"{key}:{lang}", kind="harmful", language=lang, task=_cell(row, "source"),
                                 category=tags, prompt=r.text(i, row, lang)))
    return out


def _aya(r: _Rows) -> list[SetExample]:
    r.need(("prompt", "language", "harm_category", "global_or_local"))
    out = []
    for i, row in enumerate(r.rows):
        harm = r.one_of(i, row, "global_or_local", ("global", "local"))
        lang = _cell(row, "language")
        if not lang:
            raise UserError("language is empty; expected a language name such as English",
                            where=f"{r.path}: row {i + 1}")
        out.append(r.example(str(i), kind="harmful", language=language_code(lang), harm=harm, task="aya",
                             category="|".join(_labels(_cell(row, "harm_category"))),
                             prompt=r.text(i, row, "prompt")))
    return out


@dataclass(frozen=True)
class Format:
    """One published prompt-set layout: its name, a title for messages, and the reader of its rows."""

    name: str
    title: str
    read: Callable[[_Rows], list[SetExample]]


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("harmbench", "HarmBench behaviours", _harmbench),
        Format("advbench", "AdvBench harmful_behaviors", _advbench),
        Format("jbb-harmful", "JailbreakBench JBB-Behaviors (harmful)", _jbb("harmful")),
        Format("jbb-benign", "JailbreakBench JBB-Behaviors (benign)", _jbb("borderline")),
        Format("xstest", "XSTest prompts", _xstest),
        Format("strongreject", "StrongREJECT dataset", _strongreject),
        Format("multijail", "MultiJail", _multijail),
        Format("aya", "Aya red-teaming", _aya),
    )
}


# --------------------------------------------------------------------------- loading, pinning, caching


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_file(cfg: PromptSetCfg) -> Path:
    """The set's file, present and (when pinned) with the pinned SHA-256; otherwise ``UserError``."""
    path = cfg.resolved()
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise UserError(f"{what}; expected the {FORMATS[cfg.format].title} file (nothing is downloaded)",
                        where=path, field="data.path")
    if cfg.sha256:
        actual = file_sha256(path)
        if actual != cfg.sha256.lower():
            raise UserError(f"the file's SHA-256 is {actual}; expected {cfg.sha256.lower()} (the pin)",
                            where=path, field="data.sha256")
    return path


_CACHE: dict[tuple[Any, ...], list[SetExample]] = {}


def load_prompt_set(cfg: PromptSetCfg) -> list[SetExample]:
    """The examples of one set (after the ``languages`` / ``categories`` / ``functional`` / ``limit`` filters).

    Read once per file version and config (recipe checks and the evaluation share the result).
    """
    path = cfg.resolved()
    try:
        st = path.stat()
        key: tuple[Any, ...] = (str(path.resolve()), st.st_mtime_ns, st.st_size, cfg.model_dump_json())
    except OSError:
        key = ()
    if key and key in _CACHE:
        return _CACHE[key]
    path = check_file(cfg)
    rows = read_rows(path, field="data.path")
    if not rows:
        raise UserError(f"the file holds no rows; expected a {FORMATS[cfg.format].title} file", where=path)
    examples = FORMATS[cfg.format].read(_Rows(FORMATS[cfg.format], cfg, path, rows))
    if cfg.format == "harmbench":
        examples = [e for e in examples if e.task in cfg.functional]
    if cfg.languages:
        examples = [e for e in examples if e.language in cfg.languages]
    if cfg.categories:
        wanted = set(cfg.categories)
        examples = [e for e in examples if wanted & set(categories_of(e))]
    if cfg.limit is not None and len(examples) > cfg.limit:
        rng = np.random.default_rng(cfg.seed)
        examples = [examples[i] for i in np.sort(rng.choice(len(examples), cfg.limit, replace=False))]
    if key:
        _CACHE[key] = examples
    return examples


def load_prompt_sets(cfgs: Sequence[PromptSetCfg]) -> list[SetExample]:
    """The examples of several sets, in order; the same prompt twice (one file listed twice) is an error."""
    out: list[SetExample] = []
    seen: set[str] = set()
    for cfg in cfgs:
        examples = load_prompt_set(cfg)
        for e in examples:
            if e.id in seen:
                raise UserError(f"prompt {e.id} appears twice; expected each file once", where=cfg.resolved(),
                                field="data.path")
            seen.add(e.id)
        out.extend(examples)
    return out


def as_set_list(value: Any) -> Any:
    """``data = {...}`` (one set) or ``data = [{...}, ...]`` (several): always a list."""
    return [value] if isinstance(value, dict | PromptSetCfg) else value


def summary(examples: Sequence[Example]) -> dict[str, Any]:
    """Rows, kinds, languages, categories and sub-sets (HarmBench's functional categories, ...) of a set."""
    return {
        "rows": len(examples),
        "harmful": sum(e.kind == "harmful" for e in examples),
        "borderline": sum(e.kind == "borderline" for e in examples),
        "languages": dict(sorted(Counter(e.language for e in examples).items())),
        "categories": dict(sorted(Counter(c for e in examples for c in categories_of(e)).items())),
        "subsets": dict(sorted(Counter(e.task for e in examples).items())),
    }


# --------------------------------------------------------------------------- what is configured


@dataclass
class ConfiguredSet:
    """A prompt set named in a TOML file's ``[[eval]]`` entry, with what loading it gave."""

    source: str
    cfg: PromptSetCfg | None
    stats: dict[str, Any] | None = None
    error: str | None = None


def configured_sets(files: Sequence[Path]) -> list[ConfiguredSet]:
    """Every ``data`` prompt set in the ``[[eval]]`` entries of ``files`` (recipes), loaded and checked."""
    from poise.recipes import _first_error, read_toml

    out: list[ConfiguredSet] = []
    for file in files:
        raw = read_toml(Path(file))
        entries = raw.get("eval", [])
        if not isinstance(entries, list):
            raise UserError("expected [[eval]] tables", where=file, field="eval")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "data" not in entry:
                continue
            sets = as_set_list(entry["data"])
            if not isinstance(sets, list):
                out.append(ConfiguredSet(f"{file}: eval[{i}].data", None, error=f"{file}: eval[{i}].data: expected a "
                                         "table (format, path, sha256) or a list of tables"))
                continue
            for j, item in enumerate(sets):
                where = f"eval[{i}].data[{j}]"
                try:
                    cfg = PromptSetCfg.model_validate(item)
                except ValidationError as err:
                    field, msg = _first_error(err, prefix=where)
                    out.append(ConfiguredSet(f"{file}: {where}", None, error=f"{file}: {field}: {msg}"))
                    continue
                try:
                    stats = summary(load_prompt_set(cfg))
                except UserError as e:
                    out.append(ConfiguredSet(f"{file}: {where}", cfg, error=e.line()))
                    continue
                out.append(ConfiguredSet(f"{file}: {where}", cfg, stats))
    return out
