"""Registers the control domain's recipe kinds, evaluators, report sections and headline frontiers."""

from poise.control import adversarial_training, evaluation, report, training  # noqa: F401  (registration)
from poise.control.lipschitz import kinds  # noqa: F401
from poise.frontier import register_frontier

register_frontier("utility.return_mean", "robustness.auc_mas_mean")
