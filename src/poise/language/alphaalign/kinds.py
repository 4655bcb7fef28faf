"""Registers AlphaAlign's recipe kinds (``language.alphaalign``, ``language.reward_model``) and its report section."""

from poise.language.alphaalign import report, reward_model, train  # noqa: F401  (registration on import)
