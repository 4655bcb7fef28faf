"""Many runs: `runs ls` filters and bad input, the final-metrics table, the schema 2 → 3 and 3 → 4
migrations, config filters read from a column without parsing configs, and the report's scope (per-run
figures only for runs in focus) — checked in headless Chromium for a few hundred runs."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from poise.report import Block, report_section, write_report
from poise.report.html import TABLE_EAGER
from poise.store import CostRecord, Store


def make_runs(store: Store, specs: list[dict]) -> list[str]:
    """Runs from ``{kind, name, status, config, started, metrics}`` dicts, with the given start times."""
    ids = []
    for i, s in enumerate(specs):
        rid = store.create_run(kind=s.get("kind", "vision.erm"), name=s.get("name", f"run-{i}"),
                               config=s.get("config", {}), config_hash=f"{i:064d}", seed=i)
        if s.get("metrics"):
            store.log_metrics(rid, s["metrics"])
        store.set_status(rid, s.get("status", "done"))
        with store.engine.begin() as c:
            c.execute(sa.text("UPDATE runs SET started = :t, ended = :t + 1 WHERE id = :id"),
                      {"t": s.get("started", 1_000_000.0 + i), "id": rid})
        ids.append(rid)
    return ids


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> str:
    """A SQLite file, or a fresh PostgreSQL database (tests/pg.py)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / '.poise' / 'poise.db'}"
    return request.getfixturevalue("pg_url")


# --------------------------------------------------------------------------- runs ls


def _ls(cli, *args: str) -> list[dict]:
    code, out, err = cli("--json", "runs", "ls", *args)
    assert code == 0, err
    return json.loads(out)


def test_runs_ls_filters_newest_and_count(store, cli):
    now = time.time()
    specs = [{"kind": "vision.erm", "name": f"erm-{i}", "config": {"train": {"lr": 0.01 * (i + 1)}},
              "started": now - 86400 * (10 - i)} for i in range(8)]
    specs += [{"kind": "control.agent", "name": "sac", "status": "failed", "started": now - 60}]
    ids = make_runs(store, specs)
    store.set_study(ids[3], "s1")
    assert [r["id"] for r in _ls(cli)] == ids  # --json: every run, oldest first
    assert [r["id"] for r in _ls(cli, "-n", "2")] == ids[-2:]  # the newest two
    assert [r["id"] for r in _ls(cli, "--kind", "vision.*")] == ids[:8]
    assert [r["id"] for r in _ls(cli, "--name", "erm-[12]")] == ids[1:3]
    assert [r["id"] for r in _ls(cli, "--status", "failed")] == ids[8:]
    assert [r["id"] for r in _ls(cli, "--study", "s1")] == [ids[3]]
    assert [r["id"] for r in _ls(cli, "--since", "3.5d")] == ids[-2:]
    day = time.strftime("%Y-%m-%d", time.localtime(now - 86400 * 2.5))
    midnight = time.mktime(time.strptime(day, "%Y-%m-%d"))
    expected = [i for i, s in zip(ids, specs, strict=True) if s["started"] >= midnight]
    assert [r["id"] for r in _ls(cli, "--since", day)] == expected
    assert [r["id"] for r in _ls(cli, "--filter", "config.train.lr>0.055")] == ids[5:8]
    assert [r["id"] for r in _ls(cli, "--filter", "config.train.lr>0.015", "-n", "2")] == ids[6:8]
    # the table: the newest 50 by default, and a count line
    code, out, _ = cli("runs", "ls", "-n", "3")
    assert code == 0 and "3 of 9 runs shown" in out and "erm-0" not in out and "sac" in out
    code, out, _ = cli("runs", "ls", "--kind", "vision.*", "--filter", "config.train.lr<0.025")
    assert code == 0 and "2 of 2 runs shown" in out
    code, out, _ = cli("runs", "ls", "--all")
    assert code == 0 and all(f"erm-{i}" in out for i in range(8)) and "9 of 9 runs shown" in out


