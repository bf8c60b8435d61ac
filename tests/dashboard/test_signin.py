"""Dashboard sign-in in real headless Chromium (issue 18): an administrator's first sign-in enrols an authenticator
from the QR page and gets recovery codes, then signs in with a code; sign-out ends the session; a county user sees
only the county's units and figures; repeated wrong passwords show the lock-out in Chinese with the time it ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyotp

from tests.dashboard.cdp import Browser
from tests.dashboard.conftest import POWER_CUT, Fleet, pct

PASSWORD = "a long enough password"
_LOADS: list[int] = []


def _user(fleet: Fleet, name: str, role: str, scope: str = "province") -> None:
    env = {**os.environ, "POSFLEET_USER_PASSWORD": PASSWORD}
    subprocess.run([sys.executable, "-m", "posfleet", "server", "user", "add", name, "--config",
                    str(fleet.server.config), "--role", role, "--scope", scope], check=True, env=env,
                   capture_output=True, text=True)


def _form(b: Browser, fleet: Fleet, user: str, password: str, code: str = "") -> None:
    _LOADS.append(1)  # a new URL each time: the page loads afresh (and forgets a token another test left)
    b.goto(f"{fleet.base}/dashboard/?load={len(_LOADS)}#/login")
    b.ready("login")
    b.eval("sessionStorage.clear()")
    b.eval(f"document.getElementById('user').value = {json.dumps(user)}; "
           f"document.getElementById('password').value = {json.dumps(password)}; "
           f"document.getElementById('code').value = {json.dumps(code)}")
    b.click("#user-sign-in")


def test_an_admin_enrols_two_factor_on_first_sign_in_then_signs_in_with_a_code(fleet: Fleet,
                                                                              browser: Browser) -> None:
    b = browser
    _user(fleet, "ops-admin", "admin")
    _form(b, fleet, "ops-admin", PASSWORD)
    b.ready("enrol")
    b.wait("document.querySelector('#enrol-qr img').naturalWidth > 0", what="the QR code drawn")
    secret = b.text("#enrol-secret")
    b.eval(f"document.getElementById('enrol-code').value = {pyotp.TOTP(secret).now()!r}")
    b.click("#enrol-confirm")
    b.wait("document.getElementById('main').dataset.view === 'recovery'", what="the recovery codes")
    codes = b.texts("#recovery-codes li")
    assert len(codes) == 10 and all(len(c) == 10 and c.isdigit() for c in codes)
    # the password alone is no longer enough: the page asks for the code
    _form(b, fleet, "ops-admin", PASSWORD)
    b.wait("!document.getElementById('code').hidden && document.getElementById('user-error').textContent",
           what="the code field")
    assert b.text("#user-error").startswith("请输入手机验证器上的 6 位验证码")
    # a recovery code (the enrolment used this 30 s step's code: a code is accepted once)
    b.eval(f"document.getElementById('code').value = {codes[0]!r}")
    b.click("#user-sign-in")
    b.ready("fleet", timeout=20)
    assert b.eval("document.cookie") == "", "the session cookie is HttpOnly: no script reads it"
    who = b.eval("fetch('/api/v1/session').then(r => r.json())")
    assert who["user"] == "ops-admin" and who["role"] == "admin" and who["scope"]["province"]
    b.click("#logout")
    b.ready("login")
    assert b.eval("fetch('/api/v1/session').then(r => r.status)") == 401, "signed out: the session has ended"
    log = fleet.api("/api/v1/audit", action="session.*", actor="ops-admin")["items"]
    assert [(a["action"], a["detail"].get("result")) for a in reversed(log)] == [
        ("session.signin", "ok"), ("session.signin", "code needed"), ("session.signin", "ok"),
        ("session.signout", None)]


def test_a_county_user_sees_the_county_only_and_is_locked_after_failures(fleet: Fleet, browser: Browser) -> None:
    b = browser
    county = fleet.plan.units[0].county
    _user(fleet, "county-viewer", "viewer", f"county:{county}")
    _form(b, fleet, "county-viewer", PASSWORD)
    b.ready("fleet", timeout=20)  # the fleet page, of the county's units (test_a_county_users_fleet_page_...)
    b.eval("document.getElementById('main').dataset.state = 'navigating'; location.hash = '#/units'")
    b.ready("units")
    rows = b.eval("[...document.querySelectorAll('#units tbody tr[data-row]')].map(r => r.dataset.row)")
    assert rows == sorted(u.sn for u in fleet.plan.units if u.county == county) and rows
    b.click("#logout")
    b.ready("login")
    for _ in range(5):
        _form(b, fleet, "county-viewer", "not the password")
        b.wait("document.getElementById('user-error').textContent", what="the refusal")
    text = b.text("#user-error")
    assert text.startswith("失败次数过多，账号已锁定") and "locked until" in text, text


def test_a_county_users_fleet_page_shows_its_county_availability(fleet: Fleet, browser: Browser) -> None:
    """The fleet page of a county user: the month's device and network rates, flagged units and per-county table
    of the county's units, as the province's per-county figures count them; no contract tier, no other county."""
    b = browser
    county = next(u.county for u in fleet.plan.units if u.sn == POWER_CUT[0])  # a county with a flagged unit
    others = {u.county for u in fleet.plan.units} - {county}
    assert others, "the plan has more than one county"
    _user(fleet, "county-fleet", "viewer", f"county:{county}")
    _form(b, fleet, "county-fleet", PASSWORD)
    b.ready("fleet", timeout=20)
    mine = fleet.api("/api/v1/availability", **fleet.month, county=county)["fleet"]  # the province asks for it
    by_county = {c["county"]: c for c in fleet.api("/api/v1/availability", **fleet.month, group_by="county")["items"]}
    assert mine["units"] == len([u for u in fleet.plan.units if u.county == county]) and mine["service_slots"] > 0
    assert b.text('[data-k="fleet.device_rate"]') == pct(mine["device_rate"]) == pct(by_county[county]["device_rate"])
    assert b.text('[data-k="fleet.network_rate"]') == pct(mine["network_rate"])
    assert b.text('[data-k="fleet.flagged_units"]') == str(mine["flagged_units"])
    assert b.eval("document.querySelector('[data-k=\"fleet.tier\"]')") is None, "the tier is the province's"
    rows = b.eval("[...document.querySelectorAll('#counties tbody tr')].map(r => [r.dataset.row, "
                  "r.querySelector('[data-k=\"county.device_rate\"]').textContent])")
    assert rows == [[county, pct(by_county[county]["device_rate"])]]
    flagged = fleet.api("/api/v1/availability/flagged", **fleet.month, county=county, limit=20)
    assert POWER_CUT[0] in [u["sn"] for u in flagged["items"]]
    assert b.eval("[...document.querySelectorAll('#flagged tbody tr[data-row]')].map(r => r.dataset.row)") == \
        [u["sn"] for u in flagged["items"]]
    b.wait("document.getElementById('trend') && document.getElementById('trend').dataset.state === 'ready'",
           what="the trend chart")
    assert b.eval("document.getElementById('stored-reports')") is None, "the stored reports are the province's"
    text = b.text("#main")
    assert not any(u.sn in text for u in fleet.plan.units if u.county != county)
    assert not any(c in text for c in others), "nothing of another county on the page"
