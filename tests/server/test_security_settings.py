"""The suspicious-behaviour thresholds and the sign-in lock-out are settings (``[security]``, issue 18): a server
configured with other values locks, alerts and stays quiet as configured; bad values are refused at start naming
the field."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from server.auth import Principal, create_token, get_accounts, watch
from server.settings import SettingsError, parse
from tests.server.conftest import make_api

PASSWORD = "correct horse battery"
TZ = ZoneInfo("Asia/Shanghai")


def test_defaults_are_the_documented_ones() -> None:
    s = parse({}).security
    assert (s.signin_failures, s.signin_lock_minutes, s.token_new_address, s.export_rows, s.night_command_units,
            s.working_hours, s.window_minutes) == (5, 15.0, True, 5000, 50, {"mon-fri": "08:00-19:00"}, 60)


@pytest.mark.parametrize(("data", "field"), [
    ({"signin_failures": 0}, "security.signin_failures"),
    ({"signin_lock_minutes": 0}, "security.signin_lock_minutes"),
    ({"export_rows": -1}, "security.export_rows"),
    ({"night_command_units": "many"}, "security.night_command_units"),
    ({"working_hours": "8-19"}, "security.working_hours"),
    ({"working_hours": {"weekdays": "08:00-19:00"}}, "security.working_hours"),
    ({"window_minutes": 0}, "security.window_minutes"),
    ({"lockout": 3}, "security.lockout"),
])
def test_bad_values_are_refused_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse({"security": data})
    assert field in str(err.value)


async def test_a_stricter_lock_out_and_export_threshold_and_another_working_week(tmp_path: Path) -> None:
    extra = {"security": {"signin_failures": 2, "signin_lock_minutes": 5, "export_rows": 3,
                          "night_command_units": 10, "working_hours": {"mon-sat": "07:00-22:00"},
                          "window_minutes": 30}}
    async with make_api(tmp_path, extra) as api:
        await get_accounts(api.app).add_user("zhou", "viewer", "province", PASSWORD, by="test")
        bad = {"user": "zhou", "password": "not the password"}
        first = await api.client.post("/api/v1/session", json=bad)
        assert first.status_code == 401 and "1 more tries before the account is locked for 5 minutes" in \
            first.json()["detail"]
        locked = await api.client.post("/api/v1/session", json=bad)
        assert locked.status_code == 429, "the second failure locks it (signin_failures = 2)"
        alerts = (await api.get("/api/v1/alerts", kind="security")).json()["items"]
        assert [a["message"] for a in alerts] == ["zhou: 2 failed sign-ins in a row (last from 127.0.0.1); "
                                                  "locked for 5 minutes"]

        st = api.app.state.storage
        await st.upsert_institutions([{"code": "I1", "name": "卫生室", "county": "长安区", "region": "西安市"}])
        await st.upsert_registry_units([{"sn": f"SX{k:04d}", "institution": "I1"} for k in range(2)], 1, "test")
        for _ in range(2):  # 2 + 2 rows: more than 3
            assert (await api.get("/api/v1/registry/units.csv")).status_code == 200
        alerts = (await api.get("/api/v1/alerts", kind="security")).json()["items"]
        assert "t-admin exported 4 rows within 30 minutes (last: units.csv)" in [a["message"] for a in alerts]

        p = Principal("night-owl", "engineer")
        saturday_evening = datetime(2026, 12, 5, 21, 0, tzinfo=TZ).timestamp()  # inside mon-sat 07:00-22:00
        assert not await watch.commanded(api.app, p, 40, saturday_evening), "working hours as configured"
        sunday_noon = datetime(2026, 12, 6, 12, 0, tzinfo=TZ).timestamp()
        assert not await watch.commanded(api.app, p, 9, sunday_noon)
        assert not await watch.commanded(api.app, p, 9, sunday_noon + 31 * 60), "the first 9 left the window"
        assert await watch.commanded(api.app, p, 1, sunday_noon + 32 * 60)  # 10 within 30 minutes
        alerts = (await api.get("/api/v1/alerts", kind="security")).json()["items"]
        assert "night-owl sent commands to 10 units within 30 minutes outside working hours" in \
            [a["message"] for a in alerts]


async def test_a_token_from_a_new_address_is_not_alerted_when_turned_off(tmp_path: Path) -> None:
    async with make_api(tmp_path, {"security": {"token_new_address": False}}) as api:
        tok = await create_token(api.app.state.storage, "etl", "viewer", owner="wang")
        h = {"Authorization": f"Bearer {tok}"}
        assert (await api.client.get("/api/v1/units", headers=h)).status_code == 200
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app, client=("10.9.8.7", 5000)),
                                     base_url="http://test") as elsewhere:
            assert (await elsewhere.get("/api/v1/units", headers=h)).status_code == 200
        assert (await api.get("/api/v1/alerts", kind="security")).json()["total"] == 0
        for _ in range(100):  # the last use is written beside the request, not before its answer
            listed = {t["name"]: t for t in (await api.get("/api/v1/tokens")).json()["items"]}
            if listed["etl"]["last_client"] == "10.9.8.7":
                break
            await asyncio.sleep(0.02)
        assert listed["etl"]["last_client"] == "10.9.8.7", "the use is still recorded"
