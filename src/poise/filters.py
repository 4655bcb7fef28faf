"""Run filters shared by ``runs ls``, ``frontier`` and ``report``: ``kind=vision.*`` (glob), ``name!=x``,
``config.train.lr>0.01``. Light (no numpy), so listing runs stays quick to start."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from typing import Any

from poise.errors import UserError

# top-level config fields the store also keeps in a column of their own (poise.store.CONFIG_COLUMNS; a
# listing's run carries them as attributes, None where the field is absent or not a string)
COLUMN_KEYS = ("eval_split",)


def config_paths(filters: Sequence[tuple[str, str, str]]) -> list[str]:
    """The config fields (dotted paths) the filters read."""
    return [key.removeprefix("config.") for key, _, _ in filters if key.startswith("config.")]


def _run_config_value(run: object, dotted: str) -> object:
    """A config field of a run: from its own column when the store keeps one (no config parsed); a
    listing's run whose config text does not mention the field is not parsed either."""
    if dotted in COLUMN_KEYS and (value := getattr(run, dotted, None)) is not None:
        return value
    text = getattr(run, "config_text", None)
    if text is not None and f'"{dotted.rsplit(".", 1)[-1]}"' not in text:
        return None
    return _config_value(run.config, dotted)  # type: ignore[attr-defined]


def _config_value(config: dict, dotted: str) -> object:
    node: object = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


FILTER_FIELDS = ("kind", "name", "status", "id", "quick", "seed", "study")


def parse_filters(filters: Sequence[str]) -> list[tuple[str, str, str]]:
    """``kind=vision.*`` (glob), ``name!=x``, ``config.train.lr>0.01`` → (key, op, value).

    Checked whole before any run is read: a field that is not a run field or ``config.<path>``, a
    predicate without an operator or a field, and an order comparison with a value that is not a number
    are each one ``UserError`` (exit 2)."""
    out = []
    for f in filters:
        for op in ("!=", ">=", "<=", "=", ">", "<"):
            if op in f:
                key, value = (p.strip() for p in f.split(op, 1))
                break
        else:
            raise UserError(f"expected KEY=VALUE, KEY!=VALUE, KEY>VALUE or KEY<VALUE (got {f!r})", where="--filter")
        if not key:
            raise UserError(f"expected a field before {op!r} (got {f!r})", where="--filter")
        if key not in FILTER_FIELDS and not (key.startswith("config.") and len(key) > len("config.")):
            raise UserError(f"unknown filter key {key!r}; expected {', '.join(FILTER_FIELDS)} or config.<path>",
                            where="--filter")
        if op in (">", "<", ">=", "<="):
            try:
                float(value)
            except ValueError:
                raise UserError(f"expected a number after {op!r} (got {f!r})", where="--filter") from None
        out.append((key, op, value))
    return out


def needs_config(filters: Sequence[tuple[str, str, str]]) -> bool:
    return any(key.startswith("config.") for key, _, _ in filters)


def match_run(run: Any, filters: list[tuple[str, str, str]]) -> bool:
    """Whether a run (a :class:`RunRecord` or a listing's :class:`RunSummary`) passes every filter."""
    for key, op, value in filters:
        if key in FILTER_FIELDS:
            actual: object = getattr(run, key)
        elif key.startswith("config."):
            actual = _run_config_value(run, key.removeprefix("config."))
        else:
            raise UserError(f"unknown filter key {key!r}; expected {', '.join(FILTER_FIELDS)} or config.<path>",
                            where="--filter")
        text = json.dumps(actual) if not isinstance(actual, str) else actual
        if op in ("=", "!="):
            hit = fnmatch.fnmatchcase(text.lower(), value.lower())
            if (op == "=") != hit:
                return False
        else:
            try:
                a, b = float(actual), float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return False
            if not {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]:
                return False
    return True
