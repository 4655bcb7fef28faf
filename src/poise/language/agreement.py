"""Agreement between judges that scored the same responses: Cohen's κ per language, and the disagreements.

``agreement(records, judges)`` takes the evaluation's records (each with ``labels``: judge name -> yes / no /
error) and, for every pair of judges, in every language and over all of them, counts the responses both
judges decided, their raw agreement and Cohen's κ. A response one judge could not decide (an error) is left
out of that pair's counts and counted as the judge's error, never read as agreement. Responses where two
judges disagree are flagged for the report (the first ``flag_limit``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from itertools import combinations
from typing import Any


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's κ of two raters' labels on the same items: (p_o − p_e) / (1 − p_e).

    p_o is the share of items with the same label, p_e the agreement expected from the raters' label
    frequencies. ``None`` where κ is undefined: no items, or p_e = 1 (both raters gave one and the same label to
    every item).
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} labels against {len(b)}; expected one label per item from each rater")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def _pair_row(recs: Sequence[dict[str, Any]], a: str, b: str, language: str) -> dict[str, Any]:
    la = [r["labels"].get(a, "error") for r in recs]
    lb = [r["labels"].get(b, "error") for r in recs]
    both = [(x, y) for x, y in zip(la, lb, strict=True) if x != "error" and y != "error"]
    xs, ys = [x for x, _ in both], [y for _, y in both]
    n = len(both)
    return {
        "a": a, "b": b, "language": language, "n": n,
        "agreement": sum(x == y for x, y in both) / n if n else None,
        "kappa": cohen_kappa(xs, ys),
        "a_yes": xs.count("yes") / n if n else None,
        "b_yes": ys.count("yes") / n if n else None,
        "a_errors": la.count("error"), "b_errors": lb.count("error"),
    }


def agreement(records: Sequence[dict[str, Any]], judges: Sequence[str], flag_limit: int = 50) -> dict[str, Any]:
    """Pairwise agreement of ``judges`` on the harmful prompts of ``records``, overall and per language."""
    harmful = [r for r in records if r["kind"] == "harmful" and "labels" in r]
    languages = sorted({r["language"] for r in harmful})
    pairs = []
    for a, b in combinations(judges, 2):
        pairs.append(_pair_row(harmful, a, b, "all"))
        for lang in languages:
            pairs.append(_pair_row([r for r in harmful if r["language"] == lang], a, b, lang))
    flagged = []
    for r in harmful:
        decided = {j: r["labels"].get(j) for j in judges if r["labels"].get(j) in ("yes", "no")}
        if len(set(decided.values())) > 1:
            flagged.append({k: r.get(k) for k in ("id", "language", "category", "prompt", "response")}
                           | {"labels": {j: r["labels"].get(j, "error") for j in judges}})
    return {
        "judges": list(judges),
        "harmful": len(harmful),
        "pairs": pairs,
        "flagged_total": len(flagged),
        "flagged": flagged[:flag_limit],
    }
