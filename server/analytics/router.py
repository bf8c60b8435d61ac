"""Live analytics API: online counts, rankings, carriers, link types, versions, deployment, network quality."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from ..answers import Time
from ..auth import Principal, require
from ..auth.bounds import SN, Name, Offset, month
from ..auth.openapi import Open, answers
from ..auth.scope import scope_sns, scoped
from ..registry.models import FieldError
from ..registry.router import online
from .live import quality, summarise

router = APIRouter(prefix="/api/v1", tags=["analytics"])
Viewer = Annotated[Principal, Depends(require("viewer"))]
# the county network and SIM-data figures: of the caller's units (:func:`_index`), decision 031
scoped("GET /api/v1/analytics/network", "GET /api/v1/analytics/sim-data")
_CACHE_S = 10.0


class InstitutionOnline(Open):
    institution: str
    name: str
    county: str
    units: int
    online: int
    online_rate: float | None


class Live(Open):
    units: int
    in_service: int
    online: int
    offline: int
    online_share: float | None
    institutions_best: list[InstitutionOnline]
    institutions_worst: list[InstitutionOnline]
    by_carrier: dict[str, int]
    by_link_type: dict[str, int]


class UnitNetwork(Open):
    sn: str
    hours: int
    samples: int
    latency_ms: float | None
    jitter_ms: float | None
    loss: float | None


class CountyQuality(Open):
    county: str
    units: int
    latency_ms: float | None
    latency_ok_share: float | None
    jitter_ms: float | None
    jitter_ok_share: float | None
    loss: float | None
    loss_ok_share: float | None


class UnitQuality(Open):
    sn: str
    samples: int
    latency_ms: float | None
    jitter_ms: float | None
    loss: float | None
    latency_ok: bool | None
    jitter_ok: bool | None
    loss_ok: bool | None


class CountyNetwork(Open):
    hours: int
    limits: dict[str, float]
    counties: list[CountyQuality]
    units: list[UnitQuality] | None = None


class DataUse(Open):
    """A unit's SIM data use in a month against its plan (``last_report``: ISO 8601, null before any)."""

    sn: str
    used_bytes: int
    used_mb: float
    plan_mb: float
    share: float
    projected_mb: float | None
    projected_share: float | None
    last_report: Time | None
    reported: bool


class UnitData(DataUse):
    month: str
    days: list[dict[str, Any]]


class FleetData(Open):
    month: str
    plan_mb: float
    units: int
    total: int
    limit: int
    offset: int
    items: list[DataUse]


async def _units(request: Request, who: Principal | None = None) -> list[dict[str, Any]]:
    """All registered units joined with live state; cached for a few seconds (dashboards poll). ``who`` with a
    county or city scope: its units only, read through the storage's scope filter (a county's few hundred rows,
    not the province's 50,000 filtered here)."""
    if who is not None and not who.province:
        _total, mine = await request.app.state.storage.registry_query({"within": who.scope.within()}, limit=10**9)
        for r in mine:
            r["online"] = online(r, request)
        return mine  # type: ignore[no-any-return]
    cache = getattr(request.app.state, "_live_cache", None)
    if cache is not None and time.monotonic() - cache[0] < _CACHE_S:
        return cache[1]  # type: ignore[no-any-return]
    _total, rows = await request.app.state.storage.registry_query({}, limit=10**9)
    for r in rows:
        r["online"] = online(r, request)
    request.app.state._live_cache = (time.monotonic(), rows)
    return rows


@router.get("/analytics/live", **answers(Live))
async def live(request: Request, who: Viewer) -> Response:
    """Online/offline counts and share, 10 best and worst institutions by online rate, units by carrier and
    link type, software versions, deployment by county and institution type (a scoped caller: of its units)."""
    return JSONResponse(summarise(await _units(request, who), await _month_rates(request)))


async def _month_rates(request: Request) -> dict[str, float | None]:
    """Each institution's availability this month so far (the lower of its device intact and network rates):
    the second figure the online-rate ranking goes by when online rates tie (everything online is the rule)."""
    from datetime import date, datetime
    from zoneinfo import ZoneInfo

    from ..availability.rollups import midnight

    av = request.app.state.availability
    if av.rolled_to is None:
        return {}
    tz = ZoneInfo(request.app.state.settings.timezone)
    today = datetime.fromtimestamp(request.app.state.clock.now(), tz).date()
    start = midnight(date(today.year, today.month, 1), tz)
    end = midnight(date(today.year + (today.month == 12), today.month % 12 + 1, 1), tz)
    fig = await av.figures(start, end, "institution")
    out: dict[str, float | None] = {}
    for i in fig["items"]:
        rates = [r for r in (i["device_rate"], i["network_rate"]) if r is not None]
        out[i["institution"] or ""] = min(rates) if rates else None
    return out


