"""The registries: recipe kinds, evaluators and CLI commands, and the loading of the domains that fill them.

A domain registers what it offers when its modules are imported: ``poise/<domain>/kinds.py`` registers
kinds (:func:`kind`) and evaluators (:func:`evaluator`), and ``poise/<domain>/commands.py`` registers CLI
commands (:func:`command`). Third parties do the same through the ``poise.recipes`` and
``poise.commands`` entry-point groups (the value is a module that registers when imported). Nothing
here imports a domain until a name from it is asked for, so light commands stay light.

:func:`catalog` lists every kind and evaluator with its summary and metrics. Listing them means
importing every domain (torch, transformers, …), so the listing is cached in a small JSON file keyed by
the fingerprint of the installed code (each module's path, size and modification time, and the
entry points); a changed file or plug-in rebuilds it.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import importlib
import json
import os
import pkgutil
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from poise.errors import UserError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from poise.recipes import Recipe

Axis = Literal["utility", "robustness", "safety", "cost", "train"]
Direction = Literal["max", "min"]
AXES: tuple[str, ...] = ("utility", "robustness", "safety", "cost", "train")

# --------------------------------------------------------------------------- kinds

Rebuilder = Callable[..., tuple[Any, Any]]


@dataclass(frozen=True)
class KindSpec:
    """A registered recipe kind: its config class, its run function and, optionally, its rebuilder.

    ``rebuild(cfg, tensors, device, meta) -> (model, data)`` turns weights shaped like the kind's
    ``model`` artifact back into what its evaluators take, so poise can score weights the kind did not
    train itself (a merge). ``cfg`` is the validated recipe of a finished run of the kind.
    """

    name: str
    config: type[Recipe]
    run: Callable[..., Any]
    summary: str
    rebuild: Rebuilder | None = None
    module: str = ""


_KINDS: dict[str, KindSpec] = {}


def kind(name: str, config: type[Recipe], *, rebuild: Rebuilder | None = None
         ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``run(cfg, ctx)`` as recipe kind ``name`` (``domain.method``) with config class ``config``.

    The kind's rebuilder is ``rebuild`` or, by default, the config class's ``rebuilder`` (inherited from
    the domain's recipe base class, so a new method of a domain has one without asking).
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_.-]*", name):
        raise ValueError(f"kind name {name!r} must look like 'domain.method'")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        summary = (fn.__doc__ or config.__doc__ or "").strip().splitlines()
        rebuilder = rebuild or getattr(config, "rebuilder", None)
        _KINDS[name] = KindSpec(name, config, fn, summary[0] if summary else "", rebuilder, fn.__module__)
        return fn

    return register


# --------------------------------------------------------------------------- evaluators


@dataclass(frozen=True)
class MetricSpec:
    """A metric's name (or fnmatch pattern), its axis and whether higher (max) or lower (min) is better."""

    name: str
    axis: Axis
    direction: Direction
    description: str = ""


@dataclass(frozen=True)
class EvaluatorSpec:
    name: str
    fn: Callable[..., dict[str, float]]
    metrics: tuple[MetricSpec, ...]
    params: type[BaseModel]
    summary: str

    def spec_for(self, metric: str) -> MetricSpec:
        for m in self.metrics:
            if fnmatch.fnmatchcase(metric, m.name):
                return m
        raise KeyError(f"evaluator {self.name} produced undeclared metric {metric!r}")


_EVALUATORS: dict[str, EvaluatorSpec] = {}


@functools.cache
def no_params() -> type[BaseModel]:
    """The parameter model of an evaluator that takes no parameters (unknown keys are errors)."""
    from pydantic import BaseModel, ConfigDict

    class NoParams(BaseModel):
        model_config = ConfigDict(extra="forbid")

    return NoParams


def evaluator(
    name: str, *, metrics: list[MetricSpec], params: type[BaseModel] | None = None
) -> Callable[[Callable[..., dict[str, float]]], Callable[..., dict[str, float]]]:
    """Register an evaluator under ``domain.name`` with the metrics it produces."""

    def register(fn: Callable[..., dict[str, float]]) -> Callable[..., dict[str, float]]:
        summary = (fn.__doc__ or "").strip().splitlines()
        _EVALUATORS[name] = EvaluatorSpec(name, fn, tuple(metrics), params or no_params(),
                                          summary[0] if summary else "")
        return fn

    return register


# --------------------------------------------------------------------------- CLI commands


@dataclass(frozen=True)
class CommandSpec:
    """A CLI command a domain adds: a function (one command) or a ``typer.Typer`` (a command group)."""

    name: str
    target: Any
    options: dict[str, Any]


_COMMANDS: dict[str, CommandSpec] = {}


def command(name: str, **options: Any) -> Callable[[Any], Any]:
    """Register a CLI command ``poise NAME`` (``options`` go to ``typer.Typer.command``/``add_typer``).

    Modules that register commands are imported for every ``poise`` invocation, so they import only
    typer at module level and everything heavy inside the command's body.
    """

    def register(target: Any) -> Any:
        _COMMANDS[name] = CommandSpec(name, target, options)
        return target

    return register


