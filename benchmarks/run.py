"""``make bench``: run every ``benchmarks/bench_*.py`` and print their tables.

Each benchmark module has ``main(quick: bool) -> str`` returning Markdown (tables and notes). The
combined output is printed and written to ``benchmarks/RESULTS.md``. Speed figures are ratios against
a peer measured in the same process, never absolute times judged against a fixed limit.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", action="append", default=[], help="benchmark name(s), e.g. vision")
    ap.add_argument("--quick", action="store_true", help="fewer seeds and steps (a smoke test of the benchmarks)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args()
    os.environ.setdefault("POISE_COUNTRY", "FRA")
    files = sorted(HERE.glob("bench_*.py"))
    if args.only:
        files = [f for f in files if f.stem.removeprefix("bench_") in args.only]
    sections = []
    for f in files:
        spec = importlib.util.spec_from_file_location(f.stem, f)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        t0 = time.perf_counter()
        print(f"== {f.stem} ...", file=sys.stderr, flush=True)
        text = mod.main(quick=args.quick)
        took = time.perf_counter() - t0
        section = f"## {f.stem.removeprefix('bench_')}\n\n{text.strip()}\n\n_({took:.0f} s)_\n"
        print(section, flush=True)
        sections.append(section)
    header = ("# poise benchmark results\n\nPrinted by `make bench`"
              + (" (quick)" if args.quick else "") + f" on {time.strftime('%Y-%m-%d')}.\n\n")
    if not args.only:
        Path(args.out).write_text(header + "\n".join(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
