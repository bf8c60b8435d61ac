"""The web dashboard: one page and its static assets under ``/dashboard/``, and two small read-only helpers.

The page is plain HTML, CSS and JavaScript (no build step, nothing from a CDN). It signs in with the same bearer
tokens as the API (kept in ``sessionStorage``) and reads the public API; the two helpers here answer what the
page cannot work out for itself:

* ``GET /dashboard/api/context``: the server's clock (accelerated in the simulator, so the browser's own clock
  is no guide), the fleet's time zone, this month's bounds, the contract tiers, who is signed in, and whether
  the remote-commands API is installed.
* ``GET /dashboard/api/trend``: device intact and network availability rates per local day over the last 7, 30
  or 90 days, each day answered by the same ``Availability.figures`` as ``GET /api/v1/availability``.
* ``GET /dashboard/api/units``: the units list with the page's filters (county, institution, model, online,
  flagged this month), and the values each filter offers.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from ..answers import Page, Time, page, timer
from ..auth import Principal, require
from ..auth.openapi import Open, answers
from ..auth.router import ScopeOut
from ..auth.scope import scope_sns, scoped
from ..availability.rollups import midnight
from ..registry.router import RegisteredUnit

router = APIRouter(prefix="/dashboard", tags=["dashboard"])
scoped("/dashboard/api/trend")  # the fleet page's trend: a county user's units only
Viewer = Annotated[Principal, Depends(require("viewer"))]

STATIC = Path(__file__).parent / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml", ".html": "text/html; charset=utf-8", ".png": "image/png",
          ".json": "application/json"}  # .json: the province map (GeoJSON)
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_TREND_CACHE_S = 15.0


class ContextUser(Open):
    name: str
    role: str
    scope: ScopeOut


class Context(Open):
    now: Time
    now_iso: Time
    today: str
    timezone: str
    month: dict[str, str]
    threshold: float
    tiers: list[dict[str, float]]
    clock_speed: float
    keepalive_s: int
    user: ContextUser
    features: dict[str, bool]


class TrendPoint(Open):
    date: str
    device_rate: float | None
    network_rate: float | None
    service_slots: int
    units: int
    flagged_units: int
    complete: bool


class UnitList(Page[RegisteredUnit]):
    options: dict[str, list[str]]


class Trend(Open):
    days: int
    county: str | None
    institution: str | None
    sn: str | None
    points: list[TrendPoint]


@router.get("", include_in_schema=False)
async def dashboard_root() -> RedirectResponse:
    return RedirectResponse("/dashboard/", status_code=307)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type=_TYPES[".html"], headers=_HEADERS)


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    path = (STATIC / name).resolve()
    if path.parent != STATIC.resolve() or path.suffix not in _TYPES or not path.is_file():
        raise HTTPException(404, "not found")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_HEADERS)


def _month_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    first = datetime(day.year, day.month, 1, tzinfo=tz)
    nxt = datetime(day.year + (day.month == 12), day.month % 12 + 1, 1, tzinfo=tz)
    return first, nxt


def commands_installed(request: Request) -> bool:
    return any(getattr(r, "path", "").startswith("/api/v1/commands") for r in request.app.routes)


@router.get("/api/context", **answers(Context))
async def context(request: Request, who: Viewer) -> dict[str, Any]:
    """What the page needs to ask the API the right questions: server time, zone, month, tiers, features."""
    s = request.app.state.settings
    tz = ZoneInfo(s.timezone)
    now = request.app.state.clock.now()
    local = datetime.fromtimestamp(now, tz)
    first, nxt = _month_bounds(local.date(), tz)
    a = s.availability
    return {
        "now": local.isoformat(timespec="seconds"),
        "now_iso": local.isoformat(timespec="seconds"),  # (the same: kept for pages loaded before "now" was ISO)
        "today": local.date().isoformat(),
        "timezone": s.timezone,
        "month": {"from": first.isoformat(), "to": nxt.isoformat(), "label": f"{local.year}-{local.month:02d}"},
        "threshold": a.threshold,
        "tiers": [{"floor": f, "tier": t, "final_payment": p} for f, t, p in a.tiers]
                 + [{"floor": 0.0, "tier": a.last_tier[0], "final_payment": a.last_tier[1]}],
        "clock_speed": getattr(request.app.state.clock, "speed", 1.0),
        "keepalive_s": s.ingest.terminal_keepalive_s,
        "user": {"name": who.name, "role": who.role, "scope": who.scope.as_dict()},
        "features": {"commands": commands_installed(request)},
    }


@router.get("/api/trend", **answers(Trend))
async def trend(
    request: Request,
    who: Viewer,
    days: Annotated[int, Query(ge=1, le=366, description="days back, today included (the page offers 7, 30, 90)")] = 30,
    county: Annotated[str | None, Query(max_length=100)] = None,
    institution: Annotated[str | None, Query(max_length=64)] = None,
    sn: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    """Per local day for the last ``days`` days (today included, counted so far): the group's figures."""
    from fastapi.responses import JSONResponse

    svc = request.app.state.availability
    tz = ZoneInfo(request.app.state.settings.timezone)
    today = datetime.fromtimestamp(request.app.state.clock.now(), tz).date()
    within = scope_sns(who, await svc.registry.index())  # a county user: its units' figures (decision 031)
    key = (days, county, institution, sn, today, who.scope)
    cache: dict[Any, tuple[float, dict[str, Any]]] = request.app.state.__dict__.setdefault("_dashboard_trend", {})
    hit = cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < _TREND_CACHE_S:
        return JSONResponse(hit[1])
    points = []
    for i in range(days - 1, -1, -1):
        d = today - timedelta(days=i)
        a, b = midnight(d, tz), midnight(d + timedelta(days=1), tz)
        fig = await svc.figures(a, b, "fleet", county=county, institution=institution, sn=sn, within=within)
        f = fig["fleet"]
        points.append({"date": d.isoformat(), "device_rate": f["device_rate"], "network_rate": f["network_rate"],
                       "service_slots": f["service_slots"], "units": f["units"], "flagged_units": f["flagged_units"],
                       "complete": fig["complete"]})
    body = {"days": days, "county": county, "institution": institution, "sn": sn, "points": points}
    if len(cache) > 64:
        cache.clear()
    cache[key] = (time.monotonic(), body)
    return JSONResponse(body)


