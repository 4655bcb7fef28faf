"""Registers the Lipschitz-policy kinds, evaluators, report section and frontier."""

from poise.control.lipschitz import bc, demos, evaluators, report, sweep  # noqa: F401  (registration on import)
from poise.frontier import register_frontier

register_frontier("utility.regret", "robustness.worst_degradation")
