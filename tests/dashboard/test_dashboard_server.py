"""The dashboard's server self-inspection page (issue 17) in a real headless Chromium, against a running server
whose CA holds a terminal certificate with 20 days left and whose database was backed up by the operator's
command: what a person sees equals GET /api/v1/server/inspection."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.enroll import make_key_and_csr
from tests.dashboard.cdp import Browser, chromium_path
from tests.dashboard.conftest import shots_dir
from tests.fleet import Broker, Pki, Server

SN = "HN47000001"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if chromium_path() is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; ./dev installs it)")
    root = tmp_path_factory.mktemp("inspect")
    pki = Pki(root / "pki")
    _k, csr = make_key_and_csr(SN, root / "t")
    pki.ca.sign_csr(csr.read_bytes(), 20)
    broker = Broker(pki, root / "broker").start()
    s = Server(pki, broker, root / "server", extra=f'[pki]\nca_dir = "{pki.dir}"\n').start()
    r = subprocess.run([sys.executable, "-m", "posfleet", "server", "db", "backup", "--config", str(s.config),
                        "--out", str(root / "backup" / "fleet.bak")], capture_output=True, text=True, env=os.environ)
    assert r.returncode == 0, r.stderr
    try:
        yield s
    finally:
        s.stop()
        broker.stop()


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Browser]:
    b = Browser()
    try:
        yield b
    finally:
        b.close()


def test_the_server_page_shows_what_the_inspection_says(server: Server, browser: Browser, tmp_path: Path) -> None:
    b = browser
    b.goto(f"{server.url}/dashboard/#/login")
    b.ready("login")
    b.eval(f"document.getElementById('token').value = {server.token('viewer')!r}")
    b.click("#sign-in")
    b.ready("fleet")
    b.eval("document.getElementById('main').dataset.state = 'navigating'; "
           "document.querySelector('[data-nav=server]').click()")  # the nav link, as a person would
    b.ready("server")
    api = server.get("/api/v1/server/inspection", role="viewer").json()

    assert b.eval("document.querySelector('[data-nav=server]').classList.contains('active')") is True
    assert b.text('[data-k="broker.connected"]') == "是" and api["broker"]["connected"] is True
    problems = b.eval("[...document.querySelectorAll('#inspect-problems li')].map(li => li.dataset.check)")
    assert problems == [p["check"] for p in api["problems"]]
    assert "backup" not in problems and api["certificates"]["terminals"]["expiring"] == 1
    texts = b.eval("[...document.querySelectorAll('#inspect-problems li')].map(li => li.textContent)")
    assert not [x for x in texts if " the " in x or "not " in x], texts  # in Chinese, not the server's English
    if "time" in problems:  # this machine's clock has no NTP: the page says so in the operators' language
        assert any(x.startswith("时钟：服务器时钟未同步") for x in texts), texts
    assert b.text('[data-k="inspect.status"]') == (f"发现 {len(api['problems'])} 项问题" if api["problems"] else "各项正常")
    # the terminal with 20 days left, by SN, linked to its page
    assert b.eval("[...document.querySelectorAll('#terminal-certs tbody tr')].map(r => r.dataset.row)") == [SN]
    assert b.eval(f"document.querySelector('#terminal-certs a[data-sn=\"{SN}\"]') !== null") is True
    assert "终端数 1，60 天内到期 1，已过期 0" in b.text('[data-k="terminals.summary"]')
    assert b.text('[data-k="renewals.summary"]') == "等待签发 0，签发 0，已切换 0，完成 0，拒绝 0"
    rows = b.eval("[...document.querySelectorAll('#certs tbody tr')].map(r => [r.dataset.row, "
                  "r.querySelector('[data-k=\"cert.days_left\"]').textContent])")
    assert rows == [[c["what"], str(round(c["days_left"]))] for c in api["certificates"]["items"]]
    assert [r[0] for r in rows] == ["ca", "broker", "server"]
    # the backup the operator made, and the disk's fill as the API says
    assert b.text('[data-k="backup.last"]') != "从未" and api["backup"]["alert"] is False
    assert b.text('[data-k="backup.last"]')[:16] == api["backup"]["last"][:16].replace("T", " ")
    disks = b.eval("[...document.querySelectorAll('#disks [data-k=\"disk.used_pct\"]')].map(e => e.textContent)")
    assert disks == [f"{d['used_pct']:.1f}%" for d in api["disks"]]
    b.screenshot(shots_dir(tmp_path) / "server-inspection.png")
    assert (shots_dir(tmp_path) / "server-inspection.png").stat().st_size > 10_000
