"""Studies: experiments over any recipe kinds, run as the papers ran them.

``study.compare`` gives every row of a comparison the same tuning budget (``poise sweep`` on the
validation split), then trains each row's chosen settings on several seeds and scores the test split
once; cells are means with 95 % intervals and each claim is held, not held or inconclusive from the
interval of a paired difference (:mod:`poise.stats`). The report's Claims section shows them.
"""
