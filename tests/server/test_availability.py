"""Availability through the real app: hand-counted roll-ups, late data, silent units, drill-down, bad input.

The day: Monday 2025-03-03 in Asia/Shanghai. Institution V001 serves mon-fri 08:00-17:30 (570 slots on a
Monday); a unit with no institution gets the default 08:00-18:00 (600 slots).

Unit A (V001) on that day, by hand:
    08:00-10:00  all well                          120 slots
    10:00-10:30  printer out of paper              not intact, network ok
    10:30-11:00  nothing received                  no data
    11:00-12:00  link down (samples sent later)    intact, network not ok
    12:00-13:00  round trip 500 ms (> 400)         intact, network not ok
    13:00-18:00  all well (17:30-18:00 outside hours)
  -> service 570, intact 120+60+60+270 = 510, network ok 120+30+270 = 420, no data 30
"""

from __future__ import annotations

from pathlib import Path

from tests.server.conftest import Api, at, make_api, sample
from wire.messages import Check

DAY = {"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-04T00:00:00+08:00"}
PAPER_OUT = {"printer": Check(1, "paper_out"), "idcard": Check(0), "modem": Check(0), "storage": Check(0)}


async def _setup(api: Api) -> None:
    for code, county, hours in (("V001", "秀英区", "mon-fri=08:00-17:30;sat=08:00-12:00"), ("H001", "秀英区", ""),
                                ("L001", "龙华区", "")):
        r = await api.req("PUT", f"/api/v1/institutions/{code}", json={"name": code, "county": county, "hours": hours,
                                                                       "region": "海口市"})
        assert r.status_code == 200, r.text
    for sn, inst in (("HNA0000001", "V001"), ("HNC0000001", "V001"), ("HND0000001", "H001"), ("HNE0000001", "H001")):
        assert (await api.req("PUT", f"/api/v1/registry/units/{sn}", json={"institution": inst})).status_code == 200
    assert (await api.req("PUT", "/api/v1/registry/units/HNB0000001", json={})).status_code == 200


async def _unit_a_day(api: Api) -> None:
    a = "HNA0000001"
    await api.minutes(a, at("2025-03-03 08:00"), 120)
    await api.minutes(a, at("2025-03-03 10:00"), 30, checks=PAPER_OUT)
    await api.minutes(a, at("2025-03-03 11:00"), 60, connected=False, rtt_ms=None)
    await api.minutes(a, at("2025-03-03 12:00"), 60, rtt_ms=500)
    await api.minutes(a, at("2025-03-03 13:00"), 300)


async def _unit_a_day_counted(api: Api) -> None:
    """The registry, unit A's day, and the clock at the next midnight with the roll-ups settled."""
    await _setup(api)
    await _unit_a_day(api)
    api.clock.t = at("2025-03-04 00:00")
    await api.settle()


def _items(body: dict) -> dict:
    return {i.get("sn") or i.get("county") or i.get("institution"): i for i in body["items"]}


