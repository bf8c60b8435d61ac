"""Unit registry API: list (filter, sort, paginate), detail, recent samples, events."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from ..auth import Principal, require
from ..auth.bounds import SN, Epoch, Offset
from ..auth.openapi import Open, answers
from ..storage import UnitQuery

router = APIRouter(prefix="/api/v1/units", tags=["units"])


class UnitState(Open):
    sn: str
    online: bool
    broker_session: bool
    first_seen: float | None = None
    last_seen: float | None = None
    latest: dict[str, Any] | None = None


class UnitPage(Open):
    total: int
    limit: int
    offset: int
    items: list[UnitState]


class Samples(Open):
    sn: str
    items: list[dict[str, Any]]


class Events(Open):
    sn: str
    items: list[dict[str, Any]]
    next_before: float | None


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


@router.get("", **answers(UnitPage))
async def list_units(
    request: Request,
    _: Annotated[Principal, Depends(require("viewer"))],
    q: Annotated[str, Query(max_length=64, description="substring of the SN")] = "",
    online: bool | None = None,
    sort: Literal["sn", "last_seen", "first_seen", "online"] = "sn",
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    storage = request.app.state.storage
    total, items = await storage.list_units(
        UnitQuery(q=q, online=online, sort=sort, descending=order == "desc", limit=limit, offset=offset)
    )
    return {"total": total, "limit": limit, "offset": offset, "items": [_present(u, request) for u in items]}


@router.get("/{sn}", **answers(UnitState))
async def unit_detail(request: Request, sn: SN, _: Annotated[Principal, Depends(require("viewer"))]) -> dict[str, Any]:
    unit = await request.app.state.storage.get_unit(sn)
    if unit is None:
        raise HTTPException(404, f"unit {sn!r} not found")
    return _present(unit, request)


@router.get("/{sn}/samples", **answers(Samples))
async def unit_samples(
    request: Request,
    sn: SN,
    _: Annotated[Principal, Depends(require("viewer"))],
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    before: Epoch = None,
) -> dict[str, Any]:
    storage = request.app.state.storage
    if await storage.get_unit(sn) is None:
        raise HTTPException(404, f"unit {sn!r} not found")
    return {"sn": sn, "items": [_health(x) for x in await storage.recent_samples(sn, limit, before)]}


@router.get("/{sn}/events", **answers(Events))
async def unit_events(
    request: Request,
    sn: SN,
    _: Annotated[Principal, Depends(require("viewer"))],
    kind: Annotated[list[Annotated[str, Query(max_length=64)]] | None, Query(max_length=20, description="only these kinds, e.g. console (the engineers' diagnostic "
                                                        "console: who, when, what), sim_changed, identity")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=0, le=2**62, description="only events dated before this (epoch seconds): "
                                                                  "the next page")] = None,
) -> dict[str, Any]:
    """The unit's events as stored (each once, however often the terminal sent it), newest first, with the time
    the server received them."""
    storage = request.app.state.storage
    if await storage.get_unit(sn) is None:
        raise HTTPException(404, f"unit {sn!r} not found")
    items = await storage.unit_events(sn, kind or None, limit, before)
    return {"sn": sn, "items": items, "next_before": items[-1]["ts"] if len(items) == limit else None}
