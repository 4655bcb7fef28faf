"""Registers the vision domain's recipe kinds, evaluators and report frontiers."""

from poise.frontier import register_frontier
from poise.vision import erm, evaluators  # noqa: F401  (registration on import)

register_frontier("utility.clean_acc", "cost.co2_g")
