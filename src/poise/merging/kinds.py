"""Registers the merging domain's kinds (merging.merge, merging.sweep, merging.mix_vs_merge) and its report section."""

from poise.merging import merge, mix_vs_merge, report, sweep  # noqa: F401  (registration on import)
