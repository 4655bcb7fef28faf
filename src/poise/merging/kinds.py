"""Registers the merging domain's kinds (merging.merge, merging.sweep) and its report section.

(``merging.mix_vs_merge`` moved to the study package as ``study.mix_vs_merge``: it trains language models
through child runs, which is what studies do; the old name is an alias registered there.)"""

from poise.merging import merge, report, sweep  # noqa: F401  (registration on import)
