"""The store, the CLI and the report at scale: `runs ls`, `frontier` and `report` on stores of 400, 4,000
and 20,000 runs, each built by cloning a small set of real runs row by row in SQL.

The seed store holds real quick runs (made once with ``poise tour --quick --only ...`` and cached in
``$POISE_SCALE_SEED``, default ``$TMPDIR/poise-scale-seed``). A clone of run ``r`` gets a new ID, starts a
little earlier, and every metric of clone ``k`` is scaled by a small factor fixed by ``(k, metric)`` (the
same in the log and in the final-metrics table), so frontiers keep a few runs on the front instead of
every copy tying with its original. Artifacts are shared (the clones' rows point at the seed's files).

Each command runs as its own process (``python -m poise``, one torch thread); wall seconds, CPU seconds
(user + system) and peak RSS (``wait4``) are the best of ``POISE_SCALE_REPEAT`` runs (default 1). On a
shared machine the CPU seconds are the steadier figure. The report's load time is headless
Chromium's (``--dump-dom`` after the page's scripts ran) when Chromium is installed.

Environment: ``POISE_SCALE_SIZES`` (default ``400,4000,20000``; ``--quick``: ``400``),
``POISE_SCALE_BEFORE`` (a ``src`` folder of another poise, e.g. ``git archive`` of the commit before: its
rows are measured too, on a copy of the store in its own schema).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED_RECIPES = ["vision/erm-digits.toml", "vision/fast-at-digits.toml", "vision/pgd-at-digits.toml",
                "control/lipschitz-*-linear.toml", "control/sac-pendulum.toml", "restoration/bicubic.toml"]


def _env(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(src), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", POISE_COUNTRY="FRA",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", MPLBACKEND="Agg")
    env.pop("POISE_STORE", None)
    return env


def _measure(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int, float]:
    """(wall s, peak RSS GB, exit code, CPU s) of a child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0 and p.stderr is not None:
        print(f"  {' '.join(cmd[2:])}: exit {p.returncode}: {p.stderr.read().decode()[-300:]}", file=sys.stderr)
    return wall, usage.ru_maxrss / 1e6, p.returncode, usage.ru_utime + usage.ru_stime


def seed_store(src: Path) -> Path:
    """A store of real quick runs (made once, then reused)."""
    root = Path(os.environ.get("POISE_SCALE_SEED", Path(tempfile.gettempdir()) / "poise-scale-seed"))
    db = root / ".poise" / "poise.db"
    if db.is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "poise", "--quiet", "tour", "--quick", "-o", str(root / "report")]
    for r in SEED_RECIPES:
        cmd += ["--only", r]
    subprocess.run(cmd, env=_env(src), cwd=root, check=True)
    return root