def commands() -> dict[str, CommandSpec]:
    """Every command the domains and plug-ins register (imports their light ``commands`` modules)."""
    for domain in builtin_domains("commands"):
        importlib.import_module(f"poise.{domain}.commands")
    for ep in entry_points(group="poise.commands"):
        ep.load()
    return dict(_COMMANDS)


# --------------------------------------------------------------------------- loading domains

_LOADED_DOMAINS: set[str] = set()
_ENTRY_POINTS_LOADED = False


def _package_root() -> Path:
    import poise

    return Path(poise.__path__[0])


def builtin_domains(module: str = "kinds") -> list[str]:
    """Domain packages shipped with poise that have ``poise/<domain>/<module>.py``."""
    root = _package_root()
    return sorted(info.name for info in pkgutil.iter_modules([str(root)])
                  if info.ispkg and (root / info.name / f"{module}.py").exists())


def load_domain(domain: str) -> None:
    """Import ``poise.<domain>.kinds`` once so that its kinds and evaluators register."""
    if domain in _LOADED_DOMAINS or domain not in builtin_domains():
        return
    _LOADED_DOMAINS.add(domain)
    importlib.import_module(f"poise.{domain}.kinds")


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group="poise.recipes"):
        ep.load()


def load_domains(domains: Iterable[str] | None = None) -> None:
    """Import these built-in domains (every one when ``None``; names not among them are passed over) and
    the plug-ins."""
    for domain in builtin_domains() if domains is None else domains:
        load_domain(domain)
    _load_entry_points()


def load_all_kinds() -> dict[str, KindSpec]:
    """Every kind: built-in domains and entry-point plug-ins."""
    load_domains()
    return dict(sorted(_KINDS.items()))


def get_kind(name: str, *, where: str | Path | None = None) -> KindSpec:
    """The registered kind ``name``, importing its domain on demand."""
    if name not in _KINDS:
        load_domain(name.split(".", 1)[0])
    if name not in _KINDS:
        _load_entry_points()
    if name not in _KINDS:  # a kind another domain registers under an old name (an alias)
        load_all_kinds()
    if name not in _KINDS:
        known = ", ".join(load_all_kinds()) or "none registered"
        raise UserError(f"unknown kind {name!r}; expected one of: {known}", where=where, field="kind")
    return _KINDS[name]


def get_rebuilder(kind_name: str, *, where: str | None = None) -> Rebuilder:
    """How to rebuild the model of kind ``kind_name`` from weights (a user error if the kind has none)."""
    spec = get_kind(kind_name, where=where)
    if spec.rebuild is None:
        known = ", ".join(k for k, s in load_all_kinds().items() if s.rebuild is not None) or "none"
        raise UserError(f"kind {kind_name} cannot rebuild its model from weights, so its evaluators cannot "
                        f"score them; expected a run of a kind with a rebuilder ({known})", where=where)
    return spec.rebuild


def get_evaluator(name: str, *, where: str | None = None, field: str | None = None) -> EvaluatorSpec:
    """The registered evaluator ``name``, importing its domain on demand."""
    if name not in _EVALUATORS:
        load_domain(name.split(".", 1)[0])
    if name not in _EVALUATORS:
        load_all_kinds()
    if name not in _EVALUATORS:
        known = ", ".join(sorted(_EVALUATORS)) or "none registered"
        raise UserError(f"unknown evaluator {name!r}; expected one of: {known}", where=where, field=field)
    return _EVALUATORS[name]


def all_evaluators() -> dict[str, EvaluatorSpec]:
    load_all_kinds()
    return dict(sorted(_EVALUATORS.items()))


# --------------------------------------------------------------------------- the cached catalogue


def _fingerprint() -> str:
    """Identity of the installed code: every module's path, size and mtime, plus the entry points."""
    h = hashlib.sha256()
    root = _package_root()
    for path in sorted(root.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns};".encode())
    for group in ("poise.recipes", "poise.commands"):
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            h.update(f"{group}:{ep.name}={ep.value};".encode())
    return h.hexdigest()[:32]


def cache_dir() -> Path:
    """Where poise keeps small caches: ``$POISE_CACHE_DIR``, else ``$XDG_CACHE_HOME/poise`` or ``~/.cache/poise``."""
    if os.environ.get("POISE_CACHE_DIR"):
        return Path(os.environ["POISE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "poise"


def catalog() -> dict[str, Any]:
    """``{"kinds": {name: summary}, "evaluators": {name: {"summary", "metrics"}}}`` without importing
    the domains when the cached copy matches the installed code."""
    path = cache_dir() / f"catalog-{_fingerprint()}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    data = {
        "kinds": {k: {"summary": s.summary, "rebuild": s.rebuild is not None} for k, s in load_all_kinds().items()},
        "evaluators": {k: {"summary": e.summary, "metrics": [asdict(m) for m in e.metrics]}
                       for k, e in all_evaluators().items()},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob("catalog-*.json"):
            old.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:  # a read-only home: list without caching
        pass
    return data
