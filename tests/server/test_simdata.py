"""SIM data use per unit per month: real app, real SQLite file, samples through the real ingest path.

The counter readings are hand-made; the expected megabytes are worked out in the comments (MB = 10^6 bytes).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from server.analytics.datause import increase, summarise_day
from tests.server.conftest import Api, at, make_api, sample

MB = 1_000_000


async def _register(api: Api) -> None:
    for code, county in (("V001", "秀英区"), ("V002", "龙华区")):
        r = await api.req("PUT", f"/api/v1/institutions/{code}", json={"name": f"卫生室{code}", "county": county})
        assert r.status_code == 200, r.text
    for sn, inst in (("HN00000001", "V001"), ("HN00000002", "V001"), ("HN00000003", "V002")):
        r = await api.req("PUT", f"/api/v1/registry/units/{sn}", json={"institution": inst})
        assert r.status_code == 200, r.text


async def test_month_use_resets_late_sample_projection_alerts_and_report(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-03 12:00") as api:
        await _register(api)
        # HN00000001: Feb 28 23:58 5 MB, 23:59 105 MB (+100, February); Mar 1 00:00 205 MB (+100, March: the
        # increase belongs to the later sample); Mar 1 00:01 10 MB (a reset: +10); Mar 2 09:00 200 MB (+190).
        await api.feed("HN00000001", [
            sample(1, at("2025-02-28 23:58"), data_bytes=5 * MB),
            sample(2, at("2025-02-28 23:59"), data_bytes=105 * MB),
            sample(3, at("2025-03-01 00:00"), data_bytes=205 * MB),
            sample(4, at("2025-03-01 00:01"), data_bytes=10 * MB),
        ])
        await api.feed("HN00000001", [sample(5, at("2025-03-02 09:00"), data_bytes=200 * MB)])
        # HN00000002: 7 MB then 8 MB (+1). HN00000003 reports no counter at all.
        await api.feed("HN00000002", [sample(1, at("2025-03-02 10:00"), data_bytes=7 * MB),
                                      sample(2, at("2025-03-02 10:01"), data_bytes=8 * MB)])
        await api.feed("HN00000003", [sample(1, at("2025-03-02 10:00"))])
        api.clock.t = at("2025-03-03 12:00")
        await api.settle()

        r = await api.get("/api/v1/units/HN00000001/data", role="viewer")
        assert r.status_code == 200, r.text
        u = r.json()
        assert (u["month"], u["used_bytes"], u["plan_mb"], u["share"], u["resets"]) == ("2025-03", 300 * MB, 500, 0.6, 1)
        assert [(d["date"], d["used_mb"]) for d in u["days"]] == [("2025-03-01", 110.0), ("2025-03-02", 190.0)]
        feb = (await api.get("/api/v1/units/HN00000001/data", month="2025-02")).json()
        assert (feb["used_mb"], feb["projected_mb"]) == (100.0, 100.0)  # a past month projects to what it used
        assert (await api.req("POST", "/api/v1/alerts/evaluate")).status_code == 200
        assert (await api.get("/api/v1/alerts", kind="sim_data")).json()["total"] == 0  # 60 %: no alert yet

        # A late sample for Mar 1 12:00 arrives after Mar 2 was stored: 10 -> 260 MB (+250), and Mar 2's first
        # reading 200 MB is now a reset after 260 (+200 instead of +190). March: 100 + 10 + 250 + 200 = 560 MB.
        await api.feed("HN00000001", [sample(6, at("2025-03-01 12:00"), data_bytes=260 * MB)])
        api.clock.t = at("2025-03-03 12:00")
        await api.settle()
        u = (await api.get("/api/v1/units/HN00000001/data")).json()
        assert (u["used_mb"], u["share"], u["resets"]) == (560.0, 1.12, 2)
        assert [(d["date"], d["used_mb"]) for d in u["days"]] == [("2025-03-01", 360.0), ("2025-03-02", 200.0)]
        # 2.5 days of a 31-day month gone: 560 MB * 31 / 2.5 = 6,944 MB at month end
        assert u["projected_mb"] == 6944.0
        feb = (await api.get("/api/v1/units/HN00000001/data", month="2025-02")).json()
        assert feb["used_mb"] == 100.0

        fleet = (await api.get("/api/v1/analytics/sim-data", role="viewer")).json()
        assert [(i["sn"], i["used_mb"], i["reported"]) for i in fleet["items"]] == [
            ("HN00000001", 560.0, True), ("HN00000002", 1.0, True), ("HN00000003", 0.0, False)]
        assert (fleet["reporting"], fleet["over_80"], fleet["over_100"], fleet["total_mb"]) == (2, 1, 1, 561.0)
        one_county = (await api.get("/api/v1/analytics/sim-data", county="龙华区")).json()
        assert [i["sn"] for i in one_county["items"]] == ["HN00000003"]
        assert (await api.get("/api/v1/analytics/sim-data", month="2025-13")).status_code == 422
        assert (await api.get("/api/v1/units/HN09999999/data")).status_code == 404

        # alerts: 80 % and 100 % for HN00000001 this month, nothing for the others
        await api.req("POST", "/api/v1/alerts/evaluate")
        alerts = (await api.get("/api/v1/alerts", kind="sim_data")).json()["items"]
        assert sorted((a["sn"], a["data"]["threshold_pct"]) for a in alerts) == [("HN00000001", 80), ("HN00000001", 100)]
        assert all("560.0 MB" in a["message"] for a in alerts)
        # evaluated again: the same two alerts, not new ones
        await api.req("POST", "/api/v1/alerts/evaluate")
        assert (await api.get("/api/v1/alerts", kind="sim_data")).json()["total"] == 2

        # the operations report, March 1-2: both reporting units, 561 MB, one over the plan
        r = await api.get("/api/v1/reports/ops", **{"from": "2025-03-01T00:00:00+08:00", "to": "2025-03-03T00:00:00+08:00",
                                                   "format": "csv", "lang": "en"})
        assert r.status_code == 200, r.text
        text = r.content.decode("utf-8-sig")
        assert "2025-03,500,2,561.0,1,1" in text
        assert "2025-03,HN00000001,卫生室V001,秀英区,560.0,112.0" in text  # the CSV's shares are percent (issue 17)
        assert "no SIM data use" not in text
        html = (await api.get("/api/v1/reports/ops", **{"from": "2025-03-01T00:00:00+08:00",
                                                       "to": "2025-03-03T00:00:00+08:00"})).text
        assert "流量最多的终端" in html and "112.00 %" in html
        # a county where no unit reported a counter says so
        r = await api.get("/api/v1/reports/ops", **{"from": "2025-03-01T00:00:00+08:00", "to": "2025-03-03T00:00:00+08:00",
                                                   "format": "csv", "lang": "en", "county": "龙华区"})
        assert "No unit reported a data counter in this period" in r.content.decode("utf-8-sig")


async def test_plan_from_settings(tmp_path: Path) -> None:
    async with make_api(tmp_path, extra={"analytics": {"sim_plan_mb": 100}}) as api:
        await _register(api)
        await api.feed("HN00000002", [sample(1, at("2025-03-02 10:00"), data_bytes=0),
                                      sample(2, at("2025-03-02 10:01"), data_bytes=85 * MB)])
        await api.settle()
        u = (await api.get("/api/v1/units/HN00000002/data")).json()
        assert (u["plan_mb"], u["share"]) == (100, 0.85)
        await api.req("POST", "/api/v1/alerts/evaluate")
        alerts = (await api.get("/api/v1/alerts", kind="sim_data")).json()["items"]
        assert [a["data"]["threshold_pct"] for a in alerts] == [80]


async def test_the_alert_share_is_reached_at_exactly_80_percent_and_not_a_byte_before(tmp_path: Path) -> None:
    """The alert pass reads only the units at 80 % or more (issue 15: not an item for each of the fleet's units):
    exactly 80 MB of a 100 MB plan is an alert, one byte less is not."""
    async with make_api(tmp_path, extra={"analytics": {"sim_plan_mb": 100}}) as api:
        await _register(api)
        for sn, used in (("HN00000001", 80 * MB), ("HN00000002", 80 * MB - 1)):
            await api.feed(sn, [sample(1, at("2025-03-02 10:00"), data_bytes=0),
                                sample(2, at("2025-03-02 10:01"), data_bytes=used)])
        await api.settle()
        await api.req("POST", "/api/v1/alerts/evaluate")
        alerts = (await api.get("/api/v1/alerts", kind="sim_data")).json()["items"]
        assert [(a["sn"], a["data"]["threshold_pct"]) for a in alerts] == [("HN00000001", 80)]


# pure parts, on literal values ---------------------------------------------------------------------------
def test_increase_counts_a_reset_from_zero() -> None:
    assert increase(None, 500) == (0, False)  # first reading ever: base unknown
    assert increase(100, 350) == (250, False)
    assert increase(350, 350) == (0, False)
    assert increase(350, 40) == (40, True)  # modem rebooted: 40 bytes since


def test_summarise_day_literal() -> None:
    row = summarise_day(1, [(60, 100), (120, 300), (180, 50), (240, 80)], prev=(0, 90))
    assert (row["carry"], row["within"], row["resets"], row["samples"]) == (10, 200 + 50 + 30, 1, 4)
    assert (row["first_ts"], row["first_bytes"], row["last_ts"], row["last_bytes"]) == (60, 100, 240, 80)


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=40), st.lists(st.integers(1, 39), max_size=5))
def test_days_add_up_to_one_pass(readings: list[int], cuts: list[int]) -> None:
    """However the readings fall into days, the day rows (within + carry) add up to one pass over them all."""
    points = [(60 * k, b) for k, b in enumerate(readings)]
    straight = sum(increase(a, b)[0] for a, b in zip(readings, readings[1:], strict=False))
    bounds = sorted({c for c in cuts if c < len(points)} | {0, len(points)})
    total, prev = 0, None
    for a, b in zip(bounds, bounds[1:], strict=False):
        row = summarise_day(a, points[a:b], prev)
        total += row["within"] + row["carry"]
        prev = (row["last_ts"], row["last_bytes"])
    assert total == straight
