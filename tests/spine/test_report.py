"""The HTML report: self-contained, escaped, one marker per run — checked in headless Chromium too."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from poise.report import write_report
from poise.store import CostRecord

EVIL = "<script>alert(1)</script>"


def fill(store, n=4):
    ids = []
    for i in range(n):
        name = EVIL if i == 0 else f"run-{i}"
        rid = store.create_run(kind="vision.erm" if i % 2 else "vision.pgd_at", name=name,
                               config={"train": {"lr": 0.1 * (i + 1), "budget": {"steps": 10},
                                                 "schedule": {"name": "uba"}},
                                       "note": EVIL}, config_hash=f"{i:064d}", seed=i)
        store.log_metrics(rid, [("clean_acc", "utility", "max", 10, 0.9 - 0.1 * i),
                                ("co2_g", "cost", "min", 10, 0.01 * (n - i)),
                                ("loss", "train", "min", 1, 2.0)])
        store.record_cost(rid, 0, CostRecord(wall_s=1 + i, cpu_s=1, peak_rss_mb=100, energy_kwh=1e-5 * (i + 1),
                                             co2_g=1e-3 * (i + 1), method="codecarbon test"))
        store.set_status(rid, "done")
        ids.append(rid)
    return ids


def test_report_is_self_contained_and_escaped(store, tmp_path):
    fill(store)
    path = write_report(store, tmp_path / "rep")
    html = path.read_text()
    assert "<script src" not in html and "http://" not in html.split("<script>")[0]
    assert EVIL not in html  # never raw, anywhere (tables, hover text, JSON)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert (tmp_path / "rep" / "utility-clean-acc-vs-cost-co2-g.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "rep" / "cost-per-run.png").exists()
    assert "codecarbon test" in html


def test_empty_store_still_writes_a_page(store, tmp_path):
    path = write_report(store, tmp_path / "empty")
    assert "poise tour --quick" in path.read_text()


def test_report_cli_and_bad_output(cli, tmp_path):
    (tmp_path / "file").write_text("x")
    code, out, err = cli("report", "-o", str(tmp_path / "file"))
    assert code == 2 and "expected a folder" in err


def _chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    assert binary and driver, "Debian's chromium and chromium-driver are needed (.ci/run installs them)"
    opts = Options()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


@pytest.mark.browser
def test_report_in_headless_chromium(store, tmp_path: Path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.support.ui import WebDriverWait

    ids = fill(store, n=5)
    path = write_report(store, tmp_path / "rep")
    browser = _chromium()
    try:
        browser.get(path.resolve().as_uri())
        WebDriverWait(browser, 60).until(
            lambda b: b.execute_script("return document.querySelectorAll('#fig0 path.point').length") > 0)
        markers = browser.execute_script(
            "return document.querySelectorAll('#fig0 .scatterlayer .trace path.point').length")
        assert markers == len(ids)
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018
        cells = browser.execute_script(
            "return Array.from(document.querySelectorAll('#runs td')).map(td => td.textContent)")
        assert EVIL in cells
        assert browser.execute_script("return document.querySelectorAll('#runs script').length") == 0
        # sorting the table by a column reorders the rows
        first = browser.execute_script("return document.querySelector('#runs tbody tr td').textContent")
        browser.execute_script("document.querySelectorAll('#runs th')[1].click()")
        browser.execute_script("document.querySelectorAll('#runs th')[1].click()")
        after = browser.execute_script("return document.querySelector('#runs tbody tr td:nth-child(2)').textContent")
        assert after == "run-4" and first
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        browser.quit()
