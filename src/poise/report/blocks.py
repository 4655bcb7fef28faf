"""Report building blocks and the registry of domain sections."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def report_section(name: str, title: str) -> Callable[[SectionFn], SectionFn]:
    """Register ``fn(store, runs) -> list[Block]`` as a report section (return [] to skip)."""

    def register(fn: SectionFn) -> SectionFn:
        _SECTIONS[name] = (title, fn)
        return fn

    return register


def report_sections() -> dict[str, tuple[str, SectionFn]]:
    from poise.registry import load_all_kinds

    load_all_kinds()
    return dict(_SECTIONS)