async def test_day_counted_by_hand(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _setup(api)
        await _unit_a_day(api)
        await api.minutes("HNB0000001", at("2025-03-03 08:00"), 600)
        api.clock.t = at("2025-03-03 20:00")
        # B went to repair at 15:00 (recorded afterwards): its slots from 15:00 leave the denominator
        r = await api.req("POST", "/api/v1/registry/units/HNB0000001/status",
                          json={"status": "in_repair", "at": "2025-03-03T15:00:00+08:00", "note": "主板"})
        assert r.status_code == 200, r.text
        api.clock.t = at("2025-03-04 00:00")
        await api.settle()
        body = (await api.get("/api/v1/availability", group_by="unit", **DAY)).json()
        assert body["complete"] is True and body["counted_to"] == "2025-03-04T00:00:00+08:00"
        units = _items(body)
        a = units["HNA0000001"]
        assert (a["service_slots"], a["intact_slots"], a["network_ok_slots"], a["no_data_slots"]) == (570, 510, 420, 30)
        assert a["device_rate"] == round(510 / 570, 6) and a["flagged"] is True
        b = units["HNB0000001"]
        assert (b["service_slots"], b["intact_slots"], b["network_ok_slots"], b["no_data_slots"]) == (420, 420, 420, 0)
        assert b["flagged"] is False
        # a registered unit that never reported: every service slot is no data
        c = units["HNC0000001"]
        assert (c["service_slots"], c["intact_slots"], c["no_data_slots"]) == (570, 0, 570) and c["flagged"]
        # groups sum their units' slots; rates are of the sums
        county = (await api.get("/api/v1/availability", group_by="county", **DAY)).json()
        xy = _items(county)["秀英区"]
        assert xy["units"] == 4 and xy["flagged_units"] == 4  # D and E silent too
        assert xy["service_slots"] == 570 * 2 + 600 * 2 and xy["intact_slots"] == 510
        fleet = (await api.get("/api/v1/availability", **DAY)).json()["fleet"]
        assert fleet["service_slots"] == 570 * 2 + 600 * 2 + 420 and fleet["units"] == 5
        assert fleet["tier"] == 3 and fleet["final_payment"] == 0.4
        # a part of the day answers from hour slices: 08:00-13:00
        part = (await api.get("/api/v1/availability", group_by="unit", sn="HNA0000001",
                              **{"from": "2025-03-03T08:00:00+08:00", "to": "2025-03-03T13:00:00+08:00"})).json()
        p = part["items"][0]
        assert (p["service_slots"], p["intact_slots"], p["network_ok_slots"], p["no_data_slots"]) == (300, 240, 150, 30)
        # the same instant written with another offset gives the same figures
        utc = (await api.get("/api/v1/availability", group_by="unit", sn="HNA0000001",
                             **{"from": "2025-03-03T00:00:00Z", "to": "2025-03-03T05:00:00+00:00"})).json()
        assert utc["items"][0]["service_slots"] == 300 and utc["items"][0]["intact_slots"] == 240


async def test_rollups_equal_the_direct_count(tmp_path: Path) -> None:
    """Stored hour roll-ups, summed by the API, equal the pure counter run over the raw samples."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from counting.counter import count_unit
    from server.availability.rollups import counter_samples

    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _setup(api)
        await _unit_a_day(api)
        # a second day with a lunch-time outage and overlapping duplicate samples from a second outbox epoch
        await api.minutes("HNA0000001", at("2025-03-04 08:00"), 240)
        await api.feed("HNA0000001", [sample(k, at("2025-03-04 09:00") + 60 * k, connected=False) for k in range(15)],
                       epoch=2)
        api.clock.t = at("2025-03-05 10:00")
        await api.settle()
        storage = api.app.state.storage
        rows = await storage.samples_between(["HNA0000001"], at("2025-03-03 00:00"), at("2025-03-05 10:00"))
        tz = ZoneInfo("Asia/Shanghai")
        direct = count_unit(datetime(2025, 3, 3, tzinfo=tz), datetime(2025, 3, 5, 10, tzinfo=tz),
                            counter_samples(rows, ["printer", "idcard", "modem", "storage"], 400),
                            hours={"mon-fri": "08:00-17:30", "sat": "08:00-12:00"}, tz=tz,
                            status_history=[(at("2025-03-03 07:00"), "in_service")], initial_status="spare")
        body = (await api.get("/api/v1/availability", group_by="unit", sn="HNA0000001",
                              **{"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-05T10:00:00+08:00"})).json()
        got = body["items"][0]
        assert (got["service_slots"], got["intact_slots"], got["network_ok_slots"], got["no_data_slots"]) == \
            direct.figures.counts()
        assert direct.figures.network_ok_slots == 420 + 240 - 15  # the duplicates' link-down minutes count


async def test_late_samples_recount_the_hours_they_cover(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _unit_a_day_counted(api)
        q = {"group_by": "unit", "sn": "HNA0000001", **DAY}
        before = (await api.get("/api/v1/availability", **q)).json()["items"][0]
        assert before["no_data_slots"] == 30
        # the terminal's outbox delivers 10:30-11:00, taken with the link down, the next morning
        api.clock.t = at("2025-03-04 09:10")
        await api.feed("HNA0000001", [sample(5000 + k, at("2025-03-03 10:30") + 60 * k, connected=False)
                                      for k in range(30)])
        pending = (await api.get("/api/v1/availability", **q)).json()
        assert pending["complete"] is False  # the period has late data not yet recounted
        await api.settle()
        after = (await api.get("/api/v1/availability", **q)).json()
        assert after["complete"] is True
        a = after["items"][0]
        assert (a["service_slots"], a["intact_slots"], a["network_ok_slots"], a["no_data_slots"]) == (570, 540, 420, 0)


async def test_flagged_reasons_explain_the_figures_beside_them_until_late_data_is_recounted(tmp_path: Path) -> None:
    """The flagged list's minutes by reason come from the codes stored with the hours the figures sum: a late
    batch waiting for its recount changes neither; the recount changes both. Hours stored without codes (a
    database from before they were kept) are explained from the raw samples."""
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _unit_a_day_counted(api)

        async def flagged_a() -> tuple[dict, dict]:
            fl = (await api.get("/api/v1/availability/flagged", **DAY)).json()
            a = next(u for u in fl["items"] if u["sn"] == "HNA0000001")
            return a["reasons"]["minutes"], a

        before, a = await flagged_a()
        assert before == {"link_down": 60, "no_data": 30, "printer=paper_out": 30, "latency": 60}
        assert a["no_data_slots"] == before["no_data"] and a["service_slots"] - a["network_ok_slots"] == 60 + 60 + 30
        # the roll-up loop paused, as recount_debounce_s would hold it in the field: on PostgreSQL it polls every 5 s
        # and a second arrival ends its quiet period, so it could recount between the feed and the look below
        await api.app.state.availability.stop()
        api.clock.t = at("2025-03-04 09:10")  # 10:30-11:00, taken with the link down, delivered the next morning
        await api.feed("HNA0000001", [sample(5000 + k, at("2025-03-03 10:30") + 60 * k, connected=False)
                                      for k in range(30)])
        waiting, a = await flagged_a()
        assert waiting == before and a["no_data_slots"] == 30  # the figures are not recounted yet, nor the reasons
        await api.settle()
        after, a = await flagged_a()
        assert after == {"printer=paper_out": 30, "link_down": 90, "latency": 60} and a["no_data_slots"] == 0
        # no stored codes for the day (purged here as a database from before they were kept lacks them)
        await api.app.state.storage.purge_slot_hours(739314)  # (2025-03-04: the days before it)
        assert await api.app.state.storage.slot_hours("HNA0000001", 739313) == []
        assert (await flagged_a())[0] == after


async def test_drill_down_says_which_slot_failed_and_why(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _setup(api)
        await _unit_a_day(api)
        for sn in ("HND0000001", "HNE0000001"):  # two neighbours in the county lose the link 11:00-11:10 too
            await api.minutes(sn, at("2025-03-03 11:00"), 10, connected=False, rtt_ms=None)
        api.clock.t = at("2025-03-04 00:00")
        await api.settle()
        r = await api.get("/api/v1/units/HNA0000001/slots", role="viewer", date="2025-03-03")
        assert r.status_code == 200, r.text
        body = r.json()
        slots = {s["start"][11:16]: s for s in body["slots"]}
        assert len(body["slots"]) == 1440
        assert slots["07:59"]["counted"] is False and slots["07:59"]["excluded"] == "outside_service_hours"
        assert slots["10:15"]["device"] == "not_intact" and slots["10:15"]["device_reasons"] == ["printer=paper_out"]
        assert slots["10:15"]["network"] == "ok"
        assert slots["10:45"]["device"] == "no_data" and slots["10:45"]["network"] == "no_data"
        assert slots["11:05"]["network_reasons"] == ["link_down"] and slots["11:05"]["likely_carrier_outage"] is True
        assert slots["11:30"]["network_reasons"] == ["link_down"] and "likely_carrier_outage" not in slots["11:30"]
        assert slots["12:30"]["network_reasons"] == ["rtt=500ms"] and slots["12:30"]["device"] == "intact"
        assert slots["17:45"]["excluded"] == "outside_service_hours"
        assert slots["06:00"]["counted"] is False
        # the stored hours beside the slots add up to the same figures
        f = body["figures"]
        assert sum(h["service_slots"] for h in body["stored_hours"]) == f["service_slots"] == 570
        assert sum(h["intact_slots"] for h in body["stored_hours"]) == f["intact_slots"] == 510
        # flagged units come with their minutes lost by reason
        fl = (await api.get("/api/v1/availability/flagged", **DAY)).json()
        a = next(u for u in fl["items"] if u["sn"] == "HNA0000001")
        assert a["below"] == ["device_rate", "network_rate"]
        assert a["reasons"]["minutes"] == {"link_down": 50, "no_data": 30, "printer=paper_out": 30, "latency": 60,
                                           "link_down_carrier_outage": 10}


async def test_bad_periods_are_refused_naming_the_field(api: Api) -> None:
    cases = [
        ({"from": "2025-03-03T00:00:00+8", "to": "2025-03-04T00:00:00+08:00"}, "from"),  # (a local time is fine)
        ({"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-04T00:30:00+08:00"}, "to"),
        ({"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-02T00:00:00+08:00"}, "to"),
        ({"from": "yesterday", "to": "2025-03-04T00:00:00+08:00"}, "from"),
        ({"to": "2025-03-04T00:00:00+08:00"}, "from"),
        ({**DAY, "group_by": "planet"}, "group_by"),
    ]
    for params, fld in cases:
        r = await api.get("/api/v1/availability", role="viewer", **params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["errors"][0]["field"] == fld, (params, r.json())
    r = await api.get("/api/v1/units/HN1/slots", date="3 March")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "date"


async def test_recount_endpoint_is_for_admins_and_redoes_a_period(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _unit_a_day_counted(api)
        r = await api.req("POST", "/api/v1/availability/recount", role="engineer", json=DAY)
        assert r.status_code == 403
        r = await api.req("POST", "/api/v1/availability/recount", json={**DAY, "sns": ["HNA0000001"]})
        assert r.status_code == 200 and r.json()["unit_hours"] == 24
        a = (await api.get("/api/v1/availability", group_by="unit", sn="HNA0000001", **DAY)).json()["items"][0]
        assert (a["service_slots"], a["intact_slots"], a["network_ok_slots"]) == (570, 510, 420)


async def test_drill_down_json_is_the_reference_form_and_a_late_sample_replaces_the_cached_day(tmp_path: Path) -> None:
    """The API's drill-down (built from the counter's codes, cached for a day that is over) equals the reference
    form slot for slot: reasons, carrier outage, outside hours, a status change, a unit registered mid-day."""
    import json
    from datetime import date

    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _setup(api)
        await _unit_a_day(api)
        for sn in ("HND0000001", "HNE0000001"):
            await api.minutes(sn, at("2025-03-03 11:00"), 10, connected=False, rtt_ms=None)
        await api.minutes("HNB0000001", at("2025-03-03 08:00"), 600)
        api.clock.t = at("2025-03-03 12:00")  # F is registered at noon: its morning slots are "not_registered"
        assert (await api.req("PUT", "/api/v1/registry/units/HNF0000001", json={"institution": "V001"})).status_code == 200
        await api.minutes("HNF0000001", at("2025-03-03 12:00"), 60)
        api.clock.t = at("2025-03-04 00:00")
        r = await api.req("POST", "/api/v1/registry/units/HNB0000001/status",
                          json={"status": "in_repair", "at": "2025-03-03T15:00:00+08:00"})
        assert r.status_code == 200, r.text
        await api.settle()
        svc = api.app.state.availability
        d = date(2025, 3, 3)
        for sn in ("HNA0000001", "HNB0000001", "HNF0000001", "HNC0000001"):
            ref = await svc.slots(sn, d)
            got = (await api.get(f"/api/v1/units/{sn}/slots", date="2025-03-03")).json()
            assert got == ref, sn
            assert json.loads(await svc.slots_json(sn, d)) == ref  # again: from the cache
        b = {s["start"][11:16]: s for s in (await svc.slots("HNB0000001", d))["slots"]}
        assert b["15:30"]["excluded"] == "in_repair" and b["14:30"]["counted"] is True
        f = {s["start"][11:16]: s for s in (await svc.slots("HNF0000001", d))["slots"]}
        assert f["09:00"]["excluded"] == "not_registered" and f["12:30"]["device"] == "intact"
        # a late sample for that day changes the answer at once (before any recount)
        before = (await api.get("/api/v1/units/HNA0000001/slots", date="2025-03-03")).json()
        assert {s["start"][11:16]: s for s in before["slots"]}["10:45"]["device"] == "no_data"
        await api.feed("HNA0000001", [sample(7000, at("2025-03-03 10:45"))])
        after = (await api.get("/api/v1/units/HNA0000001/slots", date="2025-03-03")).json()
        assert {s["start"][11:16]: s for s in after["slots"]}["10:45"]["device"] == "intact"
        ref = await svc.slots("HNA0000001", d)  # (its stored hours may already include the recount of that hour)
        assert (after["slots"], after["figures"]) == (ref["slots"], ref["figures"])


async def test_drill_down_reads_the_codes_stored_with_the_roll_ups_and_recounts_when_they_may_be_stale(
        tmp_path: Path) -> None:
    """A closed day's drill-down is rebuilt from the per-slot codes the roll-up pass stored (no raw samples
    recounted), equal to the reference form; a late sample, or a status change dated in that day, makes it count
    the raw samples again until the recount has stored new codes; the codes go with the raw samples' retention."""
    from datetime import date

    async with make_api(tmp_path, extra={"retention_days": 3}, now="2025-03-02 23:30") as api:  # every hour rolled
        await _setup(api)
        await _unit_a_day(api)
        await api.minutes("HNB0000001", at("2025-03-03 08:00"), 600)
        api.clock.t = at("2025-03-04 00:00")
        await api.settle()
        svc = api.app.state.availability
        # no pass of the roll-up loop between a drill-down and its reference (on PostgreSQL the leader's loop polls
        # every 5 s; it used to sit out this test waiting for a second wake that a marked unit's pass had left)
        await svc.stop()
        d = date(2025, 3, 3)

        async def drill(sn: str, from_stored: bool) -> dict:
            n = svc.drill_from_stored
            got = (await api.get(f"/api/v1/units/{sn}/slots", date="2025-03-03")).json()
            assert svc.drill_from_stored == n + (1 if from_stored else 0), (sn, from_stored)
            ref = await svc.slots(sn, d)  # the reference: counted from the raw samples
            assert got == ref, sn
            return {s["start"][11:16]: s for s in got["slots"]}

        for sn in ("HNA0000001", "HNB0000001", "HNC0000001"):
            await drill(sn, from_stored=True)
        # a late sample: counted from the raw samples at once, from new codes after the recount
        await api.feed("HNA0000001", [sample(7000, at("2025-03-03 10:45"))])
        assert (await drill("HNA0000001", from_stored=False))["10:45"]["device"] == "intact"
        await api.settle()
        assert (await drill("HNA0000001", from_stored=True))["10:45"]["device"] == "intact"
        # B sent to repair at 15:00, recorded afterwards: its slots from 15:00 are excluded at once
        r = await api.req("POST", "/api/v1/registry/units/HNB0000001/status",
                          json={"status": "in_repair", "at": "2025-03-03T15:00:00+08:00"})
        assert r.status_code == 200, r.text
        assert (await drill("HNB0000001", from_stored=False))["15:30"]["excluded"] == "in_repair"
        await api.settle()
        assert (await drill("HNB0000001", from_stored=True))["15:30"]["excluded"] == "in_repair"
        # past the raw samples' retention (3 days) the stored codes are purged with the samples' day
        assert len(await api.app.state.storage.slot_hours("HNA0000001", d.toordinal())) == 24
        api.clock.t = at("2025-03-07 01:00")
        await api.settle()
        assert await api.app.state.storage.slot_hours("HNA0000001", d.toordinal()) == []


