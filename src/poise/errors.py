"""User-facing errors: one line that names the file, the field and what was expected.

Anything a user can get wrong (a recipe, an override, a path, a run ID) raises ``UserError``; the CLI
prints its one line and exits with code 2. Other exceptions are bugs and keep their traceback behind
``--debug``.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input from the user, reported as ``where: field: message``."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | Path | None = None, field: str | None = None):
        self.message = " ".join(str(message).split())  # always one line
        self.where = str(where) if where is not None else None
        self.field = field
        super().__init__(self.line())

    def line(self) -> str:
        parts = [p for p in (self.where, self.field) if p]
        return ": ".join([*parts, self.message])


class BudgetExhausted(Exception):
    """Raised inside a run when its budget is spent mid-step (never escapes a kind)."""


def describe(value: object, limit: int = 60) -> str:
    """Short repr of a user value for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Pruned(Exception):
    """Raised inside a run when its sweep prunes it from an intermediate value (the run ends ``pruned``)."""