@pytest.mark.parametrize("args,expected", [
    (["--filter", "colour=red"], "unknown filter key 'colour'"),
    (["--filter", "config.train.lr>fast"], "expected a number after '>'"),
    (["--filter", "=x"], "expected a field before '='"),
    (["--filter", "kind"], "expected KEY=VALUE"),
    (["--since", "yesterday"], "expected an ISO date"),
    (["--since", "3x"], "expected an ISO date"),
    (["--status", "weird"], "unknown status"),
    (["-n", "0"], "expected a positive number"),
])
def test_runs_ls_bad_input_is_one_line_exit_2(store, cli, args, expected):
    make_runs(store, [{"name": "a"}])
    code, out, err = cli("runs", "ls", *args)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_report_and_frontier_reject_bad_filters(store, cli, tmp_path):
    make_runs(store, [{"metrics": [("clean_acc", "utility", "max", 1, 0.5), ("pgd_acc", "robustness", "max", 1, 0.2)]}])
    for args in (["report", "-o", str(tmp_path / "r"), "--filter", "nope=1"], ["report", "--since", "soon"],
                 ["frontier", "--x", "utility.clean_acc", "--y", "robustness.pgd_acc", "--filter", "x>1"]):
        code, _, err = cli(*args)
        assert code == 2 and len(err.strip().splitlines()) == 1, (args, err)


# --------------------------------------------------------------------------- the final-metrics table


def _scanned(store: Store, ids: list[str] | None = None) -> dict[str, dict[str, tuple[int, float]]]:
    out: dict[str, dict[str, tuple[int, float]]] = {}
    for m in store.metrics(ids):
        cur = out.setdefault(m.run_id, {}).get(m.key)
        if cur is None or m.step >= cur[0]:
            out[m.run_id][m.key] = (m.step, m.value)
    return out


def _table(store: Store) -> dict[str, dict[str, tuple[int, float]]]:
    return {rid: {k: (m.step, m.value) for k, m in ms.items()} for rid, ms in store.final_metrics().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[r].keys() == b[r].keys() and all(a[r][k][0] == b[r][k][0] and (
            a[r][k][1] == b[r][k][1] or (math.isnan(a[r][k][1]) and math.isnan(b[r][k][1]))) for k in a[r])
        for r in a)


NAMES = {"loss": "train", "clean_acc": "utility", "pgd_acc": "robustness"}
row = st.tuples(st.sampled_from(sorted(NAMES)), st.integers(0, 20),
                st.one_of(st.floats(-1e6, 1e6), st.just(math.nan), st.just(math.inf)))


@settings(max_examples=40)
@given(batches=st.lists(st.tuples(st.integers(0, 2), st.lists(row, max_size=8)), max_size=12))
def test_final_metrics_table_equals_scanning_the_log(shared_store, batches):
    """Batches of rows in any order, steps repeated or going back: the table is the scan's answer."""
    store = shared_store
    ids = [store.create_run(kind="vision.erm", name=f"r{i}", config={}, config_hash="h", seed=0) for i in range(3)]
    for i, rows in batches:  # batches in any order, steps repeated or going back
        store.log_metrics(ids[i], [(n, NAMES[n], "max", s, v) for n, s, v in rows])
    table = {rid: {k: (m.step, m.value) for k, m in ms.items()} for rid, ms in store.final_metrics(ids).items()}
    assert _same(table, _scanned(store, ids))
    some = store.final_metrics([ids[0]], names=["utility.clean_acc", "train.clean_acc"])
    assert set(some.get(ids[0], {})) <= {"utility.clean_acc"}


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    store = Store(root=tmp_path_factory.mktemp("shared") / ".poise")
    yield store
    store.close()


def test_metric_series_thins_a_long_log(store_url, tmp_path):
    store = Store(store_url, root=tmp_path / ".poise")
    rid = make_runs(store, [{}])[0]
    store.log_metrics(rid, [("loss", "train", "min", s, float(s)) for s in range(10_000)])
    pts = store.metric_series(rid, "loss", max_points=500)
    steps = [p.step for p in pts]
    assert 400 <= len(pts) <= 501 and steps[0] == 0 and steps[-1] == 9_999 and steps == sorted(steps)
    assert len(store.metric_series(rid, "loss")) == 10_000
    store.close()


