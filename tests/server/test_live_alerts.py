"""Live analytics, network quality and alerts through the real app (ingest path, SQLite, background rules).

Online state depends on when messages *arrived* (wall clock), so these tests put the server clock on real time.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

from tests.server.conftest import Api, make_api, sample
from wire.messages import Check, Event, FsStat

ALL_DAY = "00:00-24:00"  # so the offline rule does not depend on the hour the test runs


async def _fleet(api: Api) -> int:
    t0 = int(time.time()) // 3600 * 3600 - 3 * 3600
    api.clock.t = t0
    for code, county, typ in (("H001", "秀英区", "乡镇卫生院"), ("V001", "秀英区", "村卫生室"), ("V002", "龙华区", "村卫生室")):
        r = await api.req("PUT", f"/api/v1/institutions/{code}", json={"name": f"机构{code}", "county": county,
                                                                       "type": typ, "hours": ALL_DAY})
        assert r.status_code == 200, r.text
    for sn, inst, link in (("HN00000001", "H001", "4g_vpdn"), ("HN00000002", "V001", "wired"),
                           ("HN00000003", "V002", "4g_vpdn")):
        r = await api.req("PUT", f"/api/v1/registry/units/{sn}", json={"institution": inst, "link_type": link})
        assert r.status_code == 200
    inv1 = {"agent": "0.1.0", "components": {"app": "2.3.1"}, "iccid": "89860012345678901234", "imsi": "460001234567890",
            "carrier": "CMCC"}
    inv2 = {"agent": "0.1.0", "components": {"app": "2.2.0"}, "iccid": "89860198765432109876", "imsi": "460011234567890"}
    await api.feed("HN00000001", [], [Event(seq=0, ts=t0, kind="inventory", data=inv1)])
    await api.feed("HN00000002", [], [Event(seq=0, ts=t0, kind="inventory", data=inv2)])
    bad = {"printer": Check(1, "cover_open"), "idcard": Check(0), "modem": Check(0), "storage": Check(0)}
    await api.minutes("HN00000001", t0, 59, rtt_ms=120)
    await api.feed("HN00000001", [sample(1000, t0 + 59 * 60, checks=bad,
                                         fs=[FsStat("/", 8000, 7600, True), FsStat("/boot", 100, 20, True)])])
    await api.minutes("HN00000002", t0, 60, rtt_ms=40)
    return t0


async def test_live_dashboard_counts(tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        await _fleet(api)
        r = await api.get("/api/v1/analytics/live", role="viewer")
        assert r.status_code == 200, r.text
        live = r.json()
        assert (live["in_service"], live["online"], live["offline"]) == (3, 2, 1)
        assert live["online_share"] == round(2 / 3, 4)
        assert live["by_carrier"] == {"China Mobile": 1, "China Unicom": 1, "unknown": 1}
        assert live["by_link_type"] == {"4g_vpdn": 2, "wired": 1}
        assert live["software_versions"]["app"] == {"2.3.1": 1, "2.2.0": 1}
        assert live["software_versions"]["agent"] == {"0.1.0": 2, "unknown": 1}
        assert live["deployment_by_county"] == {"秀英区": {"in_service": 2}, "龙华区": {"in_service": 1}}
        assert live["deployment_by_institution_type"] == {"village_clinic": 2, "health_centre": 1}
        assert live["institutions_worst"][0]["institution"] == "V002"
        assert live["institutions_worst"][0]["online_rate"] == 0.0
        assert {i["institution"] for i in live["institutions_best"][:2]} == {"H001", "V001"}


async def test_network_quality_per_unit_and_county(tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        t0 = int(time.time()) // 60 * 60 - 3600
        api.clock.t = t0
        await api.req("PUT", "/api/v1/institutions/H001", json={"name": "x", "county": "秀英区"})
        await api.req("PUT", "/api/v1/registry/units/HN00000009", json={"institution": "H001"})
        # 10 minutes: rtt alternating 300/700 ms, jitter 60 ms, 5 retransmissions in 2,000 segments (2.5e-3)
        items = [sample(k, t0 + 60 * k, rtt_ms=300 if k % 2 else 700, rtt_var_ms=60, retrans=k // 2,
                        segs_out=200 * k) for k in range(11)]
        await api.feed("HN00000009", items)
        api.clock.t = t0 + 11 * 60
        q = (await api.get("/api/v1/units/HN00000009/network", hours=1)).json()
        assert q["latency_ms"] == round((5 * 300 + 6 * 700) / 11, 1) and q["latency_ok"] is False
        assert q["jitter_ms"] == 60 and q["jitter_ok"] is False
        assert q["loss"] == 0.0025 and q["loss_ok"] is False
        county = (await api.get("/api/v1/analytics/network", county="秀英区", hours=1)).json()
        assert county["counties"][0]["latency_ok_share"] == 0.0 and county["units"][0]["sn"] == "HN00000009"


async def test_alerts_raise_acknowledge_and_clear(tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        t0 = await _fleet(api)
        # the SIM of unit 1 is swapped: a new inventory with another ICCID
        await api.feed("HN00000001", [], [Event(seq=0, ts=t0 + 3700, kind="inventory",
                                                data={"iccid": "89860055555555555555", "imsi": "460001234567891"})],
                       epoch=2)
        # an hour later nothing more has arrived from anyone
        api.clock.t = time.time() + 3600
        r = await api.req("POST", "/api/v1/alerts/evaluate")
        assert r.status_code == 200, r.text
        alerts = (await api.get("/api/v1/alerts", role="viewer")).json()["items"]
        kinds = {(a["kind"], a["sn"]) for a in alerts}
        assert ("fault", "HN00000001") in kinds and ("storage", "HN00000001") in kinds
        assert ("sim_changed", "HN00000001") in kinds
        assert ("offline", "HN00000001") in kinds and ("offline", "HN00000002") in kinds
        fault = next(a for a in alerts if a["kind"] == "fault")
        assert fault["data"]["check"] == "printer" and "cover_open" in fault["message"]
        storage = next(a for a in alerts if a["kind"] == "storage")
        assert storage["data"]["mount"] == "/"  # /boot is 20 % full: no alert
        sim = next(a for a in alerts if a["kind"] == "sim_changed")
        assert "89860012345678901234" not in sim["message"] and sim["message"].endswith("…555555)")
        # acknowledging: engineers may, viewers may not
        assert (await api.req("POST", f"/api/v1/alerts/{fault['id']}/ack", role="viewer")).status_code == 403
        assert (await api.req("POST", f"/api/v1/alerts/{fault['id']}/ack", role="engineer")).status_code == 200
        assert (await api.req("POST", "/api/v1/alerts/99999/ack")).status_code == 404
        # the printer is fixed: the fault alert closes on the next evaluation, the SIM change stays
        await api.feed("HN00000001", [sample(2000, int(time.time()) // 60 * 60)])
        await api.req("POST", "/api/v1/alerts/evaluate")
        open_kinds = {a["kind"] for a in (await api.get("/api/v1/alerts")).json()["items"] if a["sn"] == "HN00000001"}
        assert "fault" not in open_kinds and "sim_changed" in open_kinds
        closed = (await api.get("/api/v1/alerts", open="false", kind="fault")).json()["items"][0]
        assert closed["closed_ts"] is not None and closed["acked_by"] == "t-engineer"


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []
    fail_first = 1

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(503)
        else:
            _Hook.received.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *a: object) -> None:
        pass


async def test_webhook_is_retried_until_it_answers(tmp_path: Path) -> None:
    import asyncio

    srv = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}/hook"
        async with make_api(tmp_path, extra={"alerts": {"webhook_url": url, "interval_s": 3600}}) as api:
            await _fleet(api)
            await api.req("POST", "/api/v1/alerts/evaluate")
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline and len(_Hook.received) < 2:
                await asyncio.sleep(0.1)
            kinds = {b["kind"] for b in _Hook.received}
            assert {"fault", "storage"} <= kinds
            states = {a["kind"]: a["webhook"] for a in (await api.get("/api/v1/alerts")).json()["items"]}
            assert states["fault"] == "sent"
    finally:
        srv.shutdown()


async def test_flagged_waits_for_a_period_whose_data_is_still_arriving(tmp_path: Path) -> None:
    """Units registered as in service for past days before their history arrives (the demo; a roll-out that
    registers ahead): their counted hours are no-data (0.00 %) until the history is in. No flagged alert for them;
    a unit whose history really is bad is flagged once its data has settled."""
    from datetime import datetime as _dt

    from tests.server.conftest import TZ

    async with make_api(tmp_path, extra={"alerts": {"settle_s": 0.5}}) as api:
        now = int(time.time()) // 3600 * 3600
        since = now - 2 * 86400
        api.clock.t = now
        await api.req("PUT", "/api/v1/institutions/H001", json={"name": "x", "county": "秀英区", "hours": ALL_DAY})
        good, bad = "HN00000011", "HN00000012"
        for sn in (good, bad):
            assert (await api.req("PUT", f"/api/v1/registry/units/{sn}", json={"institution": "H001"})).status_code == 200
            r = await api.req("POST", f"/api/v1/registry/units/{sn}/status",
                              json={"status": "in_service", "at": _dt.fromtimestamp(since, TZ).isoformat()})
            assert r.status_code in (200, 201), r.text
        await api.settle()  # one pass for both (the second unit had none of its past hours: tests/server/test_registration_race.py)
        fig = (await api.get("/api/v1/availability", group_by="unit", **{
            "from": _dt.fromtimestamp(since, TZ).isoformat(), "to": _dt.fromtimestamp(now, TZ).isoformat()})).json()
        assert all(u["flagged"] and u["device_rate"] == 0 for u in fig["items"]), "counted as no data so far"

        async def alerts() -> list[dict]:
            await api.req("POST", "/api/v1/alerts/evaluate")
            return (await api.get("/api/v1/alerts", open="false", kind="flagged")).json()["items"]

        assert await alerts() == [], "nothing reported yet: the history may still come"
        printer_out = {"printer": Check(1, "paper_out"), "idcard": Check(0), "modem": Check(0), "storage": Check(0)}
        half = since + 86400
        # the first day of history arrives: counted or not, the unit is still delivering
        await api.feed(good, [sample(k, since + 900 * k, interval=900) for k in range(96)])
        await api.feed(bad, [sample(k, since + 900 * k, interval=900, checks=printer_out) for k in range(96)])
        assert await alerts() == [], "recount pending"
        await api.settle()
        assert await alerts() == [], "still delivering (the newest sample is a day old, the last arrival just now)"
        api.clock.t = now  # feed moved it to the end of the newest sample
        await api.feed(good, [sample(96 + k, half + 900 * k, interval=900) for k in range(96)])
        await api.feed(bad, [sample(96 + k, half + 900 * k, interval=900, checks=printer_out) for k in range(96)])
        await api.settle()
        assert await alerts() == [], "settled, but not yet for settle_s"
        time.sleep(0.6)
        got = await alerts()
        assert [(a["sn"], a["closed_ts"]) for a in got] == [(bad, None)], got
        assert "0.00 %" in got[0]["message"]  # a printer out of paper all along: truly below
