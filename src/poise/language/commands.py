"""``poise data``: the standard prompt sets that recipes name, read from local files and checked.

``poise data ls [TOML...]`` lists every prompt set named in the ``[[eval]]`` entries (``data = {...}``) of the
given recipe files (default: the shipped recipes): format, file, SHA-256 pin, rows, harmful prompts,
over-refusal prompts, languages and categories. Each set is loaded as an evaluation would load it, so a missing
file, a missing column or a checksum mismatch shows in its row, and the command then exits with code 2 and
one line naming the first problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from poise.registry import command

data_app = command("data")(typer.Typer(help="Standard prompt sets (HarmBench, XSTest, ...) read from local files.",
                                       no_args_is_help=True, rich_markup_mode=None))


def _short(counts: dict[str, int], limit: int = 3) -> str:
    """``en 6`` for a few keys, ``10 (ar, bn, …)`` for many (``--json`` has them all)."""
    if len(counts) <= limit:
        return ", ".join(f"{k} {v}" for k, v in counts.items()) or "–"
    return f"{len(counts)} ({', '.join(list(counts)[:2])}, …)"


@data_app.command("ls")
def data_ls(
    files: Annotated[list[Path] | None, typer.Argument(help="Recipe TOML files (default: the shipped recipes).")]
    = None,
) -> None:
    """List the prompt sets the recipes name, with rows, languages and categories read from each file."""
    from rich.table import Table
    from rich.text import Text

    from poise.errors import UserError
    from poise.language.promptsets import configured_sets
    from poise.recipes import shipped_recipes
    from poise.ui import get_ui

    ui = get_ui()
    found = configured_sets(list(files) if files else shipped_recipes())
    if ui.json:
        ui.emit([{"source": c.source, "format": c.cfg.format if c.cfg else None,
                  "path": str(c.cfg.path) if c.cfg else None, "sha256": c.cfg.sha256 if c.cfg else None,
                  **(c.stats or {}), "error": c.error} for c in found])
    elif not found:
        ui.print(Text("no prompt sets configured (a recipe names one with [[eval]] data = {format = ..., path = ...})"))
    else:
        t = Table(title="prompt sets", title_justify="left")
        for col in ("recipe", "entry", "format", "file", "sha256", "rows", "harmful", "over-refusal", "languages",
                    "categories"):
            t.add_column(col, justify="right" if col in ("rows", "harmful", "over-refusal", "categories") else "left")
        for c in found:
            recipe, _, entry = c.source.rpartition(": ")
            pin = "error" if c.error else ("pinned" if c.cfg and c.cfg.sha256 else "unpinned")
            s = c.stats or {}
            cells = [str(s["rows"]), str(s["harmful"]), str(s["borderline"]), _short(s["languages"]),
                     str(len(s["categories"]))] if s else ["–"] * 5
            t.add_row(*[Text(x) for x in (Path(recipe).name, entry, c.cfg.format if c.cfg else "?",
                                          c.cfg.path.name if c.cfg else "?", pin, *cells)])
        ui.print(t)
    bad = [c for c in found if c.error]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError((bad[0].error or "") + more)
