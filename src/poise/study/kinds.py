"""Registers the study kinds and their report sections (Claims; schedules under a budget; mix vs merge)."""

from poise.study import compare, mix_vs_merge, mix_vs_merge_report, report, schedules, schedules_report  # noqa: F401
