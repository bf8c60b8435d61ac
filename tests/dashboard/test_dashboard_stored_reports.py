"""The reports the server made on its own, listed and downloaded from the dashboard's report card (issue 17: "kept
on the server, listed and downloadable from the dashboard"), in a real headless Chromium against a running server
whose ``[reports.schedule]`` made the month's and the quarter's reports that ended just after it was installed (its
clock starts at 2025-03-31 23:59:00, at twice the speed; a period that ended before a server's first counted hour is not made, decision
035): each row is what ``GET /api/v1/reports/stored`` lists, and the download button saves the kept file's bytes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dashboard.cdp import Browser
from tests.dashboard.conftest import running
from tests.fleet import Server, wait_for

SCHEDULE = """
[reports]
dir = "reports"
[reports.schedule]
monthly = true
quarterly = true
delay_h = 0
interval_s = 1
formats = ["csv", "html"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # the first counted hour is 23:00 if the server is up within 30 s (a loaded box), and March ends 30 s after
    clock = {"speed": 2.0, "start": "2025-03-31T23:59:00+08:00", "anchor": time.time()}
    with running(tmp_path_factory.mktemp("stored"), clock=clock, extra=SCHEDULE) as (_pki, _broker, srv):
        wait_for(lambda: len(srv.get("/api/v1/reports/stored", role="viewer").json()["items"]) == 4, 90,
                 "March's and 2025Q1's reports made")
        yield srv


def test_the_report_card_lists_and_downloads_the_kept_reports(server: Server, tmp_path: Path) -> None:
    kept = server.get("/api/v1/reports/stored", role="viewer").json()["items"]
    b = Browser()
    try:
        b.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(tmp_path))
        b.goto(f"{server.url}/dashboard/#/login")
        b.ready("login")
        b.eval(f"document.getElementById('token').value = {server.token('viewer')!r}")
        b.click("#sign-in")
        b.ready("fleet")
        b.wait("document.querySelectorAll('#stored-reports tbody tr').length > 0", timeout=20, what="the kept reports")
        rows = b.eval("[...document.querySelectorAll('#stored-reports tbody tr')].map(r => "
                      "[r.dataset.name, ...[...r.querySelectorAll('td')].slice(0, 2).map(td => td.textContent)])")
        assert rows == [[r["name"], r["period"], r["format"].upper()] for r in kept], (rows, kept)
        assert "暂无" not in b.text("#stored-reports")

        month_csv = next(r for r in kept if r["kind"] == "month" and r["format"] == "csv")
        b.click(f'#stored-reports button[data-stored="{month_csv["name"]}"]')
        b.wait(f"document.getElementById('report-status').textContent === {month_csv['name']!r}", timeout=20,
               what="the download")
        path = tmp_path / month_csv["name"]
        deadline = time.monotonic() + 20
        while not (path.exists() and path.stat().st_size and not (tmp_path / (path.name + ".crdownload")).exists()):
            assert time.monotonic() < deadline, [p.name for p in tmp_path.iterdir()]
            time.sleep(0.1)
        got = path.read_bytes()
        assert hashlib.sha256(got).hexdigest() == month_csv["sha256"] and len(got) == month_csv["bytes"]
        assert got == server.get(month_csv["url"], role="viewer").content
    finally:
        b.close()
