"""What one ``poise`` invocation was asked for globally (``--store``, ``--debug``, its arguments), and
opening its store. Shared by the CLI and the commands domains register (:func:`poise.registry.command`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from poise.store import Store


@dataclass
class Session:
    store_url: str | None = None
    debug: bool = False
    argv: list[str] = field(default_factory=list)


SESSION = Session()


def open_store(url: str | None = None) -> Store:
    """The store of this invocation: ``url``, else ``--store``, else ``$POISE_STORE``, else ``.poise/`` here."""
    from poise.store import Store

    return Store(url or SESSION.store_url)
