"""Report section for mix-vs-merge studies: every model's scores with intervals, and the best merge per
group against the data mix with its verdict."""

from __future__ import annotations

import math
from typing import Any

from poise.report.blocks import Block, artifact_json, report_section
from poise.stats import Interval
from poise.store import RunRecord, Store

KINDS = ("study.mix_vs_merge", "merging.mix_vs_merge")
COLUMNS = ("utility.benign_acc", "safety.harmful_compliance", "safety.harmful_compliance_global",
           "safety.harmful_compliance_local", "safety.over_refusal")


def _iv(d: dict[str, Any] | None) -> str:
    if not d:
        return ""
    iv = Interval(**{k: (math.nan if v is None else v) for k, v in d["interval"].items()})
    return iv.format()


def mix_vs_merge_blocks(run: RunRecord, table: dict[str, Any]) -> list[Block]:
    langs = table.get("languages", [])
    cols = [*COLUMNS, *(f"safety.harmful_compliance_{lang}" for lang in langs)]
    rows = []
    for r in table["rows"]:
        weight = r.get("weight")
        rows.append([r["stage"], r["group"], r["method"], r["label"],
                     "" if r["method"] == "-" else ("equal" if weight is None else f"{weight:g} on {r['focus']}"),
                     _iv(r["score"]), *[_iv(r["metrics"].get(c)) for c in cols]])
    short = [c.split(".", 1)[1].replace("harmful_compliance", "harm") for c in cols]
    objective = " + ".join(f"{c:g}·{k}" for k, c in table.get("objective", {}).items())
    seeds = table.get("seeds", [])
    blocks = [Block(
        f"mix vs merge {run.name} [{run.id[:6]}]",
        table=(["stage", "group", "method", "models", "weight", "objective", *short], rows),
        note=f"data mix vs objective-based and language-based merges; mean ± 95 % interval over {len(seeds)} "
             f"seed(s) on test; merge weights searched on val over {table.get('grid')} (objective {objective})",
    )]
    best = table.get("best", [])
    if best:
        blocks.append(Block(
            f"mix vs merge {run.name}: best merge per group against the data mix",
            table=(["claim", "best merge", "weight", "objective difference (merge − mix)", "verdict"],
                   [[b["claim"], b["method"], "equal" if b["weight"] is None else f"{b['weight']:g}",
                     Interval(**{k: (math.nan if v is None else v) for k, v in b["difference"].items()}).format(),
                     b["verdict"]] for b in best]),
        ))
    return blocks


@report_section("mix_vs_merge", "Mix vs merge")
def mix_vs_merge_section(store: Store, runs: list[RunRecord]) -> list[Block]:
    blocks: list[Block] = []
    for r in runs:
        if r.kind not in KINDS or r.status != "done":
            continue
        table = artifact_json(store, r, "mix_vs_merge")
        if table and "stages" in table:
            blocks.extend(mix_vs_merge_blocks(r, table))
    return blocks
