"""Recipes: TOML files validated by pydantic models, ``--set`` overrides, and the registry of kinds.

A recipe kind is a pydantic config class (a subclass of :class:`Recipe`) plus one function
``run(cfg, ctx)``, registered with :func:`poise.registry.kind` (re-exported here, where kinds find their
config classes). Built-in kinds live in ``poise/<domain>/kinds.py`` and are imported on first use; third
parties add kinds through the ``poise.recipes`` entry-point group (see :mod:`poise.registry`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from poise.errors import UserError, describe
from poise.registry import get_evaluator, get_kind, kind  # noqa: F401 - kinds import `kind` from here too

# --------------------------------------------------------------------------- sections


class Section(BaseModel):
    """Base of every recipe table: unknown keys are errors, assignments are validated, numbers are finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)

    def preflight(self) -> None:
        """Checks of this table that need more than its fields (a data folder exists and holds the files, an
        output path is free), run before a run exists; tables override it and raise UserError."""


ScheduleName = Literal["uba", "cosine", "linear", "step", "wsd", "onecycle", "constant", "rex"]


class ScheduleCfg(Section):
    """Learning-rate schedule over the budget's total steps (see :mod:`poise.schedules`)."""

    name: ScheduleName = "cosine"
    warmup_frac: float = Field(0.0, ge=0.0, lt=1.0, description="share of the budget spent warming up")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="eta_min / eta_max")
    phi: float = Field(2.0, gt=0.0, description="UBA's one parameter; 2 is cosine")
    decay_frac: float = Field(0.2, gt=0.0, le=1.0, description="WSD: share of the budget spent decaying")
    milestones: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default_factory=lambda: [0.5, 0.75], description="step: budget fractions where lr is multiplied by gamma"
    )
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    pct_start: float = Field(0.3, gt=0.0, lt=1.0, description="onecycle: share of the budget rising")
    div_factor: float = Field(25.0, ge=1.0, description="onecycle: eta_max / initial lr")
    final_div_factor: float = Field(1e4, ge=1.0, description="onecycle: initial lr / final lr")

    @model_validator(mode="after")
    def _onecycle_has_own_warmup(self) -> ScheduleCfg:
        if self.name == "onecycle" and self.warmup_frac > 0:
            raise ValueError("onecycle rises over pct_start itself; expected warmup_frac = 0")
        return self


