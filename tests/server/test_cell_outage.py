"""Correlated outages by cell site: real app, real SQLite file, hand-made samples through the real ingest path.

Monday 2025-03-03, default service hours 08:00-18:00. Two units of 秀英区 served by cell 10783/123456 lose the link
together 09:20-09:30; a unit of 龙华区 on another cell loses it alone 09:25-09:28. The county rule needs three
units of one county in the same minute, so only the cell rule can explain what the two lost.
"""

from __future__ import annotations

from pathlib import Path

from tests.server.conftest import Api, at, make_api, sample

CELL = (10783, 123456)


async def _setup(api: Api) -> None:
    for code, county in (("V001", "秀英区"), ("V002", "龙华区")):
        r = await api.req("PUT", f"/api/v1/institutions/{code}", json={"name": f"卫生室{code}", "county": county})
        assert r.status_code == 200, r.text
    for sn, inst in (("HN00000001", "V001"), ("HN00000002", "V001"), ("HN00000003", "V002"), ("HN00000004", "V001")):
        assert (await api.req("PUT", f"/api/v1/registry/units/{sn}", json={"institution": inst})).status_code == 200
    t0 = at("2025-03-03 09:00")

    def minute(sn: str, k: int) -> object:
        ts = t0 + 60 * k
        if sn in ("HN00000001", "HN00000002") and 20 <= k < 30:
            # lost the link; HN00000001's modem reports no cell, HN00000002's has reselected a neighbour
            return sample(k, ts, connected=False, rtt_ms=None,
                          **({"tac": CELL[0], "cell_id": 999} if sn == "HN00000002" else {}))
        if sn == "HN00000003":
            if 25 <= k < 28:
                return sample(k, ts, connected=False, rtt_ms=None, tac=20001, cell_id=555)
            return sample(k, ts, tac=20001, cell_id=555)
        return sample(k, ts, tac=CELL[0], cell_id=CELL[1])  # HN00000004 stays up on the same cell

    for sn in ("HN00000001", "HN00000002", "HN00000003", "HN00000004"):
        await api.feed(sn, [minute(sn, k) for k in range(60)])  # type: ignore[misc]
    api.clock.t = at("2025-03-03 12:00")
    await api.settle()


async def test_cell_outage_in_drill_down_alerts_and_report(tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        await _setup(api)
        # drill-down: the ten link-down minutes of each of the two are a likely carrier outage on that cell
        for sn in ("HN00000001", "HN00000002"):
            day = (await api.get(f"/api/v1/units/{sn}/slots", role="viewer", date="2025-03-03")).json()
            down = [s for s in day["slots"] if "link_down" in (s.get("network_reasons") or [])]
            assert [s["start"][11:16] for s in down] == [f"09:{m}" for m in range(20, 30)]
            assert all(s.get("likely_carrier_outage") is True for s in down)
            assert {s["carrier_outage_cell"] for s in down} == {"10783/123456"}
            assert {s["carrier_outage_cell_units"] for s in down} == {2}
        # the unit that was alone on its cell: link down, not explained
        day = (await api.get("/api/v1/units/HN00000003/slots", date="2025-03-03")).json()
        down = [s for s in day["slots"] if "link_down" in (s.get("network_reasons") or [])]
        assert len(down) == 3 and not any(s.get("likely_carrier_outage") for s in down)
        # no county outage was found (two units < three)
        assert all(s.get("carrier_outage_cell") for s in (await api.get(
            "/api/v1/units/HN00000001/slots", date="2025-03-03")).json()["slots"] if s.get("likely_carrier_outage"))

        # alerts: one carrier outage naming the cell, the two units and the ten minutes
        await api.req("POST", "/api/v1/alerts/evaluate")
        alerts = (await api.get("/api/v1/alerts", kind="carrier_outage")).json()["items"]
        assert len(alerts) == 1, alerts
        a = alerts[0]
        assert a["data"]["cell"] == "10783/123456" and a["county"] == "秀英区"
        assert (a["data"]["minutes"], a["data"]["max_units"], a["data"]["sns"]) == (10, 2, ["HN00000001", "HN00000002"])
        assert "10783/123456" in a["message"]

        # the report lists it apart from terminal faults
        r = await api.get("/api/v1/reports/ops", **{"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-03T12:00:00+08:00",
                                                   "format": "csv", "lang": "en"})
        text = r.content.decode("utf-8-sig")
        assert "10783/123456,秀英区,2025-03-03T09:20+08:00,2025-03-03T09:30+08:00,10,2" in text
        assert "20001/555" not in text


async def test_cell_rule_threshold_from_settings(tmp_path: Path) -> None:
    async with make_api(tmp_path, extra={"alerts": {"cell_outage_min_units": 3}}) as api:
        await _setup(api)
        day = (await api.get("/api/v1/units/HN00000001/slots", date="2025-03-03")).json()
        assert not any(s.get("likely_carrier_outage") for s in day["slots"])
        await api.req("POST", "/api/v1/alerts/evaluate")
        assert (await api.get("/api/v1/alerts", kind="carrier_outage")).json()["total"] == 0