@router.get("/api/units", **answers(UnitList))
async def units(
    request: Request,
    who: Viewer,
    q: Annotated[str, Query(max_length=64, description="part of the SN or insurance SN")] = "",
    county: Annotated[str | None, Query(max_length=100)] = None,
    institution: Annotated[str | None, Query(max_length=64)] = None,
    model: Annotated[str | None, Query(max_length=100)] = None,
    online: Annotated[bool | None, Query(description="online now (true) or not (false)")] = None,
    flagged: Annotated[bool | None, Query(description="below the threshold this month so far (true) or not")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """The registered units, filtered as the units page offers, by SN; with the values each filter can take.

    Online is the same as everywhere (``/api/v1/registry/units``, ``/api/v1/analytics/live``); flagged is this
    month's figure from ``Availability.figures`` (as ``/api/v1/availability/flagged``)."""
    from ..analytics.router import _units
    from ..registry.router import _unit_out

    rows = await _units(request, who)  # a county user: its units only, and only its filter values
    options = {"county": sorted({r["county"] for r in rows if r.get("county")}),
               "institution": sorted({r["institution"] for r in rows if r.get("institution")}),
               "model": sorted({r["model"] for r in rows if r.get("model")})}
    flagged_sns: set[str] | None = None
    if flagged is not None:
        s = request.app.state.settings
        tz = ZoneInfo(s.timezone)
        first, nxt = _month_bounds(datetime.fromtimestamp(request.app.state.clock.now(), tz).date(), tz)
        fig = await request.app.state.availability.figures(int(first.timestamp()), int(nxt.timestamp()), "unit")
        flagged_sns = {u["sn"] for u in fig["items"] if u["flagged"]}
    needle = q.strip().upper()
    keep = [r for r in rows
            if (not needle or needle in r["sn"].upper() or needle in str(r.get("insurance_sn") or "").upper())
            and (county is None or r.get("county") == county)
            and (institution is None or r.get("institution") == institution)
            and (model is None or r.get("model") == model)
            and (online is None or bool(r["online"]) == online)
            and (flagged_sns is None or (r["sn"] in flagged_sns) == flagged)]
    keep.sort(key=lambda r: r["sn"])
    now, tim = request.app.state.clock.now(), timer(request.app.state.settings.timezone)
    return page([_unit_out(r, request, now, tim) for r in keep[offset: offset + limit]], len(keep), limit, offset,
                options=options)
