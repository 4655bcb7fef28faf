"""Registers AlphaAlign's recipe kind (``language.alphaalign``) and its report section."""

from poise.language.alphaalign import report, train  # noqa: F401  (registration on import)
