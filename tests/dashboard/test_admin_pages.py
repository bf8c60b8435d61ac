"""The administration pages of issue 18 in a real headless Chromium against a running server (real process, real
HTTP, its SQLite file): the users page (an administrator creates a user and hands over the one-time password, edits,
disables, resets; the user replaces the password at the first sign-in; a county administrator sees and grants its
county only) and the audit trail for auditors (a province auditor reads sign-ins and user changes, a county auditor
the rows about its county's units only, a viewer is not offered the page); and the institutions' level on the
institutions page (a filter) and the statistics page (services and coverage by level)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.dashboard.cdp import Browser, chromium_path
from tests.dashboard.conftest import shots_dir
from tests.fleet import Broker, Pki, Server

PASSWORD = "a long enough password"
INSIDE, OUTSIDE = "SX-A-0001", "SX-B-0001"
INSTITUTIONS = {"INST-A": ("长安区韦曲街道卫生院", "长安区", "西安市"), "INST-B": ("汉台区中心卫生院", "汉台区", "汉中市")}


@dataclass
class Site:
    server: Server
    base: str
    pki: Pki
    broker: Broker


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
        yield Site(server, server.url, pki, broker)
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


def enrolled_admin(site: Site, name: str, scope: str = "province") -> list[str]:
    """An administrator with two-factor enrolled (over the API, as the enrolment page does): its recovery codes."""
    cli_user(site, name, "admin", scope)
    with httpx.Client(base_url=site.base, timeout=10) as c:
        r = c.post("/api/v1/session", json={"user": name, "password": PASSWORD})
        assert r.json()["stage"] == "enrol", r.text
        h = {"X-CSRF-Token": r.json()["csrf"]}
        secret = c.post("/api/v1/session/totp", headers=h).json()["secret"]
        done = c.post("/api/v1/session/totp/confirm", json={"code": pyotp.TOTP(secret).now()}, headers=h)
        assert done.status_code == 200, done.text
        return done.json()["recovery_codes"]  # type: ignore[no-any-return]


def user_row(b: Browser, name: str) -> dict[str, str]:
    return b.eval(f"(() => {{ const r = document.querySelector('#users tr[data-row=\"{name}\"]'); "  # type: ignore[no-any-return]
                  "return r && Object.fromEntries([...r.querySelectorAll('[data-k]')].map(c => [c.dataset.k, c.textContent])); })()")


def act(b: Browser, name: str, what: str, confirm: bool = True) -> None:
    """Press a row's button (twice when it asks to confirm) and wait for the page to show the answer."""
    sel = f'#users tr[data-row="{name}"] button[data-act="{what}"]'
    if confirm:
        b.click(sel)
        assert b.text(sel).startswith("确认"), "asks before it acts"
    b.eval("document.getElementById('main').dataset.state = 'navigating'")
    b.click(sel)
    b.ready("users")


def test_an_administrator_manages_users_and_the_user_replaces_the_one_time_password(site: Site, browser: Browser,
                                                                                   tmp_path: Path) -> None:
    b = browser
    codes = enrolled_admin(site, "boss")
    sign_in(b, site, "boss", code=codes[0])
    assert b.eval("document.querySelector('[data-nav=users]').hidden") is False
    goto(b, "#/users", "users")
    assert b.eval("[...document.querySelectorAll('#users tr[data-row=\"boss\"] button[data-act]')]"
                  ".map(x => x.dataset.act)") == ["sessions"], "one's own row: signing out everywhere, nothing else"
    b.eval("{ const f = document.getElementById('new-user'); f.name.value = 'chen'; f.role.value = 'engineer'; "
           "f.scope.value = 'county:长安区'; document.getElementById('main').dataset.state = 'navigating'; }")
    b.click("#new-user-create")
    b.ready("users")
    once = b.text("#one-time-password")
    assert len(once) == 19 and "有效期至" in b.text("#one-time")
    b.screenshot(shots_dir(tmp_path) / "users.png")
    assert user_row(b, "chen") == {"user.role": "工程师", "user.scope": "区县：长安区", "user.two_factor": "未启用",
                                   "user.state": "待修改一次性密码", "user.sessions": "0"}
    b.click("#one-time-noted")
    b.wait("!document.getElementById('one-time')", what="the box gone once noted")

    b.click('#users tr[data-row="chen"] button[data-act="edit"]')
    b.eval("{ const f = document.querySelector('form.edit[data-user=\"chen\"]'); f.role.value = 'viewer'; "
           "document.getElementById('main').dataset.state = 'navigating'; }")
    b.click('form.edit[data-user="chen"] button[data-act="save"]')
    b.ready("users")
    assert user_row(b, "chen")["user.role"] == "查看员"
    act(b, "chen", "disable")
    assert user_row(b, "chen")["user.state"] == "已停用"
    act(b, "chen", "enable", confirm=False)
    act(b, "chen", "password")
    again = b.text("#one-time-password")
    assert again != once and b.eval("document.getElementById('one-time-password').dataset.user") == "chen"
    rows = fleet_audit(site, target="chen")
    assert [(a["action"], a["actor"]) for a in reversed(rows) if a["action"].startswith("user.")] == [
        ("user.add", "boss"), ("user.change", "boss"), ("user.disable", "boss"), ("user.enable", "boss"),
        ("user.reset_password", "boss")]
    change = next(a for a in rows if a["action"] == "user.change")
    assert (change["detail"]["before"]["role"], change["detail"]["after"]["role"]) == ("engineer", "viewer")
    assert once not in str(rows) and again not in str(rows)

    # the user's first sign-in: the one-time password, then one of their own
    sign_in(b, site, "chen", again, view=None)
    b.wait("document.getElementById('main').dataset.view === 'new-password'", what="the new-password form")
    b.eval("document.getElementById('new-password').value = 'chen has a long password'; "
           "document.getElementById('new-password-again').value = 'chen has a long password'")
    b.click("#new-password-save")
    b.wait("!!document.getElementById('login-notice')", what="back at the login")
    assert b.text("#login-notice") == "密码已修改，请用新密码登录。"
    sign_in(b, site, "chen", "chen has a long password")
    assert b.eval("document.querySelector('[data-nav=users]').hidden") is True, "a viewer manages no one"


