"""Assembles the self-contained HTML report from frontiers, the run table, costs and domain sections."""

from __future__ import annotations

import base64
import errno
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import plotly.io as pio
from plotly.offline import get_plotlyjs

from poise.errors import CorruptArtifact, DiskFull, UserError
from poise.filters import config_paths, match_run, needs_config, parse_filters
from poise.frontier import Frontier, build_frontier, frontier_pairs
from poise.report.blocks import Block, focus, focusing, is_per_run, report_sections
from poise.report.figures import cost_figure, cost_png, esc, frontier_figure, frontier_png
from poise.store import CostRecord, RunRecord, Store, verified_bytes, verified_json

MAX_AUTO_PAIRS = 8
REPORT_RUNS = 500  # a report's default scope: the newest runs (--all for every run)
TABLE_ROWS = 1000  # rows of a table in the page
TABLE_EAGER = 100  # rows of a table in the page's HTML; the others are added as it is scrolled (or sorted)
FOCUS_ALL = 24  # a report of at most this many runs draws per-run figures for all of them
FOCUS_PER_KIND = 2  # beyond that, the newest finished runs of each kind are in focus with the fronts' runs
FOCUS_PER_FRONT = 8  # runs of each front in focus (spread along it) when it has more
COST_BARS = 40  # beyond this many runs the cost chart sums runs by name (by kind beyond this many names)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#13233a;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d4e3;font-size:13px}main{padding:10px 28px 40px;max-width:1300px}
section{background:#fff;border:1px solid #e3e3e6;border-radius:8px;padding:14px 18px;margin:16px 0;
content-visibility:auto;contain-intrinsic-size:auto 800px}
h2{font-size:17px;margin:4px 0 10px}h3{font-size:14px;margin:14px 0 6px;color:#333}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px}
table{border-collapse:collapse;font-size:12px;width:100%}th,td{border-bottom:1px solid #eee;padding:4px 6px;
text-align:left;white-space:nowrap}th{background:#f3f4f6;cursor:pointer;position:sticky;top:0}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
.plot{min-height:380px}.scroll{overflow:auto;max-height:560px}.note{color:#666;font-size:12px}img{max-width:100%}
td.num{text-align:right;font-variant-numeric:tabular-nums}.status-failed{color:#b00}.front{font-weight:600}
"""

SORT_JS = """
// a long table's rows past the first are the HTML of a text/html script after it (cell text is escaped, so
// '</tr>' only ends a row), added as the table is scrolled near its end, and all at once before a sort
function poiseMoreRows(table, n){
  if (table._more === undefined){
    var s = table.parentNode.querySelector('script.more-rows');
    table._more = s ? s.textContent.split('</tr>').slice(0, -1).map(function(r){ return r + '</tr>'; }) : [];
    table._shown = 0;
  }
  if (table._shown >= table._more.length) return;
  var end = n === undefined ? table._more.length : Math.min(table._more.length, table._shown + n);
  table.tBodies[0].insertAdjacentHTML('beforeend', table._more.slice(table._shown, end).join(''));
  table._shown = end;
}
document.querySelectorAll('div.scroll').forEach(function(box){
  var table = box.querySelector('table');
  if (!table || !box.querySelector('script.more-rows')) return;
  box.addEventListener('scroll', function(){
    if (box.scrollTop + box.clientHeight > box.scrollHeight - 600) poiseMoreRows(table, 200);
  }, {passive: true});
});
function key(cell){  // a number's full value, else the cell's text
  var v = cell.getAttribute('data-v');
  return v === null ? cell.textContent : v;
}
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      poiseMoreRows(table);
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains('sorted-asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc');});
      th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
      rows.sort(function(a, b){
        var x = key(a.cells[col]), y = key(b.cells[col]);
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
"""


DRAW_JS = """
(function(){
  function draw(el){
    if (el.getAttribute('data-drawn')) return;
    el.setAttribute('data-drawn', '1');
    var f = JSON.parse(document.getElementById('data-' + el.id).textContent);
    Plotly.newPlot(el, f.data, f.layout, {responsive: true, displaylogo: false});
  }
  var plots = Array.prototype.slice.call(document.querySelectorAll('div.plot'));
  if (!('IntersectionObserver' in window)) { plots.forEach(draw); return; }
  var io = new IntersectionObserver(function(entries){
    entries.forEach(function(e){ if (e.isIntersecting) { io.unobserve(e.target); draw(e.target); } });
  }, {rootMargin: '600px 0px'});
  plots.forEach(function(p){ io.observe(p); });
})();
"""


def _script_json(text: str) -> str:
    """JSON safe inside a <script> element: no '</script>', no HTML comment openers."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "figure"


class _Page:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.parts: list[str] = []
        self.figures: list[tuple[str, str]] = []
        self.pngs: list[str] = []

    def figure(self, fig: Any, title: str, png: bytes | None = None, note: str = "") -> str:
        div_id = f"fig{len(self.figures)}"
        self.figures.append((div_id, _script_json(pio.to_json(fig, validate=False))))
        png_link = ""
        if png is not None:
            name = self.png(png, title)
            png_link = f' <a class="note" href="{esc(name)}">PNG</a>'
        note_html = f'<p class="note">{esc(note)}</p>' if note else ""
        return f'<div><h3>{esc(title)}{png_link}</h3>{note_html}<div id="{div_id}" class="plot"></div></div>'

    def png(self, data: bytes, title: str) -> str:
        name = f"{_slug(title)}.png"
        i = 1
        while name in self.pngs:
            i += 1
            name = f"{_slug(title)}-{i}.png"
        self.pngs.append(name)
        (self.out_dir / name).write_bytes(data)
        return name


def _table(headers: list[str], rows: list[list[Any]], *, css: str = "sortable", row_class: list[str] | None = None
           ) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    cut = ""
    if len(rows) > TABLE_ROWS:  # a page of 20,000 rows does not open: the first rows, and how many are left out
        cut = (f'<p class="note">The first {TABLE_ROWS} of {len(rows)} rows; narrow the report (--kind, --study, '
               "--filter, --since) or list them with poise runs ls.</p>")
        rows = rows[:TABLE_ROWS]
    body = []
    for i, row in enumerate(rows):
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(f'<td class="num" data-v="{v!r}">{v:.4g}</td>')
            elif isinstance(v, int) and not isinstance(v, bool):
                cells.append(f'<td class="num" data-v="{v}">{v}</td>')
            else:
                cells.append("<td></td>" if v is None else f"<td>{esc(v)}</td>")  # sorted by its text
        cls = f' class="{esc(row_class[i])}"' if row_class and row_class[i] else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    more = ""
    if len(body) > TABLE_EAGER:  # thousands of cells slow the page's opening: the rest come as it is scrolled
        more = f'<script type="text/html" class="more-rows">{"".join(body[TABLE_EAGER:])}</script>'
        body = body[:TABLE_EAGER]
    return (f'{cut}<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>{more}</div>')


def _auto_pairs(finals: dict[str, dict[str, Any]], domains: list[str] | None = None) -> list[tuple[str, str]]:
    """Headline pairs registered by domains that some run has, else utility × robustness/safety pairs."""
    have = Counter(k for m in finals.values() for k in m)
    pairs = [(x, y) for x, y in frontier_pairs(domains) if any(x in m and y in m for m in finals.values())]
    if not pairs:
        utility = [k for k in have if k.startswith("utility.") and have[k] >= 2]
        other = [k for k in have if k.split(".")[0] in ("robustness", "safety") and have[k] >= 2]
        pairs = [(u, o) for u in utility for o in other][:MAX_AUTO_PAIRS]
    for u in sorted(k for k in have if k.startswith("utility.") and have[k] >= 2)[:2]:
        if "cost.co2_g" in have and (u, "cost.co2_g") not in pairs:
            pairs.append((u, "cost.co2_g"))
    return pairs


def write_report(store: Store, out_dir: str | Path = "poise-report", *, filters: list[str] | None = None,
                 runs: list[RunRecord] | None = None, title: str = "poise report", kind: str | None = None,
                 study: str | None = None, since: float | None = None, limit: int | None = REPORT_RUNS,
                 select: list[str] | None = None) -> Path:
    """Write ``index.html`` and PNG copies of its plots to ``out_dir``; returns the HTML path.

    The report is written whole or not at all: it is built in a temporary folder beside ``out_dir`` and
    its files are renamed into place at the end (the page last), so a failure (a full disk, a read-only
    folder) leaves the previous report as it was and no temporary files behind."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError("expected a folder for the report", where=out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise UserError(f"cannot write the report here: {e.strerror or e}", where=out) from None
    try:
        scope = runs if runs is not None else _scope(store, filters or [], kind=kind, study=study, since=since,
                                                     limit=limit)
        chosen = {store.get_run(r).id for r in select or []}
        _write_into(tmp, store, scope, title, chosen, total=None if runs is not None else store.count_runs())
        out.mkdir(exist_ok=True)
        # renames within one filesystem need no space: the PNGs first, the page last
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == "index.html"):
            os.replace(f, out / f.name)
        tmp.rmdir()
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise DiskFull("no space left on the device; the report was not written (the previous one, if any, "
                           "is unchanged)", where=out) from None
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UserError(f"cannot write the report here: {e.strerror}", where=out) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


def _scope(store: Store, filters: list[str], *, kind: str | None, study: str | None, since: float | None,
           limit: int | None) -> list[RunRecord]:
    """The runs a report shows: the newest ``limit`` (None: all) matching the filters, oldest first."""
    parsed = parse_filters(filters)
    ids = []
    for r in store.iter_runs(newest_first=True, with_config=needs_config(parsed), config_keys=config_paths(parsed),
                             kind=kind, study=study, since=since):
        if match_run(r, parsed):
            ids.append(r.id)
            if limit is not None and len(ids) >= limit:
                break
    return store.runs_full(ids)


class _ReportStore:
    """The store as report sections see it: final metrics, costs, phases and artifacts of the report's runs
    read once, in bulk, up front (a section asking again gets them from memory); anything else is passed
    to the store."""

    def __init__(self, store: Store, runs: list[RunRecord]):
        self._store = store
        ids = [r.id for r in runs]
        self._ids = set(ids)
        self._finals = store.final_metrics(ids)
        self._costs = store.costs_of(ids)
        self._phases = store.phase_costs_of(ids)
        self._artifacts = store.artifacts_of(ids)
        self._lists: dict[tuple[Any, ...], list[RunRecord]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def final_metrics(self, run_ids: Any = None, *, names: Any = None) -> dict[str, dict[str, Any]]:
        ids = None if run_ids is None else list(run_ids)
        if ids is None or not self._ids.issuperset(ids):
            return self._store.final_metrics(ids, names=names)
        keep = None if names is None else set(names)
        return {rid: {k: m for k, m in self._finals[rid].items() if keep is None or k in keep}
                for rid in ids if rid in self._finals}

    def cost(self, run_id: str) -> Any:
        return self._costs[run_id] if run_id in self._costs else self._store.cost(run_id)

    def phase_costs(self, run_id: str) -> list[Any]:
        return self._phases[run_id] if run_id in self._phases else self._store.phase_costs(run_id)

    def artifacts(self, run_id: str | None = None) -> list[Any]:
        if run_id is not None and run_id in self._artifacts:
            return self._artifacts[run_id]
        return self._store.artifacts(run_id)

    def artifact(self, run_id: str, name: str) -> Any:
        for a in self.artifacts(run_id):
            if a.name == name:
                return a
        return self._store.artifact(run_id, name)

    def read_bytes(self, run_id: str, name: str) -> bytes:
        return verified_bytes(self.artifact(run_id, name), run_id)

    def read_json(self, run_id: str, name: str) -> Any:
        return verified_json(self.artifact(run_id, name), run_id)

    def list_runs(self, *, kind: str | None = None, status: str | None = None) -> list[RunRecord]:
        key = (kind, status)
        if key not in self._lists:
            self._lists[key] = self._store.list_runs(kind=kind, status=status)
        return self._lists[key]


def _front_spread(fr: Frontier) -> set[str]:
    """The runs of a front that get per-run figures: all of a short front, else ``FOCUS_PER_FRONT`` of them
    spread along it (its two ends and the knee among them)."""
    import numpy as np

    front = np.flatnonzero(fr.on_front)
    if len(front) > FOCUS_PER_FRONT:
        order = front[np.argsort(fr.values[front, 0], kind="stable")]
        picked = {int(order[k]) for k in np.linspace(0, len(order) - 1, FOCUS_PER_FRONT - 1).round().astype(int)}
        if fr.knee is not None:
            picked.add(int(fr.knee))
        front = np.array(sorted(picked))
    return {fr.runs[i].id for i in front}


def _cost_groups(runs: list[RunRecord], costs: dict[str, Any]) -> tuple[str, list[str], list[Any]]:
    """The cost chart's bars: one per run, or beyond ``COST_BARS`` runs the sum per name (per kind beyond
    ``COST_BARS`` names), so its labels stay readable however many runs there are."""
    if len(runs) <= COST_BARS:
        return "cost per run", [f"{r.name} [{r.id[:6]}]" for r in runs], [costs[r.id] for r in runs]
    by = "name" if len({r.name for r in runs}) <= COST_BARS else "kind"
    groups: dict[str, list[Any]] = {}
    for r in runs:
        groups.setdefault(getattr(r, by), []).append(costs[r.id])
    labels, totals = [], []
    for key, cs in sorted(groups.items(), key=lambda kv: -sum(c.co2_g for c in kv[1])):
        total = CostRecord(wall_s=sum(c.wall_s for c in cs), cpu_s=sum(c.cpu_s for c in cs),
                           peak_rss_mb=max(c.peak_rss_mb for c in cs), energy_kwh=sum(c.energy_kwh for c in cs),
                           co2_g=sum(c.co2_g for c in cs), segments=sum(c.segments for c in cs))
        labels.append(f"{key} ({len(cs)} runs)")
        totals.append(total)
    return f"total cost per {by} ({len(runs)} runs)", labels, totals


def _write_into(out: Path, store: Store, runs: list[RunRecord], title: str, chosen: set[str],
                total: int | None = None) -> None:
    rstore = _ReportStore(store, runs)
    done = [r for r in runs if r.status == "done"]
    finals = rstore.final_metrics([r.id for r in runs])
    page = _Page(out)
    sections: list[str] = []

    # frontiers: every run of the scope is a point
    plots, front_ids, spread_ids = [], set(), set()
    domains = sorted({r.kind.split(".", 1)[0] for r in runs})
    for x, y in _auto_pairs({r.id: finals.get(r.id, {}) for r in done}, domains):
        try:
            fr: Frontier = build_frontier(rstore, [x, y], runs=done)  # type: ignore[arg-type]
        except UserError:
            continue
        front_ids |= {r.id for r, on in zip(fr.runs, fr.on_front, strict=True) if on}
        spread_ids |= _front_spread(fr)
        plots.append(page.figure(frontier_figure(fr), f"{x} vs {y}", frontier_png(fr),
                                 note=f"{len(fr.runs)} runs, {int(fr.on_front.sum())} on the front (diamonds)"))
    if plots:
        sections.append(f'<section id="frontiers"><h2>Frontiers</h2><div class="grid">{"".join(plots)}</div></section>')

    # the runs that get per-run figures
    if len(runs) <= FOCUS_ALL:
        focus_ids: set[str] | None = None
    else:
        focus_ids = spread_ids | chosen
        newest: dict[str, int] = {}
        for r in reversed(done):
            if newest.get(r.kind, 0) < FOCUS_PER_KIND:
                newest[r.kind] = newest.get(r.kind, 0) + 1
                focus_ids.add(r.id)

    # run table: the runs in focus first, then the newest
    metric_cols = sorted({k for r in runs for k in finals.get(r.id, {}) if not k.startswith("train.")})
    headers = ["run", "name", "kind", "status", "seed", "quick", "started", *metric_cols]
    rows, classes = [], []
    ordered = runs if focus_ids is None else (
        [r for r in reversed(runs) if r.id in focus_ids] + [r for r in reversed(runs) if r.id not in focus_ids])
    for r in ordered:
        m = finals.get(r.id, {})
        rows.append([r.id, r.name, r.kind, r.status, r.seed, "yes" if r.quick else "no",
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)),
                     *[m[c].value if c in m else None for c in metric_cols]])
        classes.append(f"status-{r.status}" + (" front" if r.id in front_ids else ""))
    scope_note = "" if total is None or total == len(runs) else (
        f" The report shows {len(runs)} of the store's {total} runs (the newest, or those the options chose).")
    sections.append(f'<section id="runs"><h2>Runs ({len(runs)})</h2><p class="note">Click a column to sort. '
                    f'Metrics are each run\'s last logged value. Bold: on a front.{esc(scope_note)}</p>'
                    f'{_table(headers, rows, row_class=classes)}</section>')

    # costs
    if runs:
        costs = {r.id: rstore.cost(r.id) for r in runs}
        chart, labels, bars = _cost_groups(runs, costs)
        methods = sorted({c.method for c in costs.values() if c.method})
        note = ("Energy measured by " + "; ".join(methods) + ". Without hardware counters CPU power is an estimate "
                "from rated power and load.") if methods else ""
        sections.append('<section id="costs"><h2>Costs</h2>'
                        + page.figure(cost_figure(labels, bars), chart, cost_png(labels, bars), note=note)
                        + "</section>")

    # domain sections
    for name, (sec_title, fn) in report_sections(domains).items():
        try:
            with focusing(focus_ids):
                mine = focus(runs) if is_per_run(name) else runs
                blocks: list[Block] = fn(rstore, mine) or [] if mine else []
        except CorruptArtifact as e:  # say so in the page rather than drop the section silently
            blocks = [Block(title="a stored artifact is corrupt", note=f"{e.line()}. This section is left out; "
                            "re-run the run (or restore the file) to show it.")]
        if not blocks:
            continue
        body = []
        for b in blocks:
            if b.figure is not None:
                body.append(page.figure(b.figure, b.title, b.png, note=b.note))
            elif b.png is not None:
                name = page.png(b.png, b.slug or b.title)
                body.append(f'<div><h3>{esc(b.title)}</h3><p class="note">{esc(b.note)}</p>'
                            f'<img alt="{esc(b.title)}" src="data:image/png;base64,{base64.b64encode(b.png).decode()}">'
                            f' <a class="note" href="{esc(name)}">PNG</a></div>')
            elif b.table is not None:
                body.append(f'<div><h3>{esc(b.title)}</h3><p class="note">{esc(b.note)}</p>'
                            f'{_table(list(b.table[0]), [list(r) for r in b.table[1]])}</div>')
            elif b.html is not None:
                body.append(f"<div><h3>{esc(b.title)}</h3>{b.html}</div>")
            elif b.note:
                body.append(f'<div><h3>{esc(b.title)}</h3><p class="note">{esc(b.note)}</p></div>')
        sections.append(f'<section><h2>{esc(sec_title)}</h2><div class="grid">{"".join(body)}</div></section>')

    # each figure's data is a JSON element, drawn when its place comes near the screen: a page of many
    # figures opens as fast as a page of one
    data = "\n".join(f'<script type="application/json" id="data-{div}">{spec}</script>' for div, spec in page.figures)
    scripts = DRAW_JS
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{CSS}</style>
<script>{get_plotlyjs()}</script></head>
<body><header><h1>{esc(title)}</h1><p>{len(runs)} runs from {esc(store.url)} &middot; generated
{esc(time.strftime("%Y-%m-%d %H:%M:%S"))}</p></header><main>
{"".join(sections) if runs else "<section><p>No runs yet: try <code>poise tour --quick</code>.</p></section>"}
</main>{data}<script>{SORT_JS}
{scripts}</script></body></html>"""
    (out / "index.html").write_text(doc, encoding="utf-8")