async def test_an_api_only_process_says_incomplete_while_the_primary_has_late_data_to_recount(tmp_path: Path) -> None:
    """Two processes on one database (here two apps in one test): a late sample reaches the primary, which marks
    the hour for recount; the API-only process cannot see that mark, so the primary publishes its pending hours
    and the API process's figures for that day say ``complete: false`` until the recount is done."""
    import httpx

    from server.app import create_app, publish_for_workers

    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _unit_a_day_counted(api)
        worker = create_app(api.app.state.settings, role="api")
        worker.state.clock = api.clock
        async with worker.router.lifespan_context(worker), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=worker), base_url="http://worker") as w:
            sent: dict[str, str] = {}

            async def complete() -> bool:
                await publish_for_workers(api.app, sent)
                worker.state.storage._versions_at = float("-inf")  # (instead of waiting out the 1 s re-read)
                r = await w.get("/api/v1/availability", params=DAY, headers=api.h("viewer"))
                assert r.status_code == 200, r.text
                return bool(r.json()["complete"])

            assert await complete() is True
            await api.feed("HNA0000001", [sample(7000, at("2025-03-03 10:45"))])  # late: the hour is closed
            assert await complete() is False
            assert (await api.get("/api/v1/availability", **DAY)).json()["complete"] is False  # the primary agrees
            await api.settle()
            assert await complete() is True


