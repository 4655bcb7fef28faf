"""Registers the merging domain's kinds (merging.merge, merging.sweep) and its report section."""

from poise.merging import merge, report, sweep  # noqa: F401  (registration on import)
