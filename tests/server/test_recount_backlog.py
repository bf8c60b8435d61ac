"""A backlog recounted by the roll-up loop's passes (issue 15): once, whole, and pending until it is.

The loop's pass (``flush(settle=False)``) takes the whole ``recount_queue`` (it took 10,000 spans a pass and went
on only at the next poll, 5 minutes later on SQLite: a 72 h backlog of 3,000 units took 2 h 15 min), and counts a
day's network service levels and an hour's correlated outages once the day's marks have stopped, not in every pass
that recounts one of its hours. Until then the period's figures are not complete.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from tests.backend import db_count
from tests.server.conftest import Api, at, make_api, sample
from wire import codec
from wire.messages import Batch

UNITS = [f"HNQ{n:07d}" for n in range(100)]


async def _register(api: Api, sns: list[str]) -> None:
    r = await api.req("PUT", "/api/v1/institutions/Q001", json={"name": "Q001", "county": "秀英区",
                                                                 "hours": "mon-sun=00:00-24:00", "region": "海口市"})
    assert r.status_code == 200, r.text
    for sn in sns:
        assert (await api.req("PUT", f"/api/v1/registry/units/{sn}", json={"institution": "Q001"})).status_code == 200


async def _answers(api: Api, a: int, b: int, first_day: int, last_day: int) -> tuple:
    svc, storage = api.app.state.availability, api.app.state.storage
    fig = await svc.figures(a, b, "unit")
    return (fig["items"], await storage.sla_sums(first_day, last_day, UNITS),
            await storage.outages_between(a, b, "秀英区"))


async def test_a_queue_of_12000_spans_is_recounted_in_one_pass_and_its_days_once(tmp_path: Path) -> None:
    """120 commits of 100 units each (12,000 spans in recount_queue, as a restart or a follower leaves them): one
    pass of the loop recounts them all, writes every whole day's service levels and the outages (every 10th hour
    all units had the link down), empties the queue, and answers exactly as a full explicit recount."""
    async with make_api(tmp_path, now="2025-02-26 00:00") as api:
        await _register(api, UNITS)
        svc = api.app.state.availability
        await svc.stop()  # its passes are run here, one at a time
        api.clock.t = at("2025-03-03 12:00")
        await svc.flush()  # the hours closed meanwhile, counted as no data: the samples come late
        t0 = at("2025-02-26 12:00")
        for k in range(120):
            ts = t0 + 3600 * k + 1800
            down = k % 10 == 3
            msgs = [(f"pf/{sn}/t", codec.encode(Batch(sn=sn, epoch=1, events=[], samples=[
                sample(k, ts, connected=not down, rtt_ms=None if down else 80 + (k % 7) * 100,
                       rtt_var_ms=None if down else 5, retrans=k, segs_out=1000 * k)])), 0, 0) for sn in UNITS]
            await api.app.state.ingest._process(msgs)
        url = svc.settings.storage.url
        assert db_count(url, "SELECT count(*) FROM recount_queue") == 12000
        svc._dirty.clear()  # only the queue knows (the process that committed them is gone)
        api.clock.t = at("2025-03-03 12:10")
        await svc.flush(settle=False)
        status = (await api.get("/api/v1/availability/status")).json()
        assert db_count(url, "SELECT count(*) FROM recount_queue") == 0
        assert status["pending_unit_hours"] == 0 and status["hours_recounted"] == 100 * 132 + 12000, status
        assert status["pending_sla_unit_days"] == 0 and status["pending_outage_hours"] == 0, status
        a, b = t0, at("2025-03-03 12:00")
        first_day, last_day = at("2025-02-27 00:00"), at("2025-03-02 00:00")
        days = (svc_day(svc, first_day), svc_day(svc, last_day))
        got = await _answers(api, a, b, *days)
        assert (await svc.figures(a, b, "fleet"))["complete"]
        assert sorted(got[1][1]) == list(range(days[0], days[1] + 1))  # every whole past day has its rows
        assert len(got[1][0]) == 100 and all(c[0] == 4 * 24 * 60 for c in got[1][0].values())  # 24 samples a day
        assert len(got[2]) == 12 * 1  # 12 link-down hours, one minute each, all 100 units
        svc.mark(UNITS, a, b)
        await svc.flush()
        assert await _answers(api, a, b, *days) == got


def svc_day(svc, ts: int) -> int:  # type: ignore[no-untyped-def]
    from server.availability.rollups import local_day

    return local_day(ts, svc.tz).toordinal()


async def test_a_day_whose_backlog_is_still_arriving_is_counted_once_it_stops_and_is_pending_until(
        tmp_path: Path) -> None:
    """A pass during which more samples arrive leaves the service levels of the days it recounted due: the day's
    figures say not complete and its stored levels are the old ones; the next pass, with nothing new, counts them
    (the late hour's latency now outside the limit) and the figures are complete, as a full recount has them."""
    async with make_api(tmp_path, now="2025-03-02 12:00") as api:
        sn = UNITS[0]
        await _register(api, [sn])
        svc, storage = api.app.state.availability, api.app.state.storage
        await svc.stop()  # its passes are run here, one at a time
        await api.minutes(sn, at("2025-03-03 00:00"), 600)  # 00:00-10:00
        await api.minutes(sn, at("2025-03-03 11:00"), 780)  # 11:00-24:00; 10:00-11:00 comes late
        api.clock.t = at("2025-03-04 00:00")
        await api.settle()
        mar3 = svc_day(svc, at("2025-03-03 00:00"))
        day = {"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-04T00:00:00+08:00"}

        async def levels() -> list[int]:
            return (await storage.sla_sums(mar3, mar3, [sn]))[0][sn]

        before = await levels()
        assert before[0] == 1380 * 60 and before[1] == 1380 * 60  # 23 h of samples, latency within
        api.clock.t = at("2025-03-04 09:10")
        await api.minutes(sn, at("2025-03-03 10:00"), 60, rtt_ms=900)  # the late hour, latency outside the limit
        lock = storage.recount_lock
        entered, go = asyncio.Event(), asyncio.Event()

        @contextlib.asynccontextmanager
        async def slow_lock():  # type: ignore[no-untyped-def]  # the pass waits here while the backlog goes on
            entered.set()
            await go.wait()
            async with lock():
                yield

        storage.recount_lock = slow_lock
        task = asyncio.create_task(svc.flush(settle=False))
        await entered.wait()
        await api.minutes(sn, at("2025-03-04 09:00"), 5)  # still arriving (the hour in progress)
        go.set()
        await task
        storage.recount_lock = lock
        status = (await api.get("/api/v1/availability/status")).json()
        assert status["pending_sla_unit_days"] == 1, status  # (and the hour in progress has samples)
        fig = (await api.get("/api/v1/availability", group_by="unit", **day)).json()
        assert fig["complete"] is False and fig["items"][0]["no_data_slots"] == 0  # the hours are counted
        assert await levels() == before  # the day's levels: not yet (and the answer is not complete)
        await svc.flush(settle=False)  # nothing arrived meanwhile: the day is counted
        status = (await api.get("/api/v1/availability/status")).json()
        assert status["pending_sla_unit_days"] == 0 and status["pending_outage_hours"] == 0, status
        assert (await api.get("/api/v1/availability", group_by="unit", **day)).json()["complete"] is True
        after = await levels()
        assert after[0] == 1440 * 60 and after[1] == 1380 * 60
        svc.mark([sn], at("2025-03-03 00:00"), at("2025-03-04 00:00"))
        await svc.flush()
        assert await levels() == after
