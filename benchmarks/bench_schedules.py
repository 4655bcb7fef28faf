"""Schedules under a fixed budget: ``poise study schedules`` on five recipes of four domains.

ERM and PGD-AT on digits, the plain SR model on faces, the tiny LM's pretraining (language.base)
and SAC on Pendulum, through ``study.schedules`` (one ``study.compare`` per recipe): every row
(schedule × φ × budget fraction) gets its base lr tuned with the same number of sweep runs on the
validation split, then runs several seeds scored on test. The tables give mean ± 95 % interval per
cell, the mean rank per row over recipes and budgets, and the verdict on the claim that UBA at its
validation-chosen φ ranks first or ties.

Sized for a 2-core CPU; environment variables shrink or grow it:

* ``POISE_BENCH_SCHED_RECIPES`` — comma-separated subset of erm, pgd_at, sr, lm, rl (default all)
* ``POISE_BENCH_SCHED_SCALE`` — multiplies every recipe's step budget (default 1; --quick: 0.1)
* ``POISE_BENCH_SCHED_SEEDS`` — test seeds per cell (default 3; --quick: 2)
* ``POISE_BENCH_SCHED_TUNE`` — tuning runs per row (default 4; --quick: 1)
* ``POISE_BENCH_SCHED_SCHEDULES`` / ``POISE_BENCH_SCHED_PHI`` / ``POISE_BENCH_SCHED_BUDGETS`` — the
  study's rows and columns (default all eight schedules, φ 0.5,1,2,4, budgets 0.25,0.5,1; --quick:
  uba,cosine,constant, φ 1,2, budgets 0.5,1)
* ``POISE_BENCH_SCHED_STORE`` — keep the study's runs in this folder instead of a temporary one: a
  killed benchmark rerun with the same settings resumes its study (finished runs are reused)
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from poise.recipes import build_recipe
from poise.runner import Runner
from poise.store import Store
from poise.study.schedules import check_budgets, check_phis, check_schedules, load_schedules, parse_list
from poise.ui import UI

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
    lo = c.get("low")
    if not (isinstance(lo, float) and math.isfinite(lo)):
        return f"{c['mean'] * scale:.3g}"
    return f"{c['mean'] * scale:.3g} ± {(c['high'] - lo) / 2 * scale:.2g}"


def main(quick: bool) -> str:
    keys = [k.strip() for k in _env("POISE_BENCH_SCHED_RECIPES", ",".join(RECIPES)).split(",") if k.strip()]
    unknown = set(keys) - set(RECIPES)
    if unknown:
        raise SystemExit(f"POISE_BENCH_SCHED_RECIPES: unknown {sorted(unknown)}; expected {', '.join(RECIPES)}")
    scale = float(_env("POISE_BENCH_SCHED_SCALE", "0.1" if quick else "1"))
    seeds = int(_env("POISE_BENCH_SCHED_SEEDS", "2" if quick else "3"))
    tune = int(_env("POISE_BENCH_SCHED_TUNE", "1" if quick else "4"))
    schedules = check_schedules(parse_list(_env("POISE_BENCH_SCHED_SCHEDULES", "uba,cosine,constant" if quick else
                                                "uba,cosine,linear,rex,wsd,step,onecycle,constant"), "schedules", str))
    phis = check_phis(parse_list(_env("POISE_BENCH_SCHED_PHI", "1,2" if quick else "0.5,1,2,4"), "phi", float))
    budgets = check_budgets(parse_list(_env("POISE_BENCH_SCHED_BUDGETS", "0.5,1" if quick else "0.25,0.5,1"),
                                       "budgets", float))
    targets = []
    for key in keys:
        path, use_quick, steps, metric, over = RECIPES[key]
        targets.append({"recipe": str(ROOT / path), "metric": metric, "quick": use_quick,
                        "set": {**over, "train.budget": {"steps": max(4, round(steps * scale))}}})
    data = {"kind": "study.schedules", "name": "bench-schedules", "schedules": {
        "targets": targets, "budgets": budgets, "schedules": schedules, "phi": phis, "seeds": list(range(seeds)),
        "trials": tune}}
    keep = _env("POISE_BENCH_SCHED_STORE", "")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(root=Path(keep or tmp) / ".poise")
        recipe = build_recipe(data, where="bench_schedules")
        runner = Runner(store, UI(quiet=True), device="cpu")
        unfinished = [r for r in store.list_runs(kind="study.schedules")
                      if r.config_hash == recipe.config_hash() and r.status != "done"]
        rec = runner.resume(unfinished[0].id) if keep and unfinished else runner.run(recipe)
        study = load_schedules(store, rec)
    assert study is not None
    lines = [f"Rows: {', '.join(schedules)} (UBA φ ∈ {{{', '.join(f'{p:g}' for p in phis)}}}) × budgets "
             f"{', '.join(f'{b:g}' for b in budgets)} of each recipe's steps (scale {scale:g}); {seeds} test seeds; "
             f"every row's base lr tuned with {tune} sweep run(s) on the validation split (range: the recipe's lr "
             "÷10…×10), through study.compare.", ""]
    for key, t in zip(keys, study["targets"], strict=True):
        pct = 100.0 if t["metric"].split(".")[1].endswith("_acc") else 1.0
        steps = targets[keys.index(key)]["set"]["train.budget"]["steps"]
        lines += [f"**{key}** ({RECIPES[key][0]}, {steps} steps at budget 1): {t['metric']}"
                  f"{' (%)' if pct == 100 else ''}, mean ± 95 % interval, tuned lr in brackets; tuned on "
                  f"{t['tuned_on']}.",
                  "",
                  "| schedule | " + " | ".join(f"budget {b:g}" for b in budgets) + " |",
                  "|---|" + "---:|" * len(budgets)]
        for row in study["rows"]:
            cells = {c["budget"]: c for c in t["cells"] if c["row"] == row["label"]}
            star = " *" if row["label"] == t["recommended_uba"] else ""
            lines.append(f"| {row['label']}{star} | "
                         + " | ".join(f"{_cell(cells[b]['interval'], pct)} ({cells[b]['lr']:.2g})" for b in budgets)
                         + " |")
        lines.append("")
    lines += ["Mean rank per row over recipes × budgets (1 is best; ± 95 % interval over cells); * = UBA's φ "
              "chosen on validation.", "", "| row | mean rank |", "|---|---:|"]
    for label, r in sorted(study["mean_ranks"].items(), key=lambda kv: kv[1]["mean"]):
        lines.append(f"| {label} | {_cell(r)} |")
    if "claim" in study:
        c = study["claim"]
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