# --------------------------------------------------------------------------- migration 2 → 3


def _downgrade_to_schema_3(store: Store) -> None:
    """The tables of schema 3 (poise before the eval_split column): no eval_split column nor its index."""
    with store.engine.begin() as c:
        c.exec_driver_sql("DROP INDEX IF EXISTS ix_runs_eval_split")
        c.exec_driver_sql("ALTER TABLE runs DROP COLUMN eval_split")
        c.exec_driver_sql("UPDATE poise_schema SET value = '3' WHERE key = 'version'")


def _downgrade_to_schema_2(store: Store) -> None:
    """The tables of schema 2 (poise before the final-metrics table): no study column, no run indexes."""
    _downgrade_to_schema_3(store)
    with store.engine.begin() as c:
        for ix in ("ix_runs_started", "ix_runs_status_started", "ix_runs_kind", "ix_runs_study", "ix_runs_parent_id"):
            c.exec_driver_sql(f"DROP INDEX IF EXISTS {ix}")
        c.exec_driver_sql("DROP TABLE final_metrics")  # its index goes with it
        c.exec_driver_sql("ALTER TABLE runs DROP COLUMN study")
        c.exec_driver_sql("UPDATE poise_schema SET value = '2' WHERE key = 'version'")


def test_migration_from_schema_2_fills_the_final_metrics_table(tmp_path, store_url):
    root = tmp_path / ".poise"
    old = Store(store_url, root=root)
    ids = make_runs(old, [{"metrics": [("loss", "train", "min", s, 10.0 - s) for s in range(5)]
                           + [("clean_acc", "utility", "max", 3, 0.5), ("clean_acc", "utility", "max", 9, 0.7),
                              ("pgd_acc", "robustness", "max", 9, math.nan)]} for _ in range(3)])
    expected = _scanned(old)
    _downgrade_to_schema_2(old)
    old.close()
    store = Store(store_url, root=root)  # migrates
    try:
        insp = sa.inspect(store.engine)
        assert "study" in {c["name"] for c in insp.get_columns("runs")}
        assert {"ix_runs_started", "ix_runs_study"} <= {i["name"] for i in insp.get_indexes("runs")}
        with store.engine.connect() as c:
            assert c.exec_driver_sql("SELECT value FROM poise_schema WHERE key='version'").scalar() == "4"
        assert _same(_table(store), expected)
        assert store.final_metrics([ids[0]])[ids[0]]["utility.clean_acc"].value == 0.7
        store.log_metrics(ids[0], [("clean_acc", "utility", "max", 12, 0.8)])  # kept up to date after it
        assert store.final_metrics([ids[0]])[ids[0]]["utility.clean_acc"].value == 0.8
        assert [r.id for r in store.iter_runs()] == ids
    finally:
        store.close()


# --------------------------------------------------------------------------- migration 3 → 4, config columns

CONFIGS = [{"eval_split": "val"}, {"eval_split": "test"}, {}, {"eval_split": 3}, {"eval_split": None},
           {"train": {"eval_split": "val"}}, {"eval_split": "VAL", "note": '"eval_split"'}, {"eval_split": "v" * 40}]
SPLITS = ["val", "test", None, None, None, None, "VAL", None]  # the column: a short string value, else NULL


def _splits(store: Store, ids: list[str]) -> list[str | None]:
    with store.engine.connect() as c:
        got = dict(c.exec_driver_sql("SELECT id, eval_split FROM runs").fetchall())
    return [got[i] for i in ids]