async def test_an_answer_read_while_late_data_is_recounted_is_not_complete(tmp_path: Path) -> None:
    """Issue 16: the answer read right after "complete" differed from the drill-down read seconds later. The
    recount pass had taken the marked hours off its list before counting them, so while it ran nothing was
    pending and the old roll-ups answered as complete. The hours count as pending until the recount commits."""
    import asyncio
    import contextlib

    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _unit_a_day_counted(api)
        q = {"group_by": "unit", "sn": "HNA0000001", **DAY}
        api.clock.t = at("2025-03-04 09:10")
        await api.feed("HNA0000001", [sample(5000 + k, at("2025-03-03 10:30") + 60 * k, connected=False)
                                      for k in range(30)])
        svc = api.app.state.availability
        storage_lock = svc.storage.recount_lock
        entered, go = asyncio.Event(), asyncio.Event()

        @contextlib.asynccontextmanager
        async def slow_lock():  # the recount waits here, as a long recount of many units would take its time
            entered.set()
            await go.wait()
            async with storage_lock():
                yield

        svc.storage.recount_lock = slow_lock
        task = asyncio.create_task(svc.flush())
        await entered.wait()
        during = (await api.get("/api/v1/availability", **q)).json()
        status = (await api.get("/api/v1/availability/status")).json()
        assert during["complete"] is False and status["pending_unit_hours"] > 0, (during["complete"], status)
        go.set()
        await task
        svc.storage.recount_lock = storage_lock
        after = (await api.get("/api/v1/availability", **q)).json()
        assert after["complete"] is True and after["items"][0]["no_data_slots"] == 0
        assert (await api.get("/api/v1/availability/status")).json()["pending_unit_hours"] == 0


