"""Terminal output shared by the CLI and running kinds: one rich console, progress bars with ETA.

``--quiet`` hides progress bars and chatter; ``--json`` keeps stdout for one JSON document (progress
and messages go to stderr, or nowhere when quiet).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@dataclass
class UI:
    quiet: bool = False
    json: bool = False
    out: Console = field(default_factory=lambda: Console(soft_wrap=True))
    err: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True))
    _progress: Progress | None = None
    _depth: int = 0

    def info(self, message: str) -> None:
        """A status line for people (stderr; hidden by --quiet)."""
        if not self.quiet:
            self.err.print(message, highlight=False)

    def print(self, renderable: Any) -> None:
        """Primary output (stdout), suppressed in --json mode where :meth:`emit` is used instead."""
        if not self.json:
            self.out.print(renderable)

    def emit(self, data: Any) -> None:
        """The JSON document of a command in --json mode."""
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[ProgressTask]:
        """A progress bar with ETA (nested bars share one live display)."""
        if self.quiet:
            yield ProgressTask(None, None)
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[predict]}"), console=self.err,
                transient=True,
                disable=self.quiet,
            )
            self._progress.start()
        self._depth += 1
        task = self._progress.add_task(description, total=total, predict="")
        try:
            yield ProgressTask(self._progress, task)
        finally:
            self._progress.remove_task(task)
            self._depth -= 1
            if self._depth == 0:
                self._progress.stop()
                self._progress = None


@dataclass
class ProgressTask:
    progress: Progress | None
    task: TaskID | None

    def update(self, completed: int, total: int | None = None, **fields: Any) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=completed, total=total, **fields)


def metrics_table(title: str, metrics: dict[str, float]) -> Any:
    """A two-column table of metric values (names are shown as text, never as markup)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(Text(k), f"{v:.4g}")
    return table


_UI = UI()


def get_ui() -> UI:
    return _UI


def set_ui(ui: UI) -> None:
    global _UI
    _UI = ui