async def _index(request: Request, who: Principal) -> dict[str, Any]:
    """The registry's index, of ``who``'s units only when it is scoped: the population of this domain's fleet
    figures (network, SIM data), filtered here once."""
    index: dict[str, Any] = await request.app.state.registry.index()
    mine = scope_sns(who, index)
    return index if mine is None else {sn: u for sn, u in index.items() if sn in mine}


def _q(request: Request, samples: list[dict[str, Any]]) -> dict[str, Any]:
    a = request.app.state.settings.analytics
    return quality(samples, a.latency_ok_ms, a.jitter_ok_ms, a.loss_ok)


@router.get("/units/{sn}/network", **answers(UnitNetwork))
async def unit_network(request: Request, sn: SN, _: Viewer,
                       hours: Annotated[int, Query(ge=1, le=24 * 14)] = 24) -> dict[str, Any]:
    """One unit's latency, jitter and loss over the last ``hours`` against the limits."""
    now = int(request.app.state.clock.now())
    if not (await request.app.state.storage.status_histories([sn])):
        raise FieldError("sn", f"unit {sn!r} not found", 404)
    samples = await request.app.state.storage.unit_samples_window(sn, now - hours * 3600, now + 1)
    return {"sn": sn, "hours": hours, **_q(request, samples)}


@router.get("/analytics/network", **answers(CountyNetwork))
async def county_network(request: Request, who: Viewer, county: Name = None,
                         hours: Annotated[int, Query(ge=1, le=24 * 7)] = 1) -> dict[str, Any]:
    """Per county (or per unit of one county): share of units within each limit, and the county's means."""
    a = request.app.state.settings.analytics
    now = int(request.app.state.clock.now())
    index = await _index(request, who)
    units = [u for u in index.values() if u.status == "in_service" and (county is None or u.county == county)]
    storage = request.app.state.storage
    per_unit: dict[str, dict[str, Any]] = {}
    for u in units:
        per_unit[u.sn] = _q(request, await storage.unit_samples_window(u.sn, now - hours * 3600, now + 1))
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for u in units:
        groups[u.county or "unassigned"].append(per_unit[u.sn])
    out = []
    for name, qs in sorted(groups.items()):
        row: dict[str, Any] = {"county": name, "units": len(qs)}
        for key, ok in (("latency_ms", "latency_ok"), ("jitter_ms", "jitter_ok"), ("loss", "loss_ok")):
            vals = [q[key] for q in qs if q[key] is not None]
            row[key] = round(sum(vals) / len(vals), 6) if vals else None
            judged = [q[ok] for q in qs if q[ok] is not None]
            row[f"{ok}_share"] = round(sum(judged) / len(judged), 4) if judged else None
        out.append(row)
    body: dict[str, Any] = {"hours": hours, "limits": {"latency_ms": a.latency_ok_ms, "jitter_ms": a.jitter_ok_ms,
                                                       "loss": a.loss_ok}, "counties": out}
    if county is not None:
        body["units"] = [{"sn": sn, **q} for sn, q in sorted(per_unit.items())]
    return body


# SIM data use -----------------------------------------------------------------------------------------
Month = Annotated[str | None, Query(alias="month", pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM (default: this month)")]


@router.get("/units/{sn}/data", **answers(UnitData))
async def unit_data(request: Request, sn: SN, _: Viewer, month_text: Month = None) -> dict[str, Any]:
    """One unit's SIM data use in a calendar month (fleet time zone) against the plan, with the month-end
    projection at the rate so far and the use per day."""
    month(month_text)
    if sn not in await request.app.state.registry.index():
        raise FieldError("sn", f"unit {sn!r} not found", 404)
    svc = request.app.state.availability.datause
    return await svc.unit(sn, int(request.app.state.clock.now()), month_text)  # type: ignore[no-any-return]


@router.get("/analytics/sim-data", **answers(FleetData))
async def fleet_data(request: Request, who: Viewer, month_text: Month = None, county: Name = None,
                     limit: Annotated[int, Query(ge=1, le=100000)] = 100,
                     offset: Offset = 0) -> dict[str, Any]:
    """SIM data use of every in-service unit this month (or ``month``), most used first, with the projected
    month-end use; counts of units over 80 % and 100 % of the plan."""
    month(month_text)
    svc = request.app.state.availability.datause
    out = await svc.fleet(await _index(request, who), int(request.app.state.clock.now()), month_text,
                          county)
    out["total"] = len(out["items"])
    out["items"] = out["items"][offset: offset + limit]
    out["limit"], out["offset"] = limit, offset
    return out  # type: ignore[no-any-return]
