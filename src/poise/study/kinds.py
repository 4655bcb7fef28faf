"""Registers the study kinds and their report sections (Claims; schedules under a budget)."""

from poise.study import compare, report, schedules, schedules_report  # noqa: F401