def test_a_county_administrator_sees_and_grants_its_county_only(site: Site, browser: Browser) -> None:
    b = browser
    cli_user(site, "hantai-viewer", "viewer", "county:汉台区")
    cli_user(site, "changan-viewer", "viewer", "county:长安区")
    codes = enrolled_admin(site, "changan-admin", "county:长安区")
    sign_in(b, site, "changan-admin", code=codes[0])
    goto(b, "#/users", "users")
    names = b.eval("[...document.querySelectorAll('#users tbody tr[data-row]')].map(r => r.dataset.row)")
    assert "changan-viewer" in names and "changan-admin" in names
    assert not {"hantai-viewer", "boss", "shen"} & set(names), names
    assert "区县：长安区" in b.text("#users-scope-note")
    b.eval("{ const f = document.getElementById('new-user'); f.name.value = 'han2'; f.scope.value = 'county:汉台区'; }")
    b.click("#new-user-create")
    b.wait("document.getElementById('new-user-error').textContent", what="the refusal")
    assert b.text("#new-user-error").startswith("403") and "county:汉台区 is outside your own scope" in \
        b.text("#new-user-error")
    assert site.server.get("/api/v1/users/han2").status_code == 404, "nothing made"


def fleet_audit(site: Site, **params: str) -> list[dict]:
    r = site.server.get("/api/v1/audit", limit=1000, **params)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def test_institutions_page_filters_by_level_and_statistics_count_by_level(site: Site, browser: Browser) -> None:
    from posfleet.demo import publish_history
    from tests.fleet import wait_for
    from wire.messages import Event, Sample

    srv, b = site.server, browser
    for code, level in (("INST-A", "乡镇（街道）级"), ("INST-B", "village")):  # the Chinese word or the code
        name, county, city = INSTITUTIONS[code]
        r = srv.request("PUT", f"/api/v1/institutions/{code}", json={"name": name, "county": county, "region": city,
                                                                    "level": level})
        assert r.status_code == 200, r.text
    hour = int(time.time()) // 3600 * 3600 - 7200
    publish_history(site.pki, site.broker.port, {sn: [Sample(seq=1, ts=hour, interval=60)] for sn in (INSIDE, OUTSIDE)},
                    {sn: [Event(seq=2, ts=hour + 3600, kind="svc", data={"hour": hour, "services": n, "face": n})]
                     for sn, n in ((INSIDE, 7), (OUTSIDE, 3))})
    wait_for(lambda: srv.get("/api/v1/statistics/services").json()["totals"]["services"] == 10, 30,
             "the service counts at the server")
    cli_user(site, "level-viewer", "viewer")
    sign_in(b, site, "level-viewer")
    goto(b, "#/institutions?level=township", "institutions")
    assert b.eval("[...document.querySelectorAll('#institutions tbody tr[data-row]')].map(r => r.dataset.row)") == ["INST-A"]
    assert b.text('#institutions tr[data-row="INST-A"] [data-k="inst.level"]') == "乡镇（街道）级"
    b.eval("document.querySelector('#inst-filter select[name=level]').value = 'village'; "
           "document.getElementById('main').dataset.state = 'navigating'; "
           "document.querySelector('#inst-filter button[type=submit]').click()")
    b.ready("institutions")
    assert b.eval("[...document.querySelectorAll('#institutions tbody tr[data-row]')].map(r => r.dataset.row)") == ["INST-B"]
    assert b.text('[data-k="inst.total"]') == "共 1 条"

    goto(b, "#/statistics", "statistics")
    assert rows(b, "services-level") == [["乡镇（街道）级", "7", "70.00%"], ["村（社区）级", "3", "30.00%"]]
    cov = {r[0]: r[1:] for r in rows(b, "cov-level")}
    assert cov == {"乡镇（街道）级": ["1", "1", "100.00%"], "村（社区）级": ["1", "1", "100.00%"]}