async def test_the_figures_dashboards_open_with_are_counted_before_anyone_asks(tmp_path: Path) -> None:
    """Every API-serving process counts the last whole quarter and this month by county at start and again after
    the registry changes, so the first dashboard asking does not wait for a first count of every unit (4-7 s at
    210,000 units, issue 15): its request reads no roll-up piece and gets the same answer as a cold count."""
    import asyncio

    async with make_api(tmp_path, {"availability": {"warm_figures_s": 0.2}}) as api:
        await _setup(api)
        await _unit_a_day(api)
        api.clock.t = at("2025-03-04 00:00")
        await api.settle()
        svc = api.app.state.availability
        start, end = svc.warm_periods()[1]  # March 2025, the clock's month
        assert (start, end) == (at("2025-03-01 00:00"), at("2025-04-01 00:00"))
        for _ in range(100):  # the loop notices the registry and the roll-ups within a second or two
            universe = svc._pieces._universe
            if universe is not None and len(universe.units) == 5 and svc._cache:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # one more turn: the pieces of the settled roll-ups
        reads = svc._pieces.reads
        month = {"from": "2025-03-01T00:00:00+08:00", "to": "2025-04-01T00:00:00+08:00", "group_by": "county"}
        warm = (await api.get("/api/v1/availability", **month)).json()
        quarter = {"from": "2024-10-01T00:00:00+08:00", "to": "2025-01-01T00:00:00+08:00", "group_by": "county"}
        assert (await api.get("/api/v1/availability", **quarter)).status_code == 200
        assert svc._pieces.reads == reads  # both answered from what the process counted ahead
        assert _items(warm)["秀英区"]["service_slots"] > 0
        svc._pieces._entries.clear()  # a cold count gives the same answer
        svc._cache.clear()
        assert (await api.get("/api/v1/availability", **month)).json() == warm
