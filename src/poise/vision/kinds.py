"""Registers the vision domain's recipe kinds, evaluators, report section and frontier pairs."""

from poise.frontier import register_frontier
from poise.vision import (  # noqa: F401
    ard,
    autoattack_ref,
    corruptions,
    erm,
    evaluators,
    fast_at,
    mtard,
    pgd_at,
    pretrained,
    report,
    rslad,
    trades,
)

register_frontier("utility.clean_acc", "robustness.autoattack_acc")
register_frontier("utility.clean_acc", "cost.co2_g")
