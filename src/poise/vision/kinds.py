"""Registers the vision domain's recipe kinds, evaluators, report section, frontier pairs and rebuilders."""

from poise.evaluators import rebuilder
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
from poise.vision.base import rebuild

# every vision kind stores a classifier in the same format, so merged weights are scored the same way
for _kind in ("vision.erm", "vision.pgd_at", "vision.trades", "vision.fast_at", "vision.ard", "vision.rslad",
              "vision.mtard"):
    rebuilder(_kind)(rebuild)
rebuilder("vision.robustbench")(pretrained.rebuild)

register_frontier("utility.clean_acc", "robustness.autoattack_acc")
register_frontier("utility.clean_acc", "cost.co2_g")
