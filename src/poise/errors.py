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


class CorruptArtifact(UserError):
    """A stored file whose bytes no longer match the SHA-256 recorded for it (or that no longer parses)."""


class DiskFull(UserError):
    """No space left while a run or a report was being written: nothing half-written is kept, and a run
    can be resumed once there is space."""

    exit_code = 1


class RunInterrupted(UserError):
    """A run stopped by Ctrl-C or SIGTERM: marked ``interrupted``, resumable from its last checkpoint."""

    exit_code = 130


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM, so a run ends as it does on Ctrl-C."""


class BudgetExhausted(Exception):
    """Raised inside a run when its budget is spent mid-step (never escapes a kind)."""


def describe(value: object, limit: int = 60) -> str:
    """Short repr of a user value for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Pruned(Exception):
    """Raised inside a run when its sweep prunes it from an intermediate value (the run ends ``pruned``)."""
