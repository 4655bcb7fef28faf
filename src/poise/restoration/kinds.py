"""Registers the restoration domain's recipe kinds, evaluators, report section and headline frontiers."""

from poise.frontier import register_frontier
from poise.restoration import degradation_gan, evaluators, report, sr  # noqa: F401  (registration on import)

register_frontier("utility.psnr_y", "robustness.psnr_y_held_out")
register_frontier("utility.psnr_y", "robustness.psnr_y_pgd")
