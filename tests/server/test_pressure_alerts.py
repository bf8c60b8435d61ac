"""Threshold alerts for terminals' CPU, memory and storage pressure, sustained over a window (issue 17): raised
through the alerts (so webhooks and the dashboard see them) only when every sample of the window is above the
line, closed when a sample falls below; a wrong setting stops the server naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import SettingsError, parse
from tests.server.conftest import make_api, sample
from wire.messages import FsStat

HALF = [FsStat("/", 1000, 500, True)]
FULL = [FsStat("/", 1000, 880, True)]  # 88 %: above pressure's 85 %, below the 90 % "full" alert


async def _pressure(api) -> dict[tuple[str, str], dict]:  # noqa: ANN001
    """Evaluate now (the background loop is off in these tests: its first pass at start would close, as it ends,
    what this one raised) and the open pressure alerts."""
    assert (await api.req("POST", "/api/v1/alerts/evaluate")).status_code == 200
    items = (await api.get("/api/v1/alerts", role="viewer", kind="pressure")).json()["items"]
    return {(a["sn"], a["data"]["resource"]): a for a in items}


async def test_sustained_pressure_raises_and_a_dip_closes(tmp_path: Path) -> None:
    hook = "http://127.0.0.1:9/hook"  # queued for the webhook sender (not running here), as every alert is
    async with make_api(tmp_path, {"alerts": {"enabled": False, "webhook_url": hook,
                                              "pressure": {"window_minutes": 15}}}) as api:
        await api.req("PUT", "/api/v1/institutions/H001", json={"name": "x", "county": "秀英区"})
        for sn in ("HN00000001", "HN00000002", "HN00000003"):
            await api.req("PUT", f"/api/v1/registry/units/{sn}", json={"institution": "H001"})
        t0 = int(api.clock.t) // 60 * 60
        # 1: CPU 95 % and memory 92 % for 20 min, storage 88 %; 2: CPU 95 % for the last 10 min only;
        # 3: CPU high for 20 min but one sample at 40 % five minutes ago
        await api.feed("HN00000001", [sample(k, t0 + 60 * k, cpu=95.0, mem_used_mb=920, mem_avail_mb=80, fs=FULL)
                                      for k in range(20)])
        await api.feed("HN00000002", [sample(k, t0 + 60 * k, cpu=95.0 if k >= 10 else 30.0, mem_used_mb=300,
                                             mem_avail_mb=700, fs=HALF) for k in range(20)])
        await api.feed("HN00000003", [sample(k, t0 + 60 * k, cpu=40.0 if k == 15 else 97.0, fs=HALF)
                                      for k in range(20)])
        got = await _pressure(api)
        assert set(got) == {("HN00000001", "cpu"), ("HN00000001", "memory"), ("HN00000001", "storage")}
        cpu = got[("HN00000001", "cpu")]
        assert cpu["county"] == "秀英区" and "cpu at or above 90 % for 15 min" in cpu["message"]
        assert cpu["data"]["mean_pct"] == 95.0 and cpu["data"]["samples"] >= 15
        assert got[("HN00000001", "memory")]["data"]["peak_pct"] == 92.0
        queued = {a["key"] for a in await api.app.state.storage.pending_webhooks()}
        assert {"pressure:HN00000001:cpu", "pressure:HN00000001:memory", "pressure:HN00000001:storage"} <= queued
        # the storage is not "full" (90 %), only under pressure
        full = (await api.get("/api/v1/alerts", role="viewer", kind="storage")).json()["items"]
        assert full == []

        # unit 1's CPU drops; unit 2 stays high long enough
        await api.feed("HN00000001", [sample(20, t0 + 1200, cpu=20.0, mem_used_mb=920, mem_avail_mb=80, fs=FULL)])
        await api.feed("HN00000002", [sample(k, t0 + 60 * k, cpu=95.0, mem_used_mb=300, mem_avail_mb=700, fs=HALF)
                                      for k in range(20, 26)])
        got = await _pressure(api)
        assert set(got) == {("HN00000001", "memory"), ("HN00000001", "storage"), ("HN00000002", "cpu")}
        closed = (await api.get("/api/v1/alerts", role="viewer", kind="pressure", open="false")).json()["items"]
        assert [a["data"]["resource"] for a in closed if a["closed_ts"]] == ["cpu"]


async def test_a_rule_set_to_zero_is_off(tmp_path: Path) -> None:
    async with make_api(tmp_path, {"alerts": {"enabled": False, "pressure": {"window_minutes": 5, "cpu_pct": 0}}}) as api:
        await api.req("PUT", "/api/v1/institutions/H001", json={"name": "x", "county": "秀英区"})
        await api.req("PUT", "/api/v1/registry/units/HN00000001", json={"institution": "H001"})
        t0 = int(api.clock.t) // 60 * 60
        await api.feed("HN00000001", [sample(k, t0 + 60 * k, cpu=100.0, mem_used_mb=950, mem_avail_mb=50)
                                      for k in range(10)])
        assert set(await _pressure(api)) == {("HN00000001", "memory")}


@pytest.mark.parametrize(("pressure", "named"), [
    ({"window_minutes": 0}, "alerts.pressure.window_minutes"),
    ({"cpu_pct": 120}, "alerts.pressure.cpu_pct"),
    ({"memory": 80}, "alerts.pressure.memory"),
])
def test_a_wrong_pressure_setting_is_named(pressure: dict, named: str) -> None:
    with pytest.raises(SettingsError, match=named.replace(".", r"\.")):
        parse({"alerts": {"pressure": pressure}})
