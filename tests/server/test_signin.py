"""Dashboard sign-in (issue 18) on the real app and a real SQLite file: password + TOTP with a fixed clock,
compulsory enrolment for admins, recovery codes, CSRF, session expiry and sign-out, lock-out with its message and
alert, the login log in the audit trail; API tokens with expiry, last use and a new address alerted; the
operators' CLI."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from click.testing import CliRunner

from server.alerts.lifecycle import raise_alert
from server.auth import create_token, get_accounts
from server.auth.accounts import IDLE_S, LOCK_FAILURES, LOCK_S, MAX_S
from server.tasks import beside_done
from tests.server.conftest import Api

T0 = 1_770_000_000.0
PASSWORD = "correct horse battery"


class Wall:
    """The accounts' wall clock, set by the test."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def _setup(api: Api, name: str, role: str, scope: str = "province") -> Wall:
    wall = Wall(T0)
    acc = get_accounts(api.app)
    acc.now = wall
    await acc.add_user(name, role, scope, PASSWORD, by="test")
    api.client.cookies.clear()
    return wall


async def _sign_in(api: Api, user: str, password: str = PASSWORD, code: str = "") -> httpx.Response:
    return await api.client.post("/api/v1/session", json={"user": user, "password": password, "code": code})


def _code(secret: str, t: float) -> str:
    return pyotp.TOTP(secret).at(t)