def test_migration_from_schema_3_fills_the_eval_split_column(tmp_path, store_url):
    from poise.frontier import build_frontier

    root = tmp_path / ".poise"
    old = Store(store_url, root=root)
    m = [("clean_acc", "utility", "max", 1, 0.5), ("pgd_acc", "robustness", "max", 1, 0.5)]
    ids = make_runs(old, [{"config": c, "metrics": m} for c in CONFIGS])
    assert _splits(old, ids) == SPLITS  # written with the run
    _downgrade_to_schema_3(old)
    old.close()
    store = Store(store_url, root=root)  # migrates
    try:
        assert "ix_runs_eval_split" in {i["name"] for i in sa.inspect(store.engine).get_indexes("runs")}
        with store.engine.connect() as c:
            assert c.exec_driver_sql("SELECT value FROM poise_schema WHERE key='version'").scalar() == "4"
        assert _splits(store, ids) == SPLITS
        objectives = ["utility.clean_acc", "robustness.pgd_acc"]
        assert [r.id for r in build_frontier(store, objectives).runs] == [ids[i] for i in (1, 2, 3, 4, 5, 7)]
        assert [r.id for r in build_frontier(store, objectives, filters=["config.eval_split=v*"]).runs] == [
            ids[0], ids[6], ids[7]]
        assert [r.id for r in build_frontier(store, objectives, filters=["config.eval_split>1"]).runs] == [ids[3]]
        assert store.find_done("0" * 64, eval_split="val").id == ids[0]
    finally:
        store.close()


def test_frontier_parses_no_config_when_the_column_answers(store, monkeypatch):
    """The default filter (tuning runs left out) reads eval_split from its column: no config text is read
    or parsed, except where the column is empty and the config names the field (not a string, or nested)."""
    from poise import store as store_mod
    from poise.frontier import build_frontier

    m = [("clean_acc", "utility", "max", 1, 0.5), ("pgd_acc", "robustness", "max", 1, 0.5)]
    ids = make_runs(store, [{"config": c, "metrics": m} for c in CONFIGS])
    parsed: list[str] = []
    loads = store_mod.json.loads
    monkeypatch.setattr(store_mod.json, "loads", lambda t, *a, **k: parsed.append(t) or loads(t, *a, **k))
    seen = []
    by_id = store.runs_by_id
    monkeypatch.setattr(store, "runs_by_id", lambda *a, **k: seen.extend(out := by_id(*a, **k)) or out)
    fr = build_frontier(store, ["utility.clean_acc", "robustness.pgd_acc"])
    assert [r.id for r in fr.runs] == [ids[i] for i in (1, 2, 3, 4, 5, 7)]
    read = {r.id for r in seen if r.config_text is not None}
    assert read == {ids[3], ids[4], ids[5], ids[7]}  # eval_split 3, null, train.eval_split, a long string
    assert len(parsed) == 4


@settings(max_examples=30, deadline=None)
@given(configs=st.lists(st.sampled_from(CONFIGS + [{"eval_split": "test", "train": {"lr": 0.1}}]), min_size=1,
                        max_size=6),
       filters=st.lists(st.sampled_from(["config.eval_split=val", "config.eval_split!=test", "config.eval_split=V*",
                                         "config.eval_split=null", "config.eval_split>1", "config.train.lr>0.05",
                                         "config.train.eval_split=val", "kind=vision.*"]), max_size=2))
def test_filters_read_from_columns_match_parsing_the_config(shared_store, configs, filters):
    """A listing and a frontier give what matching each run's parsed config gives."""
    from types import SimpleNamespace

    from poise.filters import config_paths, match_run, parse_filters
    from poise.frontier import build_frontier

    store = shared_store
    tag = f"t{len(store.metric_keys())}"
    m = [(f"{tag}u", "utility", "max", 1, 0.5), (f"{tag}r", "robustness", "max", 1, 0.5)]
    ids = make_runs(store, [{"config": c, "metrics": m} for c in configs])
    parsed = parse_filters(filters)
    reference = [r.id for r in store.runs_full(ids)
                 if match_run(SimpleNamespace(config=r.config, kind=r.kind), parsed)]
    listed = [r.id for r in store.iter_runs(with_config=True, config_keys=config_paths(parsed))
              if r.id in ids and match_run(r, parsed)]
    assert listed == reference
    if not any(k == "config.eval_split" for k, _, _ in parsed):
        parsed.append(("config.eval_split", "!=", "val"))
    expected = [r.id for r in store.runs_full(ids) if match_run(SimpleNamespace(config=r.config, kind=r.kind), parsed)]
    try:
        got = [r.id for r in build_frontier(store, [f"utility.{tag}u", f"robustness.{tag}r"], filters=filters).runs]
    except Exception as e:  # no run left: a UserError
        assert type(e).__name__ == "UserError" and not expected
    else:
        assert got == expected


