"""Search spaces of ``poise sweep``: ranges, choices, fixed values and conditions over recipe fields.

A space is a list of :class:`Param`, each naming a dotted recipe field and how to draw it: ``float``
(uniform), ``log`` (log-uniform), ``int``, ``choice``, or ``fixed`` (a value that is set, not searched —
useful under a condition). A condition (``when``) makes a param active only when earlier choice params
drew given values, e.g. TRADES' β only when ``kind`` drew ``vision.trades``; an inactive param is
neither suggested to optuna nor set in the recipe.

On the command line: ``FIELD=SPACE [if FIELD=VALUE [and FIELD=VALUE ...]]`` where SPACE is
``LOW..HIGH``, ``log:LOW..HIGH``, ``int:LOW..HIGH``, ``choice:A,B,...`` or ``fixed:VALUE``. In a file
(``--space FILE``), one ``[[param]]`` table per field::

    [[param]]
    field = "kind"
    choices = ["vision.pgd_at", "vision.trades"]

    [[param]]
    field = "train.beta"
    range = [0.5, 12.0]
    log = true
    when = { kind = "vision.trades" }
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from poise.errors import UserError, describe

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
KINDS = ("float", "log", "int", "choice", "fixed")


@dataclass(frozen=True)
class Param:
    """One field of a space: ``float``/``log``/``int`` ranges, a ``choice`` list or a ``fixed`` value,
    active only when every ``(field, value)`` of ``when`` holds."""

    field: str
    kind: str  # float, log, int, choice, fixed
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()
    value: Any = None
    when: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    @property
    def searched(self) -> bool:
        return self.kind != "fixed"

    def suggest(self, trial: Any) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            return trial.suggest_categorical(self.field, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.field, int(self.low), int(self.high))
        return trial.suggest_float(self.field, self.low, self.high, log=self.kind == "log")

    def ends(self) -> tuple[Any, ...]:
        """The extreme values this param can take (to check a recipe accepts them before any trial)."""
        if self.kind == "fixed":
            return (self.value,)
        if self.kind == "choice":
            return self.choices
        if self.kind == "int":
            return (int(self.low), int(self.high))
        return (self.low, self.high)

    def active(self, drawn: dict[str, Any]) -> bool:
        return all(f in drawn and drawn[f] == v for f, v in self.when)

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "kind": self.kind, "low": self.low, "high": self.high,
                "choices": list(self.choices), "value": self.value, "when": [list(w) for w in self.when]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Param:
        return cls(d["field"], d["kind"], float(d["low"]), float(d["high"]), tuple(d["choices"]), d["value"],
                   tuple((f, v) for f, v in d["when"]))


def suggest_all(trial: Any, params: list[Param]) -> dict[str, Any]:
    """Draw every active param of the space in order (conditions see the values drawn before them)."""
    drawn: dict[str, Any] = {}
    for p in params:
        if p.active(drawn):
            drawn[p.field] = p.suggest(trial)
    return drawn


def _check_range(kind: str, low: float, high: float, where: str, field_: str) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError(f"expected finite numbers (got {low!r}..{high!r})", where=where, field=field_)
    if not low < high:
        raise UserError(f"expected LOW < HIGH (got {low:g}..{high:g})", where=where, field=field_)
    if kind == "log" and low <= 0:
        raise UserError("a log range needs LOW > 0", where=where, field=field_)
    if kind == "int" and (low != math.floor(low) or high != math.floor(high)):
        raise UserError("an int range needs whole numbers", where=where, field=field_)


def _parse_when(text: str, where: str, field_: str) -> tuple[tuple[str, Any], ...]:
    from poise.recipes import parse_value

    out = []
    for cond in re.split(r"\s+and\s+", text.strip()):
        name, sep, value = cond.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UserError(f"expected 'if FIELD=VALUE [and FIELD=VALUE]' (got {describe(text)})", where=where,
                            field=field_)
        out.append((name.strip(), parse_value(value.strip())))
    return tuple(out)


def parse_param(text: str) -> Param:
    """``train.lr=log:1e-4..1e-1``, ``model.width=int:8..64``, ``t=0..1``, ``train.schedule.name=choice:uba,cosine``,
    ``train.beta=0.5..12 if kind=vision.trades``, ``train.attack.start=fixed:gaussian if kind=vision.trades``."""
    from poise.recipes import parse_value

    where = f"--param {text}"
    if "=" not in text:
        raise UserError("expected FIELD=SPACE such as train.lr=log:1e-4..1e-1", where=where)
    field_, space = (s.strip() for s in text.split("=", 1))
    when: tuple[tuple[str, Any], ...] = ()
    m = re.search(r"\s+if\s+", space)
    if m:
        space, cond = space[: m.start()].strip(), space[m.end():]
        when = _parse_when(cond, where, field_)
    kind, _, rest = space.partition(":") if ":" in space else ("float", "", space)
    if kind == "choice":
        choices = tuple(parse_value(c.strip()) for c in rest.split(",") if c.strip())
        if len(choices) < 2:
            raise UserError("a choice needs at least two values, comma-separated", where=where, field=field_)
        return Param(field_, "choice", choices=choices, when=when)
    if kind == "fixed":
        if not rest.strip():
            raise UserError("expected fixed:VALUE", where=where, field=field_)
        return Param(field_, "fixed", value=parse_value(rest.strip()), when=when)
    if kind not in ("float", "log", "int"):
        raise UserError(f"unknown space {kind!r}; expected float, log, int, choice or fixed", where=where,
                        field=field_)
    m = re.fullmatch(rf"({_NUM})\.\.({_NUM})", rest.strip())
    if not m:
        raise UserError(f"expected a range LOW..HIGH such as 1e-4..1e-1 (got {rest!r})", where=where, field=field_)
    low, high = float(m.group(1)), float(m.group(2))
    _check_range(kind, low, high, where, field_)
    return Param(field_, kind, low, high, when=when)


class SpaceEntry(BaseModel):
    """One ``[[param]]`` table of a space file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    field: str = Field(..., min_length=1, description="dotted recipe field, e.g. train.lr")
    range: tuple[float, float] | None = Field(None, description="LOW, HIGH of a float or int range")
    log: bool = Field(False, description="draw the range log-uniformly")
    integer: bool = Field(False, description="draw whole numbers from the range")
    choices: list[Any] | None = Field(None, min_length=2, description="values to choose from")
    value: Any = Field(None, description="a fixed value (set, not searched)")
    when: dict[str, Any] = Field(default_factory=dict, description="active only when these fields drew these values")

    @model_validator(mode="after")
    def _one_space(self) -> SpaceEntry:
        given = [k for k in ("range", "choices", "value") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("expected exactly one of range, choices or value")
        if (self.log or self.integer) and self.range is None:
            raise ValueError("log and integer apply to a range")
        if self.log and self.integer:
            raise ValueError("expected log or integer, not both")
        return self


def load_space_file(path: str | Path) -> list[Param]:
    """Read the ``[[param]]`` tables of a space file into params (checked like ``--param``)."""
    from poise.recipes import _first_error, read_toml

    path = Path(path)
    data = read_toml(path)
    unknown = set(data) - {"param"}
    if unknown:
        raise UserError(f"unknown table(s) {sorted(unknown)}; expected [[param]] tables", where=path)
    entries = data.get("param")
    if not isinstance(entries, list) or not entries:
        raise UserError("expected at least one [[param]] table", where=path, field="param")
    out = []
    for i, raw in enumerate(entries):
        try:
            e = SpaceEntry.model_validate(raw)
        except ValidationError as err:
            f, msg = _first_error(err, prefix=f"param[{i}]")
            raise UserError(msg, where=path, field=f) from None
        fname = f"param[{i}]"
        when = tuple(e.when.items())
        if e.choices is not None:
            out.append(Param(e.field, "choice", choices=tuple(e.choices), when=when))
        elif e.value is not None:
            out.append(Param(e.field, "fixed", value=e.value, when=when))
        else:
            assert e.range is not None
            kind = "log" if e.log else "int" if e.integer else "float"
            _check_range(kind, e.range[0], e.range[1], str(path), f"{fname}.range")
            out.append(Param(e.field, kind, e.range[0], e.range[1], when=when))
    return out


def check_space(params: list[Param], where: str = "--param") -> None:
    """Each field once; conditions name an earlier choice param and one of its values."""
    seen: dict[str, Param] = {}
    for p in params:
        if p.field in seen:
            raise UserError("field appears twice in the space; expected each field once", where=where, field=p.field)
        for f, v in p.when:
            parent = seen.get(f)
            if parent is None or parent.kind != "choice":
                raise UserError(f"the condition names {f!r}, which is not a choice param before it", where=where,
                                field=p.field)
            if v not in parent.choices:
                raise UserError(f"the condition {f}={v!r} is not one of {f}'s choices {list(parent.choices)}",
                                where=where, field=p.field)
        seen[p.field] = p


def conditions(p: Param, params: list[Param]) -> dict[str, Any]:
    """The values of the params ``p`` depends on (transitively) for it to be active."""
    by_field = {q.field: q for q in params}
    out: dict[str, Any] = {}
    stack = list(p.when)
    while stack:
        f, v = stack.pop()
        out.setdefault(f, v)
        stack.extend(by_field[f].when)
    return out


def grid_of(params: list[Param], where: str = "--sampler grid") -> dict[str, list[Any]]:
    """The grid a grid sampler walks: every searched param a choice or an int range, no conditions."""
    grid: dict[str, list[Any]] = {}
    for p in params:
        if p.when:
            raise UserError("the grid sampler cannot search conditional params", where=where, field=p.field)
        if p.kind == "choice":
            grid[p.field] = list(p.choices)
        elif p.kind == "int":
            grid[p.field] = list(range(int(p.low), int(p.high) + 1))
        elif p.kind != "fixed":
            raise UserError("the grid sampler needs choice or int spaces (give float values as choice:0.1,0.2)",
                            where=where, field=p.field)
    return grid