class BudgetCfg(Section):
    """How much training a run may spend: exactly one of steps, epochs, seconds, kwh, co2_g."""

    steps: int | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    seconds: float | None = Field(None, gt=0)
    kwh: float | None = Field(None, gt=0)
    co2_g: float | None = Field(None, gt=0)
    calibration_steps: int = Field(10, gt=0, description="steps measured before a resource budget is turned into steps")

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetCfg:
        given = [k for k in ("steps", "epochs", "seconds", "kwh", "co2_g") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "expected exactly one of steps, epochs, seconds, kwh, co2_g"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def unit(self) -> str:
        return next(k for k in ("steps", "epochs", "seconds", "kwh", "co2_g") if getattr(self, k) is not None)

    @property
    def amount(self) -> float:
        return float(getattr(self, self.unit))


class TrainCfg(Section):
    """Optimiser, learning rate, schedule, budget and checkpointing of a gradient-trained kind."""

    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    batch_size: int = Field(64, gt=0)
    grad_clip: float | None = Field(None, gt=0.0)
    amp: bool = Field(False, description="bf16/fp16 autocast when the device is CUDA")
    schedule: ScheduleCfg = Field(default_factory=ScheduleCfg)
    budget: BudgetCfg = Field(default_factory=lambda: BudgetCfg(epochs=10))
    checkpoint_every: int = Field(200, gt=0, description="steps between checkpoints")


class CostCfg(Section):
    """Where the run's energy comes from: grid country (ISO 3166 alpha-3) and data-centre PUE."""

    country: str = Field(
        default_factory=lambda: os.environ.get("POISE_COUNTRY", "USA"),
        pattern=r"^[A-Z]{3}$",
        description="ISO alpha-3 country code of the grid; default $POISE_COUNTRY or USA",
    )
    pue: float = Field(1.0, ge=1.0)
    track_energy: bool = True

    @field_validator("country")
    @classmethod
    def _known_country(cls, v: str) -> str:
        from poise.carbon import _energy_mix

        if v not in _energy_mix():
            raise ValueError(f"unknown grid country {v!r}; expected an ISO alpha-3 code such as USA, FRA, DEU")
        return v


class ModelCfg(Section):
    """What to train; kinds subclass this with their own fields."""

    name: str = ""


class DataCfg(Section):
    """What to train on; kinds subclass this with their own fields."""

    name: str = ""
    root: Path | None = Field(None, description="local folder of a dataset (never downloaded)")


class EvalEntry(BaseModel):
    """One evaluator by registered name, with its parameters (checked against the evaluator)."""

    model_config = ConfigDict(extra="allow")
    name: str


class Recipe(Section):
    """The fields every recipe has. Kinds subclass it and narrow ``model``, ``data`` and ``train``."""

    kind: str
    name: str | None = None
    description: str = ""
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of everything random in the run")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    model: ModelCfg = Field(default_factory=ModelCfg)
    data: DataCfg = Field(default_factory=DataCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    eval: list[EvalEntry] = Field(default_factory=list)
    eval_split: Literal["val", "test"] = Field(
        "test", description="split the [[eval]] evaluators score unless an entry names its own; tuning runs "
        "(poise sweep, poise study) score val, so the test split is touched once, for the final numbers")
    cost: CostCfg = Field(default_factory=CostCfg)
    store: str | None = Field(None, description="store URL; default .poise/ in the working directory")
    tour: bool = Field(True, description="include in poise tour (false for recipes that need local data or a GPU)")
    quick: dict[str, Any] = Field(default_factory=dict, description="dotted overrides applied by --quick")
    quick_note: str = Field("", max_length=200, description="how the [quick] version differs in kind from the full "
                            "recipe (not only in size), shown in the tour table")

    # how to turn weights shaped like this kind's ``model`` artifact back into what its evaluators take
    # (``fn(cfg, tensors, device, meta) -> (model, data)``); set on a domain's recipe base class so that
    # every kind of the domain inherits it (see :class:`poise.registry.KindSpec`)
    rebuilder: ClassVar[Any] = None

    _source: Path | None = PrivateAttr(default=None)
    _quick: bool = PrivateAttr(default=False)
    _overrides: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> Path | None:
        return self._source

    def command(self) -> str:
        """The ``poise run`` command line that builds this recipe from its file (with ``--quick`` and its
        ``--set`` overrides), so a number reported from it names how to get it again."""
        import shlex

        parts = ["poise", "run", str(self._source) if self._source else "<recipe>"]
        parts += ["--quick"] if self._quick else []
        for k, v in self._overrides.items():
            parts += ["--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}"]
        return " ".join(shlex.quote(x) if i > 1 else x for i, x in enumerate(parts))

    def preflight(self) -> None:
        """Checks that need more than the fields (files, folders, other recipes), run before the run exists so
        that a mistake leaves no failed run behind: every table's own :meth:`Section.preflight` (the data
        section checks its folder, …); kinds may add their own and raise UserError."""
        where = str(self.source or "recipe")
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, Section):
                try:
                    value.preflight()
                except UserError as e:
                    raise UserError(e.message, where=e.where or where, field=e.field or name) from None

    @property
    def is_quick(self) -> bool:
        return self._quick

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        return self._source.stem if self._source else self.kind

    def resolved(self) -> dict[str, Any]:
        """The full resolved config as JSON-able data (what the store records)."""
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        """Identity of what the run trains: two recipes with the same hash produce the same artifact.

        Fields that don't change the trained weights (name, description, store, eval list and split, device,
        quick table, how costs are accounted — e.g. the grid's country) are left out, so a teacher trained
        once is found again by any recipe that needs it.
        """
        data = self.model_dump(mode="json", exclude={"name", "description", "store", "eval", "eval_split", "device",
                                                     "quick", "quick_note", "tour", "cost"})
        from poise import __version__

        data["_poise"] = __version__.split("+")[0]
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


# --------------------------------------------------------------------------- loading and overrides


def shipped_recipes_root() -> Path:
    """Folder of the recipes that ship with poise (inside the wheel, or the source checkout's ``recipes/``)."""
    here = Path(__file__).resolve().parent
    packaged = here / "_recipes"
    return packaged if packaged.is_dir() else here.parents[1] / "recipes"


def shipped_recipes() -> list[Path]:
    root = shipped_recipes_root()
    return sorted(root.rglob("*.toml")) if root.is_dir() else []


def resolve_recipe_path(ref: str | Path, relative_to: Path | None = None) -> Path:
    """Find a recipe file: as given, next to the referring recipe, or among the shipped recipes."""
    ref = Path(ref)
    candidates = [ref]
    if relative_to is not None and not ref.is_absolute():
        candidates.append(relative_to.parent / ref)
    if not ref.is_absolute():
        candidates.append(shipped_recipes_root() / ref)
    for c in candidates:
        if c.is_file():
            return c
    raise UserError(f"no recipe file {str(ref)!r} (looked in: {', '.join(str(c.parent) for c in candidates)})")


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _first_error(err: ValidationError, prefix: str = "") -> tuple[str, str]:
    e = err.errors(include_url=False)[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    field = _loc(loc)
    if prefix:
        field = f"{prefix}.{field}" if field else prefix
    etype, msg = e["type"], e["msg"]
    if etype == "extra_forbidden":
        msg = "unknown field"
    elif etype == "missing":
        msg = "required field is missing"
    elif etype == "value_error":
        msg = msg.removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    if etype not in ("missing",) and "input" in e and not isinstance(e["input"], dict):
        msg += f" (got {describe(e['input'])})"
    return field, msg


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated so we can see the field's real type."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation


def _is_texty(annotation: Any) -> bool:
    ann = _unwrap(annotation)
    if ann in (str, Path):
        return True
    if typing.get_origin(ann) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(ann))
    return False


def _field_at(model: type[BaseModel], path: list[str], where: str) -> Any:
    """Walk a dotted path through the recipe class; raise UserError on the first unknown segment."""
    current: Any = model
    for i, seg in enumerate(path):
        ann = _unwrap(current)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if ann.model_config.get("extra") == "allow" and seg not in ann.model_fields:
                return Any
            if seg not in ann.model_fields:
                known = ", ".join(ann.model_fields)
                raise UserError(
                    f"unknown field {seg!r}; expected one of: {known}", where=where, field=".".join(path[: i + 1])
                )
            current = ann.model_fields[seg].annotation
        elif typing.get_origin(ann) is list:
            if not seg.isdigit():
                raise UserError("expected a list index", where=where, field=".".join(path[: i + 1]))
            current = typing.get_args(ann)[0] if typing.get_args(ann) else Any
        else:  # dict / Any: free-form below this point
            return Any
    return current


def parse_value(text: str, annotation: Any = Any) -> Any:
    """Parse an override value as TOML (numbers, booleans, arrays, tables); text fields keep their text."""
    if _is_texty(annotation):
        stripped = text.strip()
        if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
            return stripped[1:-1]
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_path(data: dict[str, Any], path: list[str], value: Any, where: str) -> None:
    node: Any = data
    for i, seg in enumerate(path[:-1]):
        if isinstance(node, list):
            idx = int(seg)
            if idx >= len(node):
                raise UserError(f"index {idx} out of range (list has {len(node)})", where=where,
                                field=".".join(path[: i + 1]))
            node = node[idx]
            continue
        nxt = node.get(seg)
        if nxt is None:
            nxt = node[seg] = {}
        elif not isinstance(nxt, dict | list):
            raise UserError("expected a table here", where=where, field=".".join(path[: i + 1]))
        node = nxt
    last = path[-1]
    if isinstance(node, list):
        idx = int(last)
        if idx >= len(node):
            raise UserError(f"index {idx} out of range (list has {len(node)})", where=where, field=".".join(path))
        node[idx] = value
    else:
        node[last] = value


def apply_overrides(data: dict[str, Any], config: type[Recipe], overrides: dict[str, Any], where: str) -> None:
    """Apply dotted-key overrides (``train.lr``) to raw recipe data, checking each key exists."""
    for key, value in overrides.items():
        path = [p for p in re.split(r"\.|\[(\d+)\]", key) if p]
        if not path:
            raise UserError("empty key", where=where)
        annotation = _field_at(config, path, where)
        if isinstance(value, str):
            value = parse_value(value, annotation)
        _set_path(data, path, copy.deepcopy(value), where)  # later overrides must not edit the caller's value


def parse_set_options(items: list[str]) -> dict[str, str]:
    """``["train.lr=3e-4", ...]`` → ``{"train.lr": "3e-4"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"expected KEY=VALUE (got {describe(item)})", where="--set")
        out[key.strip()] = value
    return out


def read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UserError("no such file", where=path)
    if path.is_dir():
        raise UserError("expected a recipe file, got a folder", where=path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError("expected UTF-8 TOML text", where=path) from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"invalid TOML: {e}", where=path) from None


def build_recipe(
    data: dict[str, Any],
    *,
    where: str | Path = "<recipe>",
    overrides: dict[str, Any] | None = None,
    quick: bool = False,
    source: Path | None = None,
) -> Recipe:
    """Validate raw recipe data (plus quick and ``--set`` overrides) into its kind's config class."""
    where = str(where)
    data = json.loads(json.dumps(data, default=str))  # private deep copy
    kind_name = (overrides or {}).get("kind", data.get("kind"))
    if kind_name is None:
        raise UserError("required field is missing; expected a registered kind such as 'vision.erm'",
                        where=where, field="kind")
    if not isinstance(kind_name, str):
        raise UserError(f"expected a string (got {describe(kind_name)})", where=where, field="kind")
    spec = get_kind(kind_name, where=where)
    config = spec.config
    quick_table = data.get("quick", {})
    if not isinstance(quick_table, dict):
        raise UserError("expected a table of dotted overrides", where=where, field="quick")
    if quick:
        apply_overrides(data, config, quick_table, f"{where} [quick]")
    if overrides:
        apply_overrides(data, config, overrides, "--set")
    check_numbers(data, where)
    try:
        recipe = config.model_validate(data)
    except ValidationError as err:
        field, msg = _first_error(err)
        raise UserError(msg, where=where, field=field) from None
    validate_eval_entries(recipe, where)
    recipe._source = source
    recipe._quick = quick
    recipe._overrides = dict(overrides or {})
    return recipe


LARGEST_INT = 2**53  # beyond it a number is not exact in JSON, and no count, size or step of poise gets there
LARGEST_FLOAT = 1e15  # no rate, weight, budget or size of a recipe is larger; float32 overflows near 3e38


def check_numbers(data: Any, where: str, path: str = "") -> None:
    """Every number in a recipe (and its overrides) is finite and of a sane size: NaN and infinities
    (which TOML and ``--set`` accept), floats beyond 1e15, integers beyond 2**53 and seeds outside
    [0, 2**32) are refused with the field that holds them."""
    if isinstance(data, dict):
        for k, v in data.items():
            check_numbers(v, where, f"{path}.{k}" if path else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            check_numbers(v, where, f"{path}[{i}]")
    elif isinstance(data, float) and not math.isfinite(data):
        raise UserError(f"expected a finite number (got {data})", where=where, field=path or None)
    elif isinstance(data, float) and abs(data) > LARGEST_FLOAT:
        raise UserError(f"expected a number of magnitude at most 1e15 (got {data:g})", where=where, field=path or None)
    elif isinstance(data, int) and not isinstance(data, bool) and abs(data) >= LARGEST_INT:
        raise UserError(f"expected a number of magnitude below 2**53 (got {describe(data)})", where=where,
                        field=path or None)
    elif isinstance(data, int) and not isinstance(data, bool) and "seed" in path.rsplit(".", 1)[-1].lower() \
            and not 0 <= data < 2**32:  # every random generator poise feeds takes these
        raise UserError(f"expected a seed in [0, 2**32) (got {data})", where=where, field=path or None)


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None, *, quick: bool = False) -> Recipe:
    """Read, override and validate a recipe file."""
    path = Path(path)
    return build_recipe(read_toml(path), where=path, overrides=overrides, quick=quick, source=path)


def validate_eval_entries(recipe: Recipe, where: str) -> None:
    """Check every ``[[eval]]`` entry names a registered evaluator with valid parameters."""
    for i, entry in enumerate(recipe.eval):
        spec = get_evaluator(entry.name, where=where, field=f"eval[{i}].name")
        try:
            spec.params.model_validate(entry.model_extra or {})
        except ValidationError as err:
            field, msg = _first_error(err, prefix=f"eval[{i}]")
            raise UserError(msg, where=where, field=field) from None