# --------------------------------------------------------------------------- the report's scope

SEEN: dict[str, list[str]] = {}


@report_section("test.per_run", "per-run test section", per_run=True)
def _per_run(store, runs):
    SEEN["per_run"] = [r.id for r in runs]
    return [Block("x", note="per run")]


@report_section("test.aggregate", "aggregate test section")
def _aggregate(store, runs):
    SEEN["aggregate"] = [r.id for r in runs]
    return []


def _frontier_store(store: Store, n: int) -> list[str]:
    """``n`` runs on a trade-off: run i has clean accuracy i/n and robust accuracy (n-i)/n minus a dent, so
    only the even runs are on the front."""
    specs = []
    for i in range(n):
        dent = 0.0 if i % 2 == 0 else 0.3
        specs.append({"kind": "vision.erm" if i % 3 else "vision.pgd_at", "name": f"r{i % 7}",
                      "metrics": [("clean_acc", "utility", "max", 1, i / n), ("pgd_acc", "robustness", "max", 1,
                                                                               (n - i) / n - dent)]})
    ids = make_runs(store, specs)
    for rid in ids:
        store.record_cost(rid, 0, CostRecord(wall_s=1, cpu_s=1, peak_rss_mb=10, energy_kwh=1e-6, co2_g=1e-3,
                                             method="test"))
    return ids


def test_report_per_run_figures_only_for_runs_in_focus(store, tmp_path):
    ids = _frontier_store(store, 60)
    write_report(store, tmp_path / "rep", select=[ids[1][:8]])
    front = {ids[i] for i in range(0, 60, 2)}
    newest = {ids[59], ids[58], ids[57], ids[54]}  # the two newest of each kind
    assert set(SEEN["aggregate"]) == set(ids)
    per_run = set(SEEN["per_run"])
    assert ids[1] in per_run and newest <= per_run <= front | {ids[1]} | newest | {ids[59]}
    # a long front: 8 of its runs spread along it (both ends among them), plus the newest
    assert {ids[0], ids[58]} <= per_run and 8 <= len(per_run & (front | {ids[59]})) <= 8 + 2
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "total cost per name (60 runs)" in html  # 60 runs: the cost chart sums them by name
    # the scope: the newest N, and filters
    SEEN.clear()
    write_report(store, tmp_path / "rep2", limit=10)
    assert SEEN["aggregate"] == ids[-10:]
    assert "Runs (10)" in (tmp_path / "rep2" / "index.html").read_text()
    SEEN.clear()
    write_report(store, tmp_path / "rep3", kind="vision.pgd_at", limit=None)
    assert SEEN["aggregate"] == [rid for i, rid in enumerate(ids) if i % 3 == 0]


def test_a_small_report_draws_every_run(store, tmp_path):
    ids = _frontier_store(store, 6)
    write_report(store, tmp_path / "rep")
    assert SEEN["per_run"] == ids


