"""Shared by the language benchmarks: run shipped recipes over seeds into one store, and table their scores.

Every figure comes from poise runs: recipes are loaded with their overrides and run through the
:class:`~poise.runner.Runner`; a run whose config hash is already done in the store is reused (the base
chat model is trained once and shared). The store is a temporary folder, or ``$POISE_BENCH_STORE`` to
share runs between benchmarks (language, alphaalign, merging) and across reruns of the same code.
``$POISE_BENCH_SEEDS`` (e.g. ``0`` or ``0,1,2``) replaces a benchmark's seed list; every table says how many
seeds it averages.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("POISE_COUNTRY", "FRA")

HEADLINE = (
    ("safety.harmful_compliance", "harmful compliance"),
    ("safety.harmful_compliance_global", "global"),
    ("safety.harmful_compliance_local", "local"),
    ("safety.over_refusal", "over-refusal"),
    ("utility.benign_acc", "benign acc"),
)


def seeds(quick: bool, env: str = "POISE_BENCH_SEEDS", default: list[int] | None = None) -> list[int]:
    """The seeds to run: one in quick mode, ``default`` (0, 1, 2) in full mode, or those in ``$env``."""
    if os.environ.get(env):
        return [int(x) for x in os.environ[env].split(",") if x.strip()]
    return [0] if quick else (default or [0, 1, 2])


def fmt(values: list[float], pct: bool = True) -> str:
    """``mean ± std`` over seeds (× 100 for rates); ``–`` when nothing was measured."""
    if not values:
        return "–"
    scale = 100.0 if pct else 1.0
    m = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{m:.1f}" if pct else f"{m:.3g}"
    s = statistics.stdev(values) * scale
    return f"{m:.1f} ± {s:.1f}" if pct else f"{m:.3g} ± {s:.2g}"


@dataclass
class Lab:
    """Runs recipes into one store and keeps, per row label, each seed's final metrics and cost."""

    quick: bool
    finals: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    costs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    runs: dict[str, list[Any]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    reused: int = 0

    def __post_init__(self) -> None:
        from poise.runner import Runner
        from poise.store import Store
        from poise.ui import UI

        shared = os.environ.get("POISE_BENCH_STORE")
        self._tmp = None if shared else tempfile.TemporaryDirectory(prefix="poise-bench-")
        root = Path(shared) if shared else Path(self._tmp.name) / ".poise"
        self.store = Store(root=root)
        self.runner = Runner(self.store, UI(quiet=True))

    def run(self, label: str, ref: str, overrides: dict[str, Any] | None = None) -> Any:
        """Run (or reuse) recipe ``ref`` with ``overrides`` and record it under ``label``."""
        from poise.errors import UserError
        from poise.recipes import load_recipe, resolve_recipe_path

        try:
            path = resolve_recipe_path(ref)
        except UserError:
            self.missing.append(label)
            return None
        cfg = load_recipe(path, overrides or {}, quick=self.quick)
        found = self.store.find_done(cfg.config_hash())
        self.reused += found is not None
        run = found if found is not None else self.runner.run(cfg)
        final = {k: m.value for k, m in self.store.final_metrics([run.id]).get(run.id, {}).items()}
        self.finals.setdefault(label, []).append(final)
        cost = self.store.cost(run.id)
        self.costs.setdefault(label, []).append((cost.wall_s, cost.energy_kwh * 3.6e6))
        self.runs.setdefault(label, []).append(run)
        return run

    def time_note(self) -> str:
        """Total recorded training time of the distinct runs behind the tables (reused runs included)."""
        ids = {r.id: r for rs in self.runs.values() for r in rs}
        total = sum(self.store.cost(i).wall_s for i in ids)
        return (f"{len(ids)} runs behind these tables, {total:.0f} s of recorded wall time "
                f"({self.reused} row(s) reused from the store)")

    def col(self, label: str, key: str, pct: bool = True) -> str:
        return fmt([f[key] for f in self.finals.get(label, []) if key in f], pct)

    def mean(self, label: str, key: str) -> float | None:
        vals = [f[key] for f in self.finals.get(label, []) if key in f]
        return statistics.fmean(vals) if vals else None

    def languages(self) -> list[str]:
        from poise.language.evaluators import metric_languages

        return metric_languages(k for fs in self.finals.values() for f in fs for k in f)

    def headline_table(self, labels: list[str], costs: bool = True) -> list[str]:
        """Harmful compliance (overall, global, local), over-refusal, benign accuracy, time and energy."""
        head = "| model | " + " | ".join(h for _, h in HEADLINE) + (" | train s | energy J |" if costs else " |")
        out = [head, "|---" * (len(HEADLINE) + 1 + (2 if costs else 0)) + "|"]
        for label in labels:
            if label not in self.finals:
                continue
            cells = [self.col(label, k) for k, _ in HEADLINE]
            if costs:
                cells += [fmt([c[0] for c in self.costs[label]], pct=False),
                          fmt([c[1] for c in self.costs[label]], pct=False)]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        return out

    def language_table(self, labels: list[str], what: str = "all") -> list[str]:
        """Per language: harmful compliance / over-refusal / benign accuracy (``what='harm'``: harm only)."""
        langs = self.languages()
        out = ["| model | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
        for label in labels:
            if label not in self.finals:
                continue
            if what == "harm":
                cells = [self.col(label, f"safety.harmful_compliance_{lang}") for lang in langs]
            else:
                cells = [
                    f"{self.col(label, f'safety.harmful_compliance_{lang}')}"
                    f" / {self.col(label, f'safety.over_refusal_{lang}')}"
                    f" / {self.col(label, f'utility.benign_acc_{lang}')}"
                    for lang in langs
                ]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        return out
