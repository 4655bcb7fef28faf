"""Registers the study kinds and the Claims report section."""

from poise.study import compare, report  # noqa: F401
