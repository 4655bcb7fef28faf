"""Report building blocks and the registry of domain sections."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poise.store import RunRecord, Store


@dataclass
class Block:
    """One item of a report section: a plotly figure, a trusted HTML fragment, a PNG, or a table.

    ``html`` must already be escaped by its producer; ``table`` rows are escaped by the report.
    ``png`` is written next to the report as ``<slug>.png`` and shown inline.
    """

    title: str
    figure: Any = None
    html: str | None = None
    png: bytes | None = None
    table: tuple[Sequence[str], Sequence[Sequence[Any]]] | None = None
    note: str = ""
    slug: str = ""


def artifact_json(store: Store, run: RunRecord, name: str) -> Any:
    """A run's JSON artifact ``name`` checked against its SHA-256, or None when the run has none. A corrupt
    one raises :class:`poise.errors.CorruptArtifact`, which the report shows as a note in the section."""
    if not any(a.name == name for a in store.artifacts(run.id)):
        return None
    return store.read_json(run.id, name)


SectionFn = Callable[["Store", "list[RunRecord]"], "list[Block]"]
_SECTIONS: dict[str, tuple[str, SectionFn]] = {}
_PER_RUN: set[str] = set()
_FOCUS: set[str] | None = None  # the runs that get per-run figures (None: every run)


def report_section(name: str, title: str, *, per_run: bool = False) -> Callable[[SectionFn], SectionFn]:
    """Register ``fn(store, runs) -> list[Block]`` as a report section (return [] to skip).

    A ``per_run`` section draws figures run by run: it is given only the runs in focus (see
    :func:`focus`), so a report of thousands of runs stays small; other sections get every run of the
    report's scope and should keep their figures aggregate (or call :func:`focus` themselves)."""

    def register(fn: SectionFn) -> SectionFn:
        _SECTIONS[name] = (title, fn)
        if per_run:
            _PER_RUN.add(name)
        else:
            _PER_RUN.discard(name)
        return fn

    return register


def is_per_run(name: str) -> bool:
    return name in _PER_RUN


def focus(runs: Sequence[Any]) -> list[Any]:
    """The runs of ``runs`` that get per-run figures: those on a frontier's front, those selected with
    ``report --run``, the newest of each kind, or all of them in a small report."""
    return list(runs) if _FOCUS is None else [r for r in runs if r.id in _FOCUS]


def in_focus(run: Any) -> bool:
    return _FOCUS is None or run.id in _FOCUS


@contextmanager
def focusing(ids: set[str] | None) -> Iterator[None]:
    """Within the block, :func:`focus` keeps only runs whose ID is in ``ids`` (None: every run)."""
    global _FOCUS
    previous, _FOCUS = _FOCUS, ids
    try:
        yield
    finally:
        _FOCUS = previous


def report_sections(domains: Iterable[str] | None = None) -> dict[str, tuple[str, SectionFn]]:
    """The registered sections, after loading every domain (or only ``domains``: those a report's runs are
    of, so a report of vision runs never imports the language stack)."""
    from poise.registry import load_domains

    load_domains(domains)
    return dict(_SECTIONS)
