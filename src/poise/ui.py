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
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text


@dataclass
class UI:
    quiet: bool = False
    json: bool = False
    out: Console = field(default_factory=lambda: Console(soft_wrap=True))
    err: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True))
    _progress: Progress | None = None
    _depth: int = 0

    def info(self, message: str | Text) -> None:
        """A status line for people (stderr; hidden by --quiet). A str is shown as text, never as markup
        (run names and paths are the user's); pass a rich ``Text`` for styles."""
        if not self.quiet:
            self.err.print(Text(message) if isinstance(message, str) else message, highlight=False)

    def print(self, renderable: Any) -> None:
        """Primary output (stdout), suppressed in --json mode where :meth:`emit` is used instead. A str is
        shown as text, never as markup."""
        if not self.json:
            self.out.print(Text(renderable) if isinstance(renderable, str) else renderable, highlight=False)

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
        # run names are text, not markup; ``predict`` holds a run's predicted final cost (poise.prediction)
        task = self._progress.add_task(escape(description), total=total, predict="")
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


class TextTable(Table):
    """A rich table whose str title, headers and cells are shown as text, never as markup: a run named
    ``x[/bold]`` or ``fast-at [ablation]`` prints as written. Pass rich ``Text`` for styled cells."""

    def __init__(self, *headers: Any, title: str | Text | None = None, **kwargs: Any):
        kwargs.setdefault("title_justify", "left")
        super().__init__(*[Text(h) if isinstance(h, str) else h for h in headers],
                         title=Text(title) if isinstance(title, str) else title, **kwargs)

    def add_column(self, header: Any = "", *args: Any, **kwargs: Any) -> None:
        super().add_column(Text(header) if isinstance(header, str) else header, *args, **kwargs)

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        super().add_row(*[Text(c) if isinstance(c, str) else c for c in cells], **kwargs)


def metrics_table(title: str, metrics: dict[str, float]) -> TextTable:
    """A two-column table of metric values."""
    table = TextTable(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4g}")
    return table


_UI = UI()


def get_ui() -> UI:
    return _UI


def set_ui(ui: UI) -> None:
    global _UI
    _UI = ui
