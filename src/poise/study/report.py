"""The report's Claims section: each study's claims with the interval of the difference and the verdict,
the table of rows (mean ± 95 % interval over seeds) and the settings tuning chose for each row."""

from __future__ import annotations

import math
from typing import Any

from poise.report.blocks import Block, artifact_json, report_section
from poise.stats import Interval
from poise.store import RunRecord, Store


def load_comparison(store: Store, run: RunRecord) -> dict[str, Any] | None:
    """The ``comparison`` artifact of a study run (None when missing; a corrupt one raises CorruptArtifact)."""
    return artifact_json(store, run, "comparison")


def _iv(d: dict[str, Any]) -> Interval:
    return Interval(**{k: (math.nan if v is None else v) if k in ("mean", "low", "high", "sd") else v
                       for k, v in d.items()})


def _effect(d: dict[str, Any]) -> str:
    iv = _iv(d)
    if not math.isfinite(iv.low):
        return f"{iv.mean:+.3g} (no interval: n = {iv.n})"
    return f"{iv.mean:+.3g} [{iv.low:+.3g}, {iv.high:+.3g}]" + (" paired" if iv.paired else " unpaired")


def claim_rows(result: dict[str, Any]) -> list[list[Any]]:
    out = []
    for c in result["claims"]:
        rel = c["relation"] + (f" (margin {c['margin']:g})" if c.get("margin") else "")
        out.append([c["text"], c["metric"], f"{c['a']} vs {c['b']}", rel, _effect(c["difference"]), c["verdict"],
                    result.get("command", "")])
    return out


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    metrics = sorted({m for r in result["rows"] for m in r["metrics"]})
    rows = []
    for r in result["rows"]:
        cells = []
        for m in metrics:
            cell = r["metrics"].get(m)
            cells.append(_iv(cell["interval"]).format() if cell else "")
        label = r["name"] + (f" (ablation of {r['ablation_of']})" if r.get("ablation_of") else "")
        rows.append([label, *cells])
    arrows = {m: next(("↑" if r["metrics"][m]["direction"] == "max" else "↓") for r in result["rows"]
                      if m in r["metrics"]) for m in metrics}
    return ["row", *[f"{m} {arrows[m]}" for m in metrics]], rows


def tuning_rows(result: dict[str, Any]) -> list[list[Any]]:
    out = []
    for r in result["rows"]:
        t = r["tuning"]
        chosen = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["chosen"].items())
        space = ", ".join(f"{k} ∈ {v}" for k, v in (t.get("space") or {}).items())
        best = t.get("best_value")
        out.append([r["name"], space or "—", t.get("trials", 0), chosen or t.get("note", "as given"),
                    f"{best:.4g}" if isinstance(best, float) and math.isfinite(best) else ""])
    return out


@report_section("claims", "Claims", per_run=True)
def claims_section(store: Store, runs: list[RunRecord]) -> list[Block]:
    blocks: list[Block] = []
    for run in runs:
        if run.kind != "study.compare" or run.status != "done":
            continue
        result = load_comparison(store, run)
        if result is None:
            blocks.append(Block(title=f"study {run.name}", note=f"run {run.id}: its comparison artifact is "
                                "missing or unreadable"))
            continue
        seeds = result["seeds"]
        note = (f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), mean ± 95 % t-interval; every row tuned with "
                f"{result['trials']} trials of poise sweep on the validation split (objective "
                f"{result['objective']}), the test split read once. Verdicts come from the interval of the "
                f"difference. Reproduce: {result.get('command') or 'poise runs show ' + run.id}"
                + ("  (quick mode: small budgets, not the full study)" if result.get("quick") else ""))
        if result["claims"]:
            blocks.append(Block(title=f"{run.name}: claims",
                                table=(["claim", "metric", "rows", "relation", "a − b (95 % interval)", "verdict",
                                        "command"], claim_rows(result)), note=note))
        headers, rows = table_rows(result)
        blocks.append(Block(title=f"{run.name}: results", table=(headers, rows),
                            note="" if result["claims"] else note))
        blocks.append(Block(title=f"{run.name}: tuned settings",
                            table=(["row", "space searched", "trials", "chosen", "best val objective"],
                                   tuning_rows(result))))
    return blocks