async def _enrol(api: Api, wall: Wall, user: str) -> tuple[str, list[str]]:
    """Sign in (an admin gets an enrolment-only session), enrol, confirm: (secret, recovery codes)."""
    r = await _sign_in(api, user)
    assert r.status_code == 200, r.text
    csrf = r.json()["csrf"]
    start = await api.client.post("/api/v1/session/totp", headers={"X-CSRF-Token": csrf})
    assert start.status_code == 200, start.text
    secret = start.json()["secret"]
    done = await api.client.post("/api/v1/session/totp/confirm", json={"code": _code(secret, wall.t)},
                                 headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200, done.text
    return secret, done.json()["recovery_codes"]


async def test_an_admin_must_enrol_two_factor_and_then_signs_in_with_a_code(api: Api) -> None:
    wall = await _setup(api, "zhang", "admin")
    r = await _sign_in(api, "zhang")
    assert r.status_code == 200 and r.json()["stage"] == "enrol"
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=strict" in r.headers["set-cookie"]
    # the enrolment-only session reaches nothing else
    units = await api.client.get("/api/v1/units")
    assert units.status_code == 401 and "two-factor" in units.json()["detail"]
    csrf = r.json()["csrf"]
    start = await api.client.post("/api/v1/session/totp", headers={"X-CSRF-Token": csrf})
    body = start.json()
    assert body["otpauth_uri"].startswith("otpauth://totp/posfleet:zhang?secret=") and "<svg" in body["qr_svg"]
    wrong = await api.client.post("/api/v1/session/totp/confirm", json={"code": "000000"},
                                  headers={"X-CSRF-Token": csrf})
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "code"
    ok = await api.client.post("/api/v1/session/totp/confirm", json={"code": _code(body["secret"], wall.t)},
                               headers={"X-CSRF-Token": csrf})
    codes = ok.json()["recovery_codes"]
    assert ok.status_code == 200 and len(codes) == 10 and len(set(codes)) == 10
    assert (await api.client.get("/api/v1/session")).status_code == 401  # the enrolment session ended

    secret = body["secret"]
    wall.t += 90  # three steps later: the enrolment's code is no longer current
    need = await _sign_in(api, "zhang")
    assert need.status_code == 401 and need.json()["errors"][0]["field"] == "code"
    stale = await _sign_in(api, "zhang", code=_code(secret, wall.t - 90))
    assert stale.status_code == 401 and stale.json()["errors"][0]["field"] == "code"
    good = await _sign_in(api, "zhang", code=_code(secret, wall.t))
    assert good.status_code == 200 and good.json()["stage"] == "full", good.text
    assert (await api.client.get("/api/v1/units")).status_code == 200
    replay = await _sign_in(api, "zhang", code=_code(secret, wall.t))
    assert replay.status_code == 401, "a code is accepted once"
    # a recovery code signs in once
    first = await _sign_in(api, "zhang", code=codes[0])
    assert first.status_code == 200
    assert (await _sign_in(api, "zhang", code=codes[0])).status_code == 401
    log = (await api.get("/api/v1/audit", action="session.signin", actor="zhang")).json()["items"]
    assert [(a["status"], a["detail"]["result"]) for a in reversed(log)] == [
        (200, "ok"), (401, "code needed"), (401, "wrong code"), (200, "ok"), (401, "wrong code"), (200, "ok"),
        (401, "wrong code")]
    assert all(a["client"] == "127.0.0.1" for a in log)


async def test_writes_under_a_session_need_its_csrf_token(api: Api) -> None:
    await _setup(api, "li", "engineer")
    r = await _sign_in(api, "li")
    assert r.status_code == 200 and r.json()["stage"] == "full"  # two-factor is optional below admin
    await raise_alert(api.app.state.storage, "k1", "offline", None, None, int(T0), "HN1 offline", {}, False)
    aid = (await api.get("/api/v1/alerts")).json()["items"][0]["id"]
    bad = await api.client.post(f"/api/v1/alerts/{aid}/ack", json={"note": "on my way"})
    assert bad.status_code == 403 and bad.json()["errors"][0]["field"] == "X-CSRF-Token"
    good = await api.client.post(f"/api/v1/alerts/{aid}/ack", json={"note": "on my way"},
                                 headers={"X-CSRF-Token": r.json()["csrf"]})
    assert good.status_code == 200, good.text
    rows = (await api.get("/api/v1/audit", action="api.post")).json()["items"]
    assert rows[0]["actor"] == "li" and rows[0]["role"] == "engineer"


async def test_a_session_expires_when_idle_or_old_and_ends_at_sign_out(api: Api) -> None:
    wall = await _setup(api, "wang", "viewer")
    assert (await _sign_in(api, "wang")).status_code == 200

    async def written() -> None:  # the sliding expiry is written beside the request (decision 037)
        await beside_done()

    wall.t += IDLE_S - 60
    assert (await api.client.get("/api/v1/units")).status_code == 200  # in use: the idle time starts again
    await written()
    wall.t += IDLE_S - 60
    assert (await api.client.get("/api/v1/units")).status_code == 200
    while wall.t < T0 + MAX_S - 600:  # used every 20 minutes, it still ends 12 hours after sign-in
        await written()
        wall.t += 1200
        assert (await api.client.get("/api/v1/session")).status_code == 200
    wall.t = T0 + MAX_S + 1
    gone = await api.client.get("/api/v1/units")
    assert gone.status_code == 401 and "sign in again" in gone.json()["detail"]
    assert (await _sign_in(api, "wang")).status_code == 200
    wall.t += IDLE_S + 1
    assert (await api.client.get("/api/v1/units")).status_code == 401, "idle longer than the idle time"
    r = await _sign_in(api, "wang")
    out = await api.client.delete("/api/v1/session", headers={"X-CSRF-Token": r.json()["csrf"]})
    assert out.status_code == 200 and (await api.client.get("/api/v1/units")).status_code == 401
    assert (await api.get("/api/v1/audit", action="session.signout")).json()["total"] == 1


async def test_repeated_failures_lock_the_account_with_a_clear_message_and_an_alert(api: Api) -> None:
    wall = await _setup(api, "zhao", "viewer")
    for k in range(LOCK_FAILURES - 1):
        r = await _sign_in(api, "zhao", "wrong password!")
        assert r.status_code == 401 and f"{LOCK_FAILURES - 1 - k} more tries" in r.json()["detail"]
    r = await _sign_in(api, "zhao", "wrong password!")
    assert r.status_code == 429 and "locked until" in r.json()["detail"], r.text
    right = await _sign_in(api, "zhao")
    assert right.status_code == 429, "the right password waits for the lock's end"
    alerts = (await api.get("/api/v1/alerts", kind="security")).json()["items"]
    assert [a["message"] for a in alerts] == [f"zhao: {LOCK_FAILURES} failed sign-ins in a row (last from "
                                              f"127.0.0.1); locked for {LOCK_S / 60:.0f} minutes"]
    wall.t += LOCK_S + 1
    assert (await _sign_in(api, "zhao")).status_code == 200
    # an unknown name is answered as a wrong password (names are not told apart)
    unknown = await _sign_in(api, "nobody")
    assert unknown.status_code == 401 and unknown.json()["detail"] == "wrong user name or password"


async def test_a_disabled_user_is_refused_and_their_sessions_end(api: Api) -> None:
    await _setup(api, "sun", "viewer")
    assert (await _sign_in(api, "sun")).status_code == 200
    await get_accounts(api.app).set_disabled("sun", True, by="test")
    assert (await api.client.get("/api/v1/units")).status_code == 401
    r = await _sign_in(api, "sun")
    assert r.status_code == 403 and "disabled" in r.json()["detail"]


async def test_tokens_expire_record_their_last_use_and_a_new_address_is_alerted(api: Api) -> None:
    st = api.app.state.storage
    old = await create_token(st, "nightly", "viewer", owner="wang", expires=time.time() - 1)
    r = await api.client.get("/api/v1/units", headers={"Authorization": f"Bearer {old}"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    tok = await create_token(st, "etl", "viewer", owner="wang", expires=time.time() + 86400)
    h = {"Authorization": f"Bearer {tok}"}
    assert (await api.client.get("/api/v1/units", headers=h)).status_code == 200
    for _ in range(100):  # the last use is written beside the request, not before its answer
        listed = {t["name"]: t for t in (await api.get("/api/v1/tokens")).json()["items"]}
        if listed["etl"]["last_used"] is not None:
            break
        await asyncio.sleep(0.02)
    assert listed["etl"]["owner"] == "wang" and listed["etl"]["last_client"] == "127.0.0.1"
    assert listed["etl"]["last_used"] is not None and listed["etl"]["expires"].endswith("+08:00")
    assert (await api.get("/api/v1/alerts", kind="security")).json()["total"] == 0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app, client=("10.9.8.7", 5000)),
                                 base_url="http://test") as elsewhere:
        assert (await elsewhere.get("/api/v1/units", headers=h)).status_code == 200
    alerts = (await api.get("/api/v1/alerts", kind="security")).json()["items"]
    assert [a["message"] for a in alerts] == ["token etl used from a new address 10.9.8.7 (before: 127.0.0.1)"]


def _cli(args: list[str], env: dict[str, str] | None = None) -> Any:
    from posfleet.cli import main

    return CliRunner().invoke(main, args, env=env or {})


@pytest.mark.parametrize("role", ["admin"])
def test_operators_add_list_disable_and_reset_users_and_it_is_audited(tmp_path: Path, role: str) -> None:
    import sqlite3

    cfg = tmp_path / "server.toml"
    cfg.write_text(f'[storage]\nurl = "sqlite:///{tmp_path}/fleet.sqlite"\n')
    env = {"POSFLEET_USER_PASSWORD": PASSWORD}
    r = _cli(["server", "user", "add", "chen", "--config", str(cfg), "--role", role, "--scope",
              "county:长安区,city:西安市"], env)
    assert r.exit_code == 0 and "two-factor is enrolled at the first sign-in" in r.output, r.output
    again = _cli(["server", "user", "add", "chen", "--config", str(cfg), "--role", "viewer"], env)
    assert again.exit_code == 2 and "exists already" in again.output
    short = _cli(["server", "user", "add", "he", "--config", str(cfg), "--role", "viewer"],
                 {"POSFLEET_USER_PASSWORD": "short"})
    assert short.exit_code == 2 and "at least 10 characters" in short.output
    bad = _cli(["server", "user", "add", "he", "--config", str(cfg), "--role", "viewer", "--scope", "town:x"], env)
    assert bad.exit_code == 2 and "--scope" in bad.output
    listed = _cli(["server", "user", "list", "--config", str(cfg)])
    assert "chen" in listed.output and "city:西安市,county:长安区" in listed.output and "never" in listed.output
    assert _cli(["server", "user", "reset-2fa", "chen", "--config", str(cfg)]).exit_code == 0
    assert "disabled chen" in _cli(["server", "user", "disable", "chen", "--config", str(cfg)]).output
    assert _cli(["server", "user", "disable", "nobody", "--config", str(cfg)]).exit_code == 2
    tok = _cli(["server", "token", "create", "--config", str(cfg), "--name", "etl", "--role", "viewer", "--owner",
                "chen", "--scope", "county:长安区", "--expires-days", "30"])
    assert tok.exit_code == 0 and tok.output.strip().startswith("pf_")
    assert _cli(["server", "token", "revoke", "etl", "--config", str(cfg)]).exit_code == 0
    with sqlite3.connect(tmp_path / "fleet.sqlite") as db:
        rows = db.execute("SELECT action, target FROM audit ORDER BY id").fetchall()
    assert rows == [("user.add", "chen"), ("user.reset_2fa", "chen"), ("user.disable", "chen"),
                    ("token.create", "etl"), ("token.revoke", "etl")]


async def test_mass_exports_and_night_commands_to_many_units_are_alerted(api: Api, monkeypatch: Any) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from server.auth import Principal, watch

    st = api.app.state.storage
    await st.upsert_institutions([{"code": "I1", "name": "卫生室", "county": "长安区", "region": "西安市"}])
    await st.upsert_registry_units([{"sn": f"SX{k:04d}", "institution": "I1"} for k in range(4)], int(T0), "test")
    # the threshold a province sets ([security] export_rows, 5,000) would need 5,000 units here
    monkeypatch.setattr(api.app.state.settings.security, "export_rows", 6)
    for fmt in ("csv", "xlsx"):
        r = await api.get(f"/api/v1/registry/units.{fmt}")
        assert r.status_code == 200
    alerts = (await api.get("/api/v1/alerts", kind="security")).json()["items"]
    assert [a["message"] for a in alerts] == ["t-admin exported 8 rows within an hour (last: units.xlsx)"]
    tz = ZoneInfo("Asia/Shanghai")
    p = Principal("night-owl", "engineer")
    weekday_noon = datetime(2026, 12, 7, 12, 0, tzinfo=tz).timestamp()  # a Monday
    saturday_night = datetime(2026, 12, 5, 23, 0, tzinfo=tz).timestamp()
    assert not await watch.commanded(api.app, p, 400, weekday_noon), "working hours: not suspicious"
    assert not await watch.commanded(api.app, p, 30, saturday_night)
    assert await watch.commanded(api.app, p, 30, saturday_night + 600)  # 60 units within the hour
    alerts = (await api.get("/api/v1/alerts", kind="security")).json()["items"]
    assert "night-owl sent commands to 60 units within an hour outside working hours" in [a["message"] for a in alerts]
