"""Report section: a PNG grid of faces (LR, bicubic, baseline, robust, HR) and a per-run PSNR table."""

from __future__ import annotations

from poise.report import Block, report_section
from poise.store import RunRecord, Store


@report_section("restoration.sr", "Face super-resolution")
def section(store: Store, runs: list[RunRecord]) -> list[Block]:
    return []
