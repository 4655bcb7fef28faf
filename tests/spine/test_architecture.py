"""The shape of the code: no import circles, domains side by side on the spine, one door into a run,
and light commands that start without the heavy libraries."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "poise"
DOMAINS = ("vision", "restoration", "control", "language", "merging")
HEAVY = ("torch", "torchvision", "transformers", "trl", "stable_baselines3", "gymnasium", "optuna", "plotly",
         "matplotlib", "codecarbon", "sklearn", "scipy", "numpy")  # (typer itself imports pydantic)


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules ``path`` imports when it is imported (not inside functions or ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for sub in getattr(node, field, []) or []:
                        visit(sub.body if isinstance(sub, ast.ExceptHandler) else [sub])

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _top_level_imports(path) if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_domains_import_only_the_spine():
    graph = _graph()
    for name, deps in graph.items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in DOMAINS:
            continue
        for dep in deps:
            dparts = dep.split(".")
            if len(dparts) > 1 and dparts[1] in DOMAINS and dparts[1] != parts[1]:
                pytest.fail(f"{name} imports {dep}: domains depend only on the spine")


def test_kinds_use_the_run_context_as_their_only_door():
    offenders = []
    for path in SRC.rglob("*.py"):
        # a folder inside the package, not one of the checkout's own path
        if any(part in DOMAINS for part in path.relative_to(SRC).parts[:-1]):
            text = path.read_text(encoding="utf-8")
            for m in re.finditer(r"\bctx\.(store|runner|_store|_host|_cost)\b", text):
                offenders.append(f"{path.relative_to(SRC)}: ctx.{m.group(1)}")
    assert offenders == []


def _imports_after(args: list[str], tmp_path: Path, env_extra: dict[str, str] | None = None) -> tuple[int, set[str]]:
    code = (
        "import sys, json\n"
        "from poise.cli import main\n"
        f"rc = main({args!r})\n"
        "sys.stdout.flush()\n"
        "print('\\n@@' + json.dumps(sorted(m.split('.')[0] for m in sys.modules)), file=sys.stderr)\n"
    )
    env = {**os.environ, "POISE_CACHE_DIR": str(tmp_path / "cache"), **(env_extra or {})}
    env.pop("POISE_STORE", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    line = [x for x in out.stderr.splitlines() if x.startswith("@@")][-1]
    return out.returncode, set(json.loads(line[2:]))


@pytest.mark.parametrize("args", [["runs", "ls"], ["--help"], ["run", "--help"], ["sweep", "--help"],
                                  ["runs", "show", "--help"], ["merge", "-h"]])
def test_light_commands_do_not_import_heavy_libraries(args, tmp_path):
    rc, mods = _imports_after(args, tmp_path)
    assert rc == 0
    allowed = {"numpy"} if args[0] == "merge" else set()  # merge's options come from its NumPy method table
    assert not (mods & set(HEAVY) - allowed), sorted(mods & set(HEAVY))


def test_recipes_lists_from_the_cached_catalogue_without_the_domains(tmp_path):
    rc, first = _imports_after(["recipes"], tmp_path)
    assert rc == 0 and "torch" in first  # the first listing imports every domain and caches the catalogue
    rc, mods = _imports_after(["recipes"], tmp_path)
    assert rc == 0
    assert not (mods & set(HEAVY)), sorted(mods & set(HEAVY))


def test_every_help_text_is_shown_as_written():
    """Rich markup must not eat parts of a help text such as "[quick]"."""
    import typer

    from poise.cli import app

    root = typer.main.get_command(app)
    checked = 0

    def walk(cmd: object, path: list[str]) -> None:
        nonlocal checked
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        if cmd.add_help_option is False:
            return
        out = subprocess.run([sys.executable, "-m", "poise", *path, "--help"], capture_output=True, text=True,
                             env={**os.environ, "COLUMNS": "300"}, timeout=120)
        shown = " ".join(out.stdout.replace("│", " ").split())
        for p in cmd.params:
            text = getattr(p, "help", None)
            if text:
                assert " ".join(text.split()) in shown, f"poise {' '.join(path)}: help of {p.name} shown as {shown!r}"
                checked += 1

    walk(root, [])
    assert checked > 20
