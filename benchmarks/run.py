"""``make bench``: run every ``benchmarks/bench_*.py`` and print their tables.

Each benchmark module has ``main(quick: bool) -> str`` returning Markdown (tables and notes). Each
section is printed and kept in ``benchmarks/results/<name>.md`` (``<name>.quick.md`` with ``--quick``),
and ``benchmarks/RESULTS.md`` is rebuilt from the kept full-mode sections, so benchmarks can be rerun
one at a time (``make bench BENCH_ARGS="--only vision"``). Speed figures are ratios against
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
sys.path.insert(0, str(HERE))  # shared helpers next to the benchmarks (language_lab.py)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", action="append", default=[], help="benchmark name(s), e.g. vision")
    ap.add_argument("--quick", action="store_true", help="fewer seeds and steps (a smoke test of the benchmarks)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--rebuild", action="store_true", help="only rebuild RESULTS.md from the kept sections")
    args = ap.parse_args()
    os.environ.setdefault("POISE_COUNTRY", "FRA")
    files = sorted(HERE.glob("bench_*.py"))
    if args.list:
        print("\n".join(f.stem.removeprefix("bench_") for f in files))
        return 0
    if args.only:
        unknown = set(args.only) - {f.stem.removeprefix("bench_") for f in files}
        if unknown:
            print(f"run.py: error: --only: unknown benchmark(s) {sorted(unknown)}", file=sys.stderr)
            return 2
        files = [f for f in files if f.stem.removeprefix("bench_") in args.only]
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    for f in [] if args.rebuild else files:
        spec = importlib.util.spec_from_file_location(f.stem, f)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        t0 = time.perf_counter()
        print(f"== {f.stem} ...", file=sys.stderr, flush=True)
        text = mod.main(quick=args.quick)
        took = time.perf_counter() - t0
        name = f.stem.removeprefix("bench_")
        section = (f"## {name}\n\n{text.strip()}\n\n_({took:.0f} s, {time.strftime('%Y-%m-%d')}, "
                   f"`make bench BENCH_ARGS=\"--only {name}{' --quick' if args.quick else ''}\"`)_\n")
        print(section, flush=True)
        (results / f"{name}{'.quick' if args.quick else ''}.md").write_text(section)
    kept = sorted(p for p in results.glob("*.md") if not p.name.endswith(".quick.md"))
    header = ("# poise benchmark results\n\nFull-mode sections printed by `make bench` "
              "(one file per benchmark in `results/`).\n\n")
    Path(args.out).write_text(header + "\n".join(p.read_text() for p in kept))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
