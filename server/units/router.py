"""Unit registry API: list (filter, sort, paginate), detail, recent samples, events."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from ..answers import Page, Time, page, timed
from ..auth import Principal, require
from ..auth.bounds import SN, TIME_FORMS, Offset, time_param
from ..auth.openapi import Open, answers
from ..encode import MsgspecJSON
from ..registry.models import FieldError
from ..storage import UnitQuery

router = APIRouter(prefix="/api/v1/units", tags=["units"])
Viewer = Annotated[Principal, Depends(require("viewer"))]


class Sample(Open):
    """One health sample as the terminal sent it (fields as in wire/messages.py ``Sample``), with ``boot_time``."""

    seq: int
    ts: Time
    interval: int
    connected: bool
    boot_time: Time | None = None


class UnitState(Open):
    sn: str
    online: bool
    broker_session: bool
    first_seen: Time | None = None
    last_seen: Time | None = None
    latest_ts: Time | None = None
    latest: Sample | None = None


class Event(Open):
    ts: Time
    kind: str
    data: dict[str, Any]
    received_at: Time | None


class Samples(Page[Sample]):
    sn: str


class Events(Page[Event]):
    sn: str


def _health(sample: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored sample as the API shows it, with the terminal's boot time: the sample's time minus its uptime
    (computed here, not stored, so it costs the samples table nothing)."""
    if sample is not None and sample.get("uptime_s") is not None and sample.get("ts") is not None:
        return {**sample, "boot_time": sample["ts"] - sample["uptime_s"]}
    return sample


def _present(unit: dict[str, Any], request: Request) -> dict[str, Any]:
    """Online: the broker session is up, or a message arrived within three keep-alive intervals."""
    s = request.app.state.settings
    now = request.app.state.clock.now()
    recent = now - unit["last_seen"] <= 3 * s.ingest.terminal_keepalive_s
    unit = dict(unit)
    unit["latest"] = _health(unit.get("latest"))
    unit["broker_session"] = unit.pop("online")
    unit["online"] = bool(unit["broker_session"] or recent)
    return unit


def _tz(request: Request) -> str:
    return request.app.state.settings.timezone  # type: ignore[no-any-return]


@router.get("", **answers(Page[UnitState]))
async def list_units(
    request: Request,
    p: Viewer,
    q: Annotated[str, Query(max_length=64, description="substring of the SN")] = "",
    online: bool | None = None,
    sort: Literal["sn", "last_seen", "first_seen", "online"] = "sn",
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Offset = 0,
) -> Response:
    storage = request.app.state.storage
    total, items = await storage.list_units(
        UnitQuery(q=q, online=online, sort=sort, descending=order == "desc", limit=limit, offset=offset,
                  within=p.scope.within())
    )
    # encoded by msgspec: FastAPI's encoder walked every value of the page (~2,400 of them), two thirds of the
    # request's CPU once the page came from the kept lists (decision 034)
    return MsgspecJSON(timed(page([_present(u, request) for u in items], total, limit, offset), _tz(request)))


@router.get("/{sn}", **answers(UnitState))
async def unit_detail(request: Request, sn: SN, _: Viewer) -> dict[str, Any]:
    unit = await request.app.state.storage.get_unit(sn)
    if unit is None:
        raise FieldError("sn", f"unit {sn!r} not found", 404)
    return timed(_present(unit, request), _tz(request))  # type: ignore[no-any-return]


Before = Annotated[str | None, Query(min_length=1, max_length=40,
                                     description=f"only those dated before this time: {TIME_FORMS}")]
MAX_DEPTH = 100_000  # offset + limit: how far back a unit's history is paged


@router.get("/{sn}/samples", **answers(Samples))
async def unit_samples(
    request: Request,
    sn: SN,
    _: Viewer,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_DEPTH, description="items to skip")] = 0,
    before: Before = None,
) -> dict[str, Any]:
    """The unit's samples, newest first (``total``: null, not counted)."""
    storage = request.app.state.storage
    until = time_param(before, "before", _tz(request))
    if await storage.get_unit(sn) is None:
        raise FieldError("sn", f"unit {sn!r} not found", 404)
    rows = (await storage.recent_samples(sn, limit + offset, until))[offset:]
    return timed(page([_health(x) for x in rows], None, limit, offset, sn=sn), _tz(request))  # type: ignore[no-any-return]


@router.get("/{sn}/events", **answers(Events))
async def unit_events(
    request: Request,
    sn: SN,
    _: Viewer,
    kind: Annotated[list[Annotated[str, Query(max_length=64)]] | None, Query(max_length=20, description="only these kinds, e.g. console (the engineers' diagnostic "
                                                        "console: who, when, what), sim_changed, identity")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_DEPTH, description="items to skip")] = 0,
    before: Before = None,
) -> dict[str, Any]:
    """The unit's events as stored (each once, however often the terminal sent it), newest first, with the time
    the server received them (``total``: null, not counted)."""
    storage = request.app.state.storage
    until = time_param(before, "before", _tz(request))
    if await storage.get_unit(sn) is None:
        raise FieldError("sn", f"unit {sn!r} not found", 404)
    items = (await storage.unit_events(sn, kind or None, limit + offset, until))[offset:]
    return timed(page(items, None, limit, offset, sn=sn), _tz(request))  # type: ignore[no-any-return]
