"""Registers the language domain's recipe kinds, evaluators, report section and headline frontier."""

from poise.frontier import register_frontier
from poise.language import base, evaluators, finetune, report  # noqa: F401  (registration on import)
from poise.language.alphaalign import kinds as _alphaalign  # noqa: F401

register_frontier("utility.benign_acc", "safety.harmful_compliance")