def clone_store(seed: Path, dest: Path, n_runs: int) -> int:
    """Copy the seed's database to ``dest`` and clone its runs until it holds ``n_runs``; returns the count."""
    if dest.exists():
        shutil.rmtree(dest)
    (dest / ".poise").mkdir(parents=True)
    src_db = sqlite3.connect(seed / ".poise" / "poise.db")
    db_path = dest / ".poise" / "poise.db"
    out = sqlite3.connect(db_path)
    src_db.backup(out)
    src_db.close()
    (dest / ".poise" / "artifacts").symlink_to((seed / ".poise" / "artifacts").resolve())
    c = out.cursor()
    c.execute("PRAGMA journal_mode=WAL")
    have = c.execute("SELECT count(*) FROM runs").fetchone()[0]
    copies = max(0, -(-(n_runs - have) // have))
    tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    cols = {t: [r[1] for r in c.execute(f"PRAGMA table_info({t})")] for t in tables}
    c.execute("CREATE TEMP TABLE k(k INTEGER PRIMARY KEY)")
    c.executemany("INSERT INTO k VALUES (?)", [(k,) for k in range(1, copies + 1)])
    # a clone's ID: its copy number in hex, then the original's tail (12 characters, unique)
    new_id = "printf('%06x', k.k) || substr({id}, 7)"
    scale = "(1 + 0.02 * ((k.k * 7919 + unicode(t.name) * 31 + length(t.name)) % 101 - 50) / 50.0)"
    for t in tables:
        names = cols[t]
        if t == "runs":
            sel = []
            for col in names:
                if col == "id":
                    sel.append(new_id.format(id="t.id"))
                elif col == "parent_id":
                    sel.append(f"CASE WHEN t.parent_id IS NULL THEN NULL ELSE {new_id.format(id='t.parent_id')} END")
                elif col in ("started", "ended"):
                    sel.append(f"t.{col} - k.k * 60.0")
                else:
                    sel.append(f"t.{col}")
        elif "run_id" in names:
            names = [n for n in names if not (n == "id" and t in ("metrics", "artifacts"))]
            sel = []
            for col in names:
                if col == "run_id":
                    sel.append(new_id.format(id="t.run_id"))
                elif col == "value" and t in ("metrics", "final_metrics"):
                    sel.append(f"t.value * {scale}")
                else:
                    sel.append(f"t.{col}")
        else:
            continue
        c.execute(f"INSERT INTO {t} ({', '.join(names)}) SELECT {', '.join(sel)} FROM {t} AS t CROSS JOIN k")
    out.commit()
    total = c.execute("SELECT count(*) FROM runs").fetchone()[0]
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    out.close()
    return total


def _objectives(db: Path) -> tuple[str, str]:
    """The utility and robustness metrics most runs of the store have."""
    c = sqlite3.connect(db)
    rows = c.execute("SELECT axis || '.' || name, count(DISTINCT run_id) FROM metrics WHERE axis IN "
                     "('utility', 'robustness') GROUP BY 1 ORDER BY 2 DESC").fetchall()
    c.close()
    util = next(k for k, _ in rows if k.startswith("utility."))
    rob = next(k for k, _ in rows if k.startswith("robustness."))
    return util, rob


def chromium_load(index: Path) -> float | None:
    """Seconds headless Chromium takes to load the page and run its scripts (None without Chromium)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        return None
    profile = tempfile.mkdtemp(prefix="poise-chromium-")
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-dev-shm-usage", "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={profile}", "--dump-dom", index.resolve().as_uri()]
    t0 = time.perf_counter()
    try:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        return float("inf")
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return time.perf_counter() - t0


def measure(label: str, src: Path, store_dir: Path, n: int, report_args: list[str], repeat: int) -> list[str]:
    env = _env(src)
    url = f"sqlite:///{(store_dir / '.poise' / 'poise.db').resolve()}"
    base = [sys.executable, "-m", "poise", "--quiet", "--store", url]
    x, y = _objectives(store_dir / ".poise" / "poise.db")
    out_dir = store_dir / "report"

    def best(cmd: list[str]) -> tuple[float, float, int, float]:
        runs = [_measure(cmd, env, store_dir) for _ in range(repeat)]
        return min(runs)

    start = best([sys.executable, "-c", "import poise.cli"])
    ls = best(base + ["runs", "ls"])
    fr = best(base + ["frontier", "--x", x, "--y", y])
    rep = best(base + ["report", "-o", str(out_dir), *report_args])
    index = out_dir / "index.html"
    size = index.stat().st_size / 1e6 if index.is_file() and rep[2] == 0 else float("nan")
    pngs = len(list(out_dir.glob("*.png"))) if out_dir.is_dir() else 0
    load = chromium_load(index) if index.is_file() and rep[2] == 0 else None
    shutil.rmtree(out_dir, ignore_errors=True)

    def cell(r: tuple[float, float, int, float]) -> str:
        return f"{r[0]:.1f} s ({r[3]:.1f} s CPU) / {r[1]:.2f} GB" + ("" if r[2] == 0 else f" (exit {r[2]})")

    return [f"| {n:,} | {label} | {cell(start)} | {cell(ls)} | {cell(fr)} | {cell(rep)} | {size:.1f} MB, {pngs} PNGs | "
            + ("no Chromium" if load is None else f"{load:.1f} s") + " |"]


def main(quick: bool = False) -> str:
    sizes = [int(s) for s in os.environ.get("POISE_SCALE_SIZES", "400" if quick else "400,4000,20000").split(",")]
    repeat = int(os.environ.get("POISE_SCALE_REPEAT", "1"))
    before = os.environ.get("POISE_SCALE_BEFORE")
    after_src = REPO / "src"
    seed = seed_store(Path(before) if before else after_src)
    seed_runs = sqlite3.connect(seed / ".poise" / "poise.db").execute("SELECT count(*) FROM runs").fetchone()[0]
    work = Path(tempfile.mkdtemp(prefix="poise-scale-"))
    lines = ["| runs | code | start-up (import) | `runs ls` | `frontier` | `report` | report size | Chromium load |",
             "|---|---|---|---|---|---|---|---|"]
    try:
        for n in sizes:
            built = work / f"s{n}"
            total = clone_store(seed, built, n)
            print(f"  store of {total} runs built", file=sys.stderr, flush=True)
            if before:
                copy = work / f"s{n}-before"
                shutil.copytree(built, copy, symlinks=True)
                lines += measure("before", Path(before), copy, total, [], repeat)
                shutil.rmtree(copy)
                print(f"  {lines[-1]}", file=sys.stderr, flush=True)
            # open once with this poise: an older store is migrated here, not inside a timed command
            subprocess.run([sys.executable, "-c", f"from poise.store import Store; Store('sqlite:///{built}/.poise/"
                            "poise.db')"], env=_env(after_src), check=True)
            lines += measure("after (newest 500)", after_src, built, total, [], repeat)
            print(f"  {lines[-1]}", file=sys.stderr, flush=True)
            lines += measure("after (--all)", after_src, built, total, ["--all"], repeat)
            print(f"  {lines[-1]}", file=sys.stderr, flush=True)
            shutil.rmtree(built)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    return "\n".join([
        f"Stores built by cloning {seed_runs} real quick runs ({', '.join(SEED_RECIPES)}); each command a fresh "
        f"process, wall s (CPU s) / peak RSS, best of {repeat}; machine: {os.cpu_count()} CPUs, load average "
        f"{load[0]:.1f} at the end (a shared machine: absolute times are noisy).",
        "",
        *lines,
        "",
        "`before` is the code named by POISE_SCALE_BEFORE (every run in the report), `after` this tree: the report "
        "of the newest 500 runs (the default) and of every run (`--all`). Start-up is `import poise.cli`.",
    ])


if __name__ == "__main__":
    print(main(quick="--quick" in sys.argv))
