"""Units registered with a past in-service date while a roll-up pass runs: every unit's past hours are counted.

A follow-up of issue 14: of two units registered before one roll-up pass, the second had 0 service slots for its
past days; a pass after each registration hid it. Three ways lost a unit's hours (each test holds a pass at the
storage's recount lock, as a long pass over a big fleet would take its time, and registers meanwhile):

* a pass closing hours counts them for the units of the registry it read first, and sets ``rolled_to`` past
  them only when it ends; a status change meanwhile marked hours only up to the old ``rolled_to``: the hours the
  pass was closing were counted for nobody (one process);
* an API-only worker (``[http] api_workers = 2``) recounts the hours its own status changes mark, but a change
  arriving while that recount ran stayed marked and was never recounted;
* a status change in a worker while the primary's pass closes hours is marked by the worker only up to the
  primary's old ``rolled_to``, and the primary counted those hours from the registry it read before the change.

Two apps on one SQLite file stand for the primary and the worker, as in test_availability. Each test compares
the figures with a hand count: a unit in service with no samples has every service slot, all of them no data.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from server.app import create_app
from tests.server.conftest import Api, at, make_api

UNITS = ("HNR0000001", "HNR0000002")


async def _register(send: Callable[..., Awaitable[httpx.Response]], sn: str, since: str) -> None:
    r = await send("PUT", f"/api/v1/registry/units/{sn}", json={"institution": "H001"})
    assert r.status_code == 200, r.text
    r = await send("POST", f"/api/v1/registry/units/{sn}/status",
                   json={"status": "in_service", "at": since, "note": "deployed"})
    assert r.status_code == 200, r.text


async def _institution(api: Api) -> None:
    r = await api.req("PUT", "/api/v1/institutions/H001", json={"name": "石山镇卫生院", "county": "秀英区",
                                                                 "hours": "00:00-24:00"})
    assert r.status_code == 200, r.text


@contextlib.asynccontextmanager
async def _held(availability: Any) -> AsyncIterator[tuple[asyncio.Event, asyncio.Event]]:
    """Hold the next recount of ``availability`` at the storage's recount lock until ``go`` is set."""
    storage_lock = availability.storage.recount_lock
    entered, go = asyncio.Event(), asyncio.Event()

    @contextlib.asynccontextmanager
    async def slow_lock() -> AsyncIterator[None]:
        entered.set()
        await go.wait()
        async with storage_lock():
            yield

    availability.storage.recount_lock = slow_lock
    try:
        yield entered, go
    finally:
        go.set()
        availability.storage.recount_lock = storage_lock


@contextlib.asynccontextmanager
async def _worker(api: Api) -> AsyncIterator[tuple[Any, Callable[..., Awaitable[httpx.Response]]]]:
    """An API-only app on the primary's database and clock, and a function sending it an admin's request."""
    worker = create_app(api.app.state.settings, role="api")
    worker.state.clock = api.clock
    async with worker.router.lifespan_context(worker), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=worker), base_url="http://worker") as w:
        async def send(method: str, path: str, role: str = "admin", **kw: Any) -> httpx.Response:
            return await w.request(method, path, headers=api.h(role), **kw)

        yield worker, send


async def _recounted(availability: Any) -> None:
    """Until the worker's recount (started by a status change) has ended."""
    for _ in range(500):
        await asyncio.sleep(0.01)
        if availability._recount_task is not None and availability._recount_task.done():
            return


def _slots(body: dict[str, Any]) -> dict[str, tuple[int, int]]:
    assert body["complete"] is True, body
    return {i["sn"]: (i["service_slots"], i["no_data_slots"]) for i in body["items"]}


