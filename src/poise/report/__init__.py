"""The HTML report: frontiers, a sortable run table, cost bars and each domain's own sections.

``write_report(store, out_dir)`` writes ``index.html`` (self-contained: plotly.js inlined, opens
offline, every user-supplied value escaped) and PNG copies of its plots (matplotlib). Domains add
sections with :func:`report_section`; each returns :class:`Block` items (a plotly figure, an HTML
fragment they escaped themselves, or a PNG).
"""

from poise.report import costs as _costs  # noqa: F401 - registers the cost sections
from poise.report import sweep as _sweep  # noqa: F401 - registers the Sweeps section
from poise.report.blocks import Block, report_section, report_sections
from poise.report.html import write_report

__all__ = ["Block", "report_section", "report_sections", "write_report"]
