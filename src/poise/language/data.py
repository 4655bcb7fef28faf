"""Prompt sets for training and evaluation: the generated world, or a local file with a column mapping.

``LangDataCfg`` is the ``[data]`` table of every language recipe. Without ``file`` the data is the safety
world (``world`` sub-table). With ``file`` (JSONL, CSV or parquet, never downloaded) the evaluation prompts
come from that file through ``columns`` (which column holds the prompt, language, category, global/local
harm, label and answer); labels map to ``harmful`` / ``benign`` / ``borderline`` through ``label_values``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from poise.errors import UserError
from poise.language.world import Example, World, WorldCfg, build_world, read_jsonl
from poise.recipes import DataCfg, Section


class ColumnMap(Section):
    """Column names in a user's prompt file (``None``: the column is absent)."""

    prompt: str = "prompt"
    language: str | None = "language"
    category: str | None = "category"
    harm: str | None = Field("harm", description="column holding global / local")
    label: str | None = Field("label", description="column holding the kind (harmful / benign / borderline)")
    answer: str | None = None


class LangDataCfg(DataCfg):
    """The world to generate, or a local prompt file to evaluate on (``file`` + ``columns``)."""

    name: str = "world"
    world: WorldCfg = Field(default_factory=WorldCfg)
    file: Path | None = Field(None, description="local JSONL/CSV/parquet prompt set (evaluation)")
    columns: ColumnMap = Field(default_factory=ColumnMap)
    label_values: dict[str, str] = Field(
        default_factory=lambda: {
            "harmful": "harmful",
            "unsafe": "harmful",
            "1": "harmful",
            "benign": "benign",
            "safe": "benign",
            "0": "benign",
            "borderline": "borderline",
        },
        description="label value -> harmful | benign | borderline",
    )
    default_label: str = Field(
        "harmful",
        pattern="^(harmful|benign|borderline)$",
        description="kind of every row when there is no label column",
    )

    def preflight(self) -> None:
        """A prompt file exists, parses and maps its columns before a run starts."""
        if self.file is not None:
            load_prompt_file(self)


@dataclass
class LangData:
    """What evaluators see: evaluation examples, and the world when the data is generated."""

    examples: list[Example]
    world: World | None = None

    def split(self, name: str) -> list[Example]:
        return [e for e in self.examples if e.split == name]


def read_rows(path: Path, field: str = "data.file") -> list[dict[str, Any]]:
    """The rows of a local JSONL / CSV / TSV / parquet file as dicts; anything unreadable (not UTF-8, not
    JSON, a row that is not an object) is one ``UserError`` naming the file, the line and ``field``."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            import json

            rows = []
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(f"invalid JSON: {e.msg}", where=f"{path}:{i}", field=field) from None
                    if not isinstance(row, dict):
                        raise UserError(f"expected a JSON object per line (got {type(row).__name__})",
                                        where=f"{path}:{i}", field=field)
                    rows.append(row)
            return rows
        if suffix in (".csv", ".tsv"):
            csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))  # long contexts (HarmBench) fit in a cell
            with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a leading byte-order mark is not a column
                return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except UnicodeDecodeError:
        raise UserError("expected UTF-8 text", where=path, field=field) from None
    except OSError as e:
        raise UserError(f"cannot read prompt file: {e.strerror or e}", where=path, field=field) from None
    except (ValueError, csv.Error) as e:  # pyarrow's errors are ValueErrors
        raise UserError(f"cannot read prompt file: {e}", where=path, field=field) from None
    raise UserError(
        f"unsupported prompt file type {suffix!r}; expected .jsonl, .csv, .tsv or .parquet",
        where=path,
        field=field,
    )


def load_prompt_file(cfg: LangDataCfg, split: str = "test") -> list[Example]:
    """A user prompt set as examples (all rows in ``split``); a missing mapped column is ``UserError``."""
    path = Path(cfg.file).expanduser() if cfg.file else None
    if path is None or not path.is_file():
        raise UserError(f"no such prompt file {str(path)!r}", field="data.file")
    rows = read_rows(path)
    if not rows:
        raise UserError("prompt file holds no rows", where=path, field="data.file")
    cols = cfg.columns
    header = set(rows[0])
    for fname, col in cols.model_dump().items():
        if col is not None and col not in header:
            raise UserError(
                f"mapped column {col!r} is not in the file (columns: {', '.join(sorted(map(str, header)))})",
                where=path,
                field=f"data.columns.{fname}",
            )
    out = []
    for i, row in enumerate(rows):

        def get(col: str | None, row: dict = row) -> str | None:
            v = row.get(col) if col else None
            return None if v is None or str(v) == "" else str(v)

        prompt = get(cols.prompt)
        if prompt is None:
            raise UserError("empty prompt", where=f"{path}: row {i + 1}", field="data.columns.prompt")
        label = get(cols.label)
        kind = cfg.label_values.get(label.casefold() if label else "", None) if label else cfg.default_label
        if kind not in ("harmful", "benign", "borderline"):
            raise UserError(
                f"label {label!r} is not in data.label_values",
                where=f"{path}: row {i + 1}",
                field="data.label_values",
            )
        harm = get(cols.harm)
        harm = harm.casefold() if harm else None
        if harm not in (None, "global", "local"):
            raise UserError(
                f"harm {harm!r}: expected global or local",
                where=f"{path}: row {i + 1}",
                field="data.columns.harm",
            )
        out.append(
            Example(
                id=f"file-{i:06d}",
                language=get(cols.language) or "und",
                split=split,
                kind=kind,
                task="file",
                category=get(cols.category) or "",
                harm=harm,
                template="file",
                prompt=prompt,
                answer=get(cols.answer),
                safe_response=None,
                unsafe_response=None,
            )
        )
    return out


def load_lang_data(cfg: LangDataCfg) -> LangData:
    """The world (always generated: training needs it) plus, with ``file``, the user's evaluation prompts."""
    world = build_world(cfg.world)
    if cfg.file is None:
        return LangData(world.examples, world)
    if Path(cfg.file).suffix.lower() == ".jsonl":
        try:
            examples = read_jsonl(cfg.file)  # a file in the world's own schema
            return LangData(examples, world)
        except UserError:
            pass
    return LangData(load_prompt_file(cfg), world)
