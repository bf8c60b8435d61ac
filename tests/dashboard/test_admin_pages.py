"""The administration pages of issue 18 in a real headless Chromium against a running server (real process, real
HTTP, its SQLite file): the audit trail for auditors (a province auditor reads sign-ins and user changes, a county
auditor the rows about its county's units only, a viewer is not offered the page)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.dashboard.cdp import Browser, chromium_path
from tests.fleet import Broker, Pki, Server

PASSWORD = "a long enough password"
INSIDE, OUTSIDE = "SX-A-0001", "SX-B-0001"
INSTITUTIONS = {"INST-A": ("长安区韦曲街道卫生院", "长安区", "西安市"), "INST-B": ("汉台区中心卫生院", "汉台区", "汉中市")}


@dataclass
class Site:
    server: Server
    base: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if chromium_path() is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; ./dev installs it)")
    root = tmp_path_factory.mktemp("dash-admin")
    pki = Pki(root / "pki")
    broker = Broker(pki, root / "broker").start()
    server = Server(pki, broker, root / "server").start()
    try:
        for code, (name, county, city) in INSTITUTIONS.items():
            r = server.request("PUT", f"/api/v1/institutions/{code}", json={"name": name, "county": county,
                                                                            "region": city})
            assert r.status_code == 200, r.text
        for sn, inst in ((INSIDE, "INST-A"), (OUTSIDE, "INST-B")):
            assert server.request("PUT", f"/api/v1/registry/units/{sn}", json={"institution": inst}).status_code == 200
        yield Site(server, server.url)
    finally:
        server.stop()
        broker.stop()
        log = root / "server" / "server.log"
        if log.exists():
            assert "Traceback" not in log.read_text(), log.read_text()[-4000:]


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Browser]:
    b = Browser()
    try:
        yield b
    finally:
        b.close()


def cli_user(site: Site, name: str, role: str, scope: str = "province") -> None:
    env = {**os.environ, "POSFLEET_USER_PASSWORD": PASSWORD}
    subprocess.run([sys.executable, "-m", "posfleet", "server", "user", "add", name, "--config",
                    str(site.server.config), "--role", role, "--scope", scope], check=True, env=env,
                   capture_output=True, text=True)


_LOADS: list[int] = []


def sign_in(b: Browser, site: Site, user: str, password: str = PASSWORD, code: str = "",
            view: str | None = "fleet") -> None:
    """Through the login form, as a person would (a new URL each time: the page loads afresh)."""
    _LOADS.append(1)
    b.goto(f"{site.base}/dashboard/?load={len(_LOADS)}#/login")
    b.ready("login")
    b.eval("sessionStorage.clear()")
    b.eval(f"document.getElementById('user').value = {json.dumps(user)}; "
           f"document.getElementById('password').value = {json.dumps(password)}; "
           f"document.getElementById('code').value = {json.dumps(code)}")
    b.click("#user-sign-in")
    if view:
        b.ready(view, timeout=20)


def goto(b: Browser, hash_: str, view: str) -> None:
    b.eval(f"document.getElementById('main').dataset.state = 'navigating'; location.hash = {hash_!r}")
    b.ready(view)


def rows(b: Browser, table: str) -> list[list[str]]:
    return b.eval(f"[...document.querySelectorAll('#{table} tbody tr[data-row]')]"  # type: ignore[no-any-return]
                  ".map(r => [...r.cells].map(c => c.textContent))")


def test_auditors_read_the_trail_on_the_audit_page_and_a_county_auditor_its_county_only(site: Site,
                                                                                        browser: Browser) -> None:
    b = browser
    cli_user(site, "shen", "auditor")
    cli_user(site, "xu", "viewer")
    cli_user(site, "county-audit", "auditor", "county:长安区")
    # a command's state changes, as the command service writes them (no signing key here to send one)
    with sqlite3.connect(site.server.db, timeout=10) as db:
        for sn in (INSIDE, OUTSIDE):
            db.execute("INSERT INTO audit(ts, actor, action, target, detail) VALUES (?,?,?,?,?)",
                       (time.time(), "server", "command.state", sn, '{"from":"sent","to":"done"}'))

    sign_in(b, site, "xu")
    assert b.eval("document.querySelector('[data-nav=audit]').hidden") is True, "a viewer is not offered it"

    sign_in(b, site, "shen")
    assert b.eval("document.querySelector('[data-nav=audit]').hidden") is False
    b.eval("document.getElementById('main').dataset.state = 'navigating'; "
           "document.querySelector('[data-nav=audit]').click()")
    b.ready("audit")
    seen = rows(b, "audit")
    signins = [r for r in seen if r[4] == "登录"]
    assert signins and signins[0][1] == "shen" and signins[0][3] == "127.0.0.1" and "result: ok" in signins[0][7]
    assert signins[0][2] == "审计员"
    assert {INSIDE, OUTSIDE} <= {r[5] for r in seen if r[4] == "命令状态变化"}
    # filtered to the user changes: the three users added with the CLI, by the operator who ran it
    b.eval("document.querySelector('#audit-filters select[name=action]').value = 'user.*'; "
           "document.getElementById('main').dataset.state = 'navigating'; "
           "document.querySelector('#audit-filters button[type=submit]').click()")
    b.ready("audit")
    added = rows(b, "audit")
    assert sorted(r[5] for r in added) == ["county-audit", "shen", "xu"]
    assert all(r[4] == "新增用户" and r[1].startswith("cli:") for r in added), added
    assert b.text('[data-k="audit.total"]') == "共 3 条"

    sign_in(b, site, "county-audit")
    goto(b, "#/audit", "audit")
    assert [(r[4], r[5]) for r in rows(b, "audit")] == [("命令状态变化", INSIDE)], "its county's unit only"
    assert "辖区" in b.text("#audit-scope-note")
    text = b.text("#main")
    assert OUTSIDE not in text and "shen" not in text
