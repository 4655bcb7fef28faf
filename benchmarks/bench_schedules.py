"""Schedules under a fixed budget: ``poise study schedules`` on five recipes of four domains.

ERM and PGD-AT on digits, the plain SR model on faces, the tiny LM's pretraining (language.base)
and SAC on Pendulum. For each, every row (schedule × φ) gets its base lr tuned with the same number
of sweep runs on validation data, then runs each budget fraction with several seeds on test; the
table gives mean ± 95 % interval per cell, the mean rank per row over recipes and budgets, and the
verdict on the claim that UBA at its validation-chosen φ ranks first or ties.

Sized for a 2-core CPU; environment variables shrink or grow it:

* ``POISE_BENCH_SCHED_RECIPES`` — comma-separated subset of erm, pgd_at, sr, lm, rl (default all)
* ``POISE_BENCH_SCHED_SCALE`` — multiplies every recipe's step budget (default 1; --quick: 0.1)
* ``POISE_BENCH_SCHED_SEEDS`` — test seeds per cell (default 3; --quick: 2)
* ``POISE_BENCH_SCHED_TUNE`` — tuning runs per row (default 4; --quick: 1)
* ``POISE_BENCH_SCHED_SCHEDULES`` / ``POISE_BENCH_SCHED_PHI`` / ``POISE_BENCH_SCHED_BUDGETS`` — the
  study's rows and columns (default all eight schedules, φ 0.5,1,2,4, budgets 0.25,0.5,1; --quick:
  uba,cosine,constant, φ 1,2, budgets 0.5,1)
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from poise.schedule_study import Spec, parse_budgets, parse_phis, parse_schedules, run_study, summarise
from poise.store import Store
from poise.ui import UI, set_ui

ROOT = Path(__file__).resolve().parents[1] / "recipes"

# key: (recipe, quick flag, full-size steps, metric, overrides)
RECIPES: dict[str, tuple[str, bool, int, str, dict[str, Any]]] = {
    "erm": ("vision/erm-digits.toml", False, 400, "utility.clean_acc",
            {"model.width": 8, "train.checkpoint_every": 10_000, "eval": [{"name": "vision.clean_accuracy"}]}),
    "pgd_at": ("vision/pgd-at-digits.toml", False, 200, "robustness.pgd10_acc",
               {"model.width": 8, "train.attack.steps": 3, "train.checkpoint_every": 10_000,
                "eval": [{"name": "vision.clean_accuracy", "n": 200},
                         {"name": "vision.robust_accuracy", "attack": "pgd", "steps": 10, "n": 200}]}),
    "sr": ("restoration/sr-clean.toml", True, 300, "utility.psnr_y",
           {"train.checkpoint_every": 10_000, "eval": [{"name": "restoration.clean"}]}),
    "lm": ("language/base.toml", True, 200, "utility.benign_acc",
           {"train.checkpoint_every": 10_000}),
    "rl": ("control/sac-pendulum.toml", True, 2000, "utility.return_mean",
           {"train.lr": 1e-3, "train.checkpoint_every": 100_000,
            "eval": [{"name": "control.nominal_return", "seeds": 2, "episodes": 2}]}),
}


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _cell(c: dict[str, Any], scale: float = 1.0) -> str:
    if not math.isfinite(c.get("low", math.nan)):
        return f"{c['mean'] * scale:.3g}"
    return f"{c['mean'] * scale:.3g} ± {(c['high'] - c['low']) / 2 * scale:.2g}"


def main(quick: bool) -> str:
    keys = [k.strip() for k in _env("POISE_BENCH_SCHED_RECIPES", ",".join(RECIPES)).split(",") if k.strip()]
    unknown = set(keys) - set(RECIPES)
    if unknown:
        raise SystemExit(f"POISE_BENCH_SCHED_RECIPES: unknown {sorted(unknown)}; expected {', '.join(RECIPES)}")
    scale = float(_env("POISE_BENCH_SCHED_SCALE", "0.1" if quick else "1"))
    seeds = int(_env("POISE_BENCH_SCHED_SEEDS", "2" if quick else "3"))
    tune = int(_env("POISE_BENCH_SCHED_TUNE", "1" if quick else "4"))
    schedules = parse_schedules(_env("POISE_BENCH_SCHED_SCHEDULES", "uba,cosine,constant" if quick else
                                     "uba,cosine,linear,rex,wsd,step,onecycle,constant"))
    phis = parse_phis(_env("POISE_BENCH_SCHED_PHI", "1,2" if quick else "0.5,1,2,4"))
    budgets = parse_budgets(_env("POISE_BENCH_SCHED_BUDGETS", "0.5,1" if quick else "0.25,0.5,1"))
    set_ui(UI(quiet=True))
    lines = [f"Rows: {', '.join(schedules)} (UBA φ ∈ {{{', '.join(f'{p:g}' for p in phis)}}}); budgets "
             f"{', '.join(f'{b:g}' for b in budgets)} of each recipe's steps (scale {scale:g}); {seeds} test seeds; "
             f"base lr tuned per row with {tune} sweep run(s) on validation data (lr range: recipe lr ÷10…×10).", ""]
    studies = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(root=Path(tmp) / ".poise")
        for key in keys:
            path, use_quick, steps, metric, over = RECIPES[key]
            over = {**over, "train.budget": {"steps": max(4, round(steps * scale))}}
            spec = Spec(recipes=[ROOT / path], budgets=budgets, schedules=schedules, phis=phis, seeds=seeds,
                        metrics=[metric], tune_trials=tune, overrides=over, quick=use_quick, name=key)
            study = run_study(store, spec, device="cpu")
            studies.append(study)
            rec = study["recipes"][0]
            pct = 100.0 if metric.split(".")[1].endswith("_acc") else 1.0
            lines += [f"**{key}** ({path}, {over['train.budget']['steps']} steps at budget 1): {metric}"
                      f"{' (%)' if pct == 100 else ''}, mean ± 95 % interval; lr tuned on {rec['tuned_on']}.", "",
                      "| schedule | tuned lr | " + " | ".join(f"budget {b:g}" for b in budgets) + " |",
                      "|---|---:|" + "---:|" * len(budgets)]
            for row in study["rows"]:
                cells = {c["budget"]: c for c in rec["cells"] if c["row"] == row["label"]}
                star = " *" if row["label"] == rec["recommended_uba"] else ""
                lines.append(f"| {row['label']}{star} | {rec['tuned'][row['label']]['lr']:.3g} | "
                             + " | ".join(_cell(cells[b], pct) for b in budgets) + " |")
            lines.append("")
    combined = {"rows": studies[0]["rows"], "recipes": [s["recipes"][0] for s in studies]}
    summary = summarise(combined)
    lines += ["Mean rank per row over recipes × budgets (1 is best; ± 95 % interval over cells); * = UBA's φ "
              "chosen on validation.", "", "| row | mean rank |", "|---|---:|"]
    for label, r in sorted(summary["mean_ranks"].items(), key=lambda kv: kv[1]["mean"]):
        lines.append(f"| {label} | {_cell(r)} |")
    if "claim" in summary:
        c = summary["claim"]
        lines += ["", f"Claim — {c['text']}: **{c['verdict']}** (rank difference other − UBA per cell, paired; "
                      f"held needs every interval above −{c['margin_ranks']:g}).", "",
                  "| schedule | mean rank | other − UBA |", "|---|---:|---:|"]
        for label, r in sorted(c["mean_ranks"].items(), key=lambda kv: kv[1]["mean"]):
            d = c["differences"].get(label)
            lines.append(f"| {label} | {_cell(r)} | {_cell(d) + ' (' + d['verdict'] + ')' if d else '–'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(main(quick="--quick" in sys.argv))