@pytest.mark.browser
def test_report_of_hundreds_of_runs_opens_in_headless_chromium(store, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.spine.test_report import _chromium

    ids = _frontier_store(store, 300)
    path = write_report(store, tmp_path / "rep")
    assert path.stat().st_size < 20e6
    browser = _chromium()
    try:
        t0 = time.perf_counter()
        browser.get(path.resolve().as_uri())
        WebDriverWait(browser, 60).until(
            lambda b: b.execute_script("return document.querySelectorAll('#fig0 path.point').length") > 0)
        took = time.perf_counter() - t0
        assert browser.execute_script("return document.querySelectorAll('#fig0 path.point').length") == len(ids)
        # the table's first TABLE_EAGER rows are in the page, the others come as it is scrolled to its end
        rows = "return document.querySelectorAll('#runs tbody tr').length"
        assert browser.execute_script(rows) == TABLE_EAGER < len(ids)
        browser.execute_script("var s = document.querySelector('#runs div.scroll'); s.scrollTop = s.scrollHeight")
        WebDriverWait(browser, 10).until(lambda b: b.execute_script(rows) == len(ids))
        # figures further down are drawn when they come near the screen
        last = "var p = document.querySelectorAll('div.plot'); return p[p.length - 1]"
        assert browser.execute_script(last + ".getAttribute('data-drawn')") is None
        browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        WebDriverWait(browser, 60).until(lambda b: b.execute_script(last + ".querySelector('.main-svg') !== null"))
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
        assert took < 20, took  # 5 s on an idle machine; a margin for a loaded one
    finally:
        browser.quit()


@pytest.mark.browser
def test_a_frontier_of_many_runs_is_drawn_with_webgl(store, tmp_path, monkeypatch):
    """Beyond MAX_SVG_POINTS runs a frontier's markers are a scattergl trace (lowered here to 100 runs): every
    run is still a point, on a WebGL canvas, with no error in the console."""
    from selenium.webdriver.support.ui import WebDriverWait

    from poise.report import figures
    from tests.spine.test_report import _chromium

    ids = _frontier_store(store, 150)
    monkeypatch.setattr(figures, "MAX_SVG_POINTS", 100)
    path = write_report(store, tmp_path / "rep")
    text = path.read_text()
    assert '"type":"scattergl"' in text
    browser = _chromium()
    try:
        browser.get(path.resolve().as_uri())
        points = ("var d = document.getElementById('fig0')._fullData; return d ? d.filter(t => t.type === "
                  "'scattergl').reduce((n, t) => n + t._length, 0) : 0")
        WebDriverWait(browser, 60).until(lambda b: b.execute_script(points) > 0)
        assert browser.execute_script(points) == len(ids)
        assert browser.execute_script("return document.querySelectorAll('#fig0 canvas').length") > 0
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        browser.quit()


@pytest.mark.browser
def test_sorting_a_long_table_sorts_every_row(store, tmp_path):
    """A sort brings in the rows not yet added (the table was not scrolled) and orders them all."""
    from tests.spine.test_report import _chromium

    ids = _frontier_store(store, TABLE_EAGER + 30)
    path = write_report(store, tmp_path / "rep")
    browser = _chromium()
    try:
        browser.get(path.resolve().as_uri())
        seeds = "Array.from(document.querySelectorAll('#runs tbody tr')).map(tr => tr.cells[4].textContent)"
        assert len(browser.execute_script(f"return {seeds}")) == TABLE_EAGER
        browser.execute_script("document.querySelectorAll('#runs th')[4].click()")  # the seed column
        assert browser.execute_script(f"return {seeds}") == [str(i) for i in range(len(ids))]
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        browser.quit()


def test_listing_reads_no_config_unless_a_filter_needs_it(store):
    make_runs(store, [{"config": {"a": 1}}, {"config": {"a": 2}}])
    rows = list(store.iter_runs())
    assert all(r.config_text is None for r in rows)
    rows = list(store.iter_runs(with_config=True, newest_first=True, batch=1))
    assert [r.config["a"] for r in rows] == [2, 1]



def test_frontier_reads_configs_only_where_a_filter_needs_them(store):
    from poise.frontier import build_frontier

    m = [("clean_acc", "utility", "max", 1, 0.5), ("pgd_acc", "robustness", "max", 1, 0.5)]
    ids = make_runs(store, [{"metrics": m}, {"metrics": m, "config": {"eval_split": "val"}},
                            {"metrics": m, "config": {"train": {"lr": 0.1}, "eval_split": "test"}}])
    objectives = ["utility.clean_acc", "robustness.pgd_acc"]
    assert [r.id for r in build_frontier(store, objectives).runs] == [ids[0], ids[2]]  # tuning runs left out
    assert [r.id for r in build_frontier(store, objectives, filters=["config.train.lr>0.05"]).runs] == [ids[2]]
    assert [r.id for r in build_frontier(store, objectives, filters=["config.eval_split=val"]).runs] == [ids[1]]