async def test_a_unit_registered_while_a_pass_closes_hours_is_counted_for_them(tmp_path: Path) -> None:
    """One process: the pass closes two days of hours (the server was off, or the clock moved on) while the
    second unit is registered as in service since the first of them."""
    async with make_api(tmp_path, now="2025-03-03 00:00") as api:
        await _institution(api)
        await api.settle()
        api.clock.t = at("2025-03-05 00:00")
        await _register(api.req, UNITS[0], "2025-03-03")
        availability = api.app.state.availability
        async with _held(availability) as (entered, go):
            task = asyncio.create_task(availability.flush())
            await asyncio.wait_for(entered.wait(), 60)  # the pass has read the registry: the first unit only
            await _register(api.req, UNITS[1], "2025-03-03")
            go.set()
            await task
        await api.settle()
        body = (await api.get("/api/v1/availability", group_by="unit",
                              **{"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-05T00:00:00+08:00"})).json()
        assert _slots(body) == {sn: (2 * 1440, 2 * 1440) for sn in UNITS}, "two whole days each, no data"


async def test_two_units_registered_through_a_worker_while_it_recounts_are_both_counted(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-05 00:00") as api:
        await _institution(api)
        await api.settle()
        async with _worker(api) as (worker, send):
            wa = worker.state.availability
            async with _held(wa) as (entered, go):
                await _register(send, UNITS[0], "2025-03-03")
                await asyncio.wait_for(entered.wait(), 60)  # the worker is recounting the first unit's days...
                await _register(send, UNITS[1], "2025-03-03")  # ...when the second is registered
                go.set()
                await _recounted(wa)
            days = {"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-05T00:00:00+08:00"}
            want = {sn: (2 * 1440, 2 * 1440) for sn in UNITS}
            assert _slots((await api.get("/api/v1/availability", group_by="unit", **days)).json()) == want
            r = await send("GET", "/api/v1/availability", "viewer", params={"group_by": "unit", **days})
            assert _slots(r.json()) == want, "the worker answers the same, and complete"


async def test_a_unit_registered_in_a_worker_while_the_primary_closes_hours_is_counted(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-03 00:00") as api:
        await _institution(api)
        await _register(api.req, UNITS[0], "2025-03-03")
        await api.settle()
        async with _worker(api) as (worker, send):
            api.clock.t = at("2025-03-04 00:00")
            availability = api.app.state.availability
            async with _held(availability) as (entered, go):
                task = asyncio.create_task(availability.flush())  # the primary closes 2025-03-03
                await asyncio.wait_for(entered.wait(), 60)
                await _register(send, UNITS[1], "2025-03-03")  # the worker still sees rolled_to at 03-03 00:00
                go.set()
                await task
            await api.settle()
            day = {"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-04T00:00:00+08:00"}
            assert _slots((await api.get("/api/v1/availability", group_by="unit", **day)).json()) == \
                {sn: (1440, 1440) for sn in UNITS}


async def test_a_unit_put_in_service_in_a_worker_just_after_the_primary_closed_hours_is_counted(tmp_path: Path) -> None:
    """A worker knows the primary's rolled_to as of its last figures or recount: a status change dated back is
    marked up to rolled_to as meta says when the worker's recount runs, not as the worker last read it."""
    async with make_api(tmp_path, now="2025-03-03 00:00") as api:
        await _institution(api)
        await _register(api.req, UNITS[0], "2025-03-03")
        await api.settle()
        async with _worker(api) as (worker, send):
            r = await send("PUT", f"/api/v1/registry/units/{UNITS[1]}",
                           json={"institution": "H001", "status": "spare"})  # a spare, delivered
            assert r.status_code == 200, r.text
            await _recounted(worker.state.availability)  # the worker has read rolled_to: 03-03 00:00
            api.clock.t = at("2025-03-04 00:00")
            await api.settle()  # the primary closes 03-03
            r = await send("POST", f"/api/v1/registry/units/{UNITS[1]}/status",
                           json={"status": "in_service", "at": "2025-03-03", "note": "in service since the 3rd"})
            assert r.status_code == 200, r.text
            await _recounted(worker.state.availability)
            day = {"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-04T00:00:00+08:00"}
            assert _slots((await api.get("/api/v1/availability", group_by="unit", **day)).json()) == \
                {sn: (1440, 1440) for sn in UNITS}
