"""Availability API: figures by group, flagged units with reasons, minute drill-down, recount."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import Field

from ..answers import Page, Time, timed
from ..auth import Principal, require
from ..auth.bounds import SN, TIME_FORMS, Name, Offset, SNQuery, day
from ..auth.openapi import Open, answers
from ..auth.scope import scope_sns, scoped
from ..encode import MsgspecJSON
from ..registry.models import FieldError
from .service import Availability

router = APIRouter(prefix="/api/v1", tags=["availability"])
# a scoped caller's figures count its units only (``within``, from the registry's index as the figures' own
# population is) and carry no contract tier; recount and the roll-up status stay the province's (decision 031)
scoped("GET /api/v1/availability", "GET /api/v1/availability/flagged")

Viewer = Annotated[Principal, Depends(require("viewer"))]
Admin = Annotated[Principal, Depends(require("admin"))]
When = Annotated[str, Query(alias="from", max_length=40, description=f"start, on a whole hour: {TIME_FORMS}")]
Until = Annotated[str, Query(alias="to", max_length=40, description=f"end (excluded), on a whole hour: {TIME_FORMS}; "
                                                                    "a day alone is included (to=2026-10-31: all of "
                                                                    "October 31)")]


class Rates(Open):
    """Slot counts and the two rates (``null`` without service slots) of a unit or a group."""

    service_slots: int
    intact_slots: int
    network_ok_slots: int
    no_data_slots: int
    device_rate: float | None
    network_rate: float | None


class FleetRates(Rates):
    units: int
    flagged_units: int
    tier: int | None
    final_payment: float | None


class Figures(Open):
    """One period's figures: ``fleet`` always; with ``group_by`` other than fleet, a page of ``items`` (units
    with ``flagged``, or groups with ``units`` and ``flagged_units``)."""

    from_: Time = Field(alias="from")
    to: Time
    counted_to: Time | None
    complete: bool
    group_by: str
    threshold: float
    fleet: FleetRates
    items: list[Rates] | None = None
    total: int | None = None
    limit: int | None = None
    offset: int | None = None


class FlaggedUnit(Rates):
    sn: str
    below: list[str]
    reasons: dict[str, Any]


class Flagged(Page[FlaggedUnit]):
    from_: Time = Field(alias="from")
    to: Time
    counted_to: Time | None


class Recounted(Open):
    unit_hours: int
    seconds: float
    rolled_to: Time | None


class Slot(Open):
    """One minute slot: ``counted`` (in service hours, in service), device and network ``ok``/``not``/``no_data``,
    and why when it is not (``reason``, ``excluded``)."""

    start: Time
    counted: bool
    device: str
    network: str


class Slots(Open):
    sn: str
    date: str
    figures: dict[str, Any]
    slots: list[Slot]


class RollupStatus(Open):
    rolled_to: Time | None
    pending_unit_hours: int
    pending_sla_unit_days: int = 0
    pending_outage_hours: int = 0
    last_recount_at: Time | None = None


def _period(svc: Availability, start: str, end: str) -> tuple[int, int]:
    return svc.period(start, end)


def _svc(request: Request) -> Availability:
    return request.app.state.availability  # type: ignore[no-any-return]


@router.get("/availability", **answers(Figures))
async def availability(
    request: Request,
    who: Viewer,
    start: When,
    end: Until,
    group_by: Literal["unit", "institution", "county", "region", "fleet"] = "fleet",
    county: Name = None,
    region: Name = None,
    institution: Name = None,
    sn: SNQuery = None,
    flagged_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=100000)] = 1000,
    offset: Offset = 0,
) -> Response:
    """Slot counts and rates for ``[from, to)``: per unit (with ``flagged``) or per group (with ``units`` and
    ``flagged_units``); ``fleet`` carries the contract ``tier``. Only closed hours are counted: ``counted_to``
    says up to when, and ``complete`` is false while the period is still open or late data awaits recount."""
    svc = _svc(request)
    a, b = _period(svc, start, end)
    out = await svc.figures(a, b, group_by, county=county, region=region, institution=institution, sn=sn,
                            within=scope_sns(who, await svc.registry.index()),
                            only_flagged=flagged_only and group_by == "unit")  # (the rest are filtered below)
    if "items" in out:
        items = out["items"]
        if flagged_only:
            items = [i for i in items if i.get("flagged") or i.get("flagged_units")]
        out["total"] = len(items)
        out["items"] = items[offset: offset + limit]
        out["limit"], out["offset"] = limit, offset
    return MsgspecJSON(out)


@router.get("/availability/flagged", **answers(Flagged))
async def flagged(request: Request, who: Viewer, start: When, end: Until, county: Name = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  offset: Annotated[int, Query(ge=0, le=100_000, description="items to skip")] = 0) -> Response:
    """Flagged units, worst first, each with the rate(s) below the threshold and minutes lost by reason."""
    svc = _svc(request)
    a, b = _period(svc, start, end)
    out = await svc.flagged(a, b, county=county, limit=limit, offset=offset,
                            within=scope_sns(who, await svc.registry.index()))
    out["limit"], out["offset"] = limit, offset
    return MsgspecJSON(out)


@router.get("/units/{sn}/slots", **answers(Slots))
async def slots(request: Request, sn: SN, _: Viewer,
                date_text: Annotated[str, Query(alias="date", max_length=10,
                                                description="YYYY-MM-DD (fleet time zone)")]) -> Response:
    """Every slot of one local day: counted or why not, intact / not / no data, network ok / not / no data,
    and the reason (which check failed, link down, latency; link down during a county-wide outage is marked)."""
    return MsgspecJSON(await _svc(request).slots_json(sn, day(date_text, "date")))


@router.post("/availability/recount", **answers(Recounted))
async def recount(request: Request, _: Admin, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    """Recount ``{"from", "to", "sns": [...] (optional)}`` from the raw samples now (e.g. after changing hours)."""
    svc = _svc(request)
    a, b = _period(svc, str(body.get("from", ""))[:40], str(body.get("to", ""))[:40])
    sns = body.get("sns")
    if sns is not None and (not isinstance(sns, list) or not all(isinstance(x, str) for x in sns)):
        raise FieldError("sns", "expected a list of SNs")
    index = await svc.registry.index()
    await svc.sync()  # an API-only process marks up to the primary's rolled_to
    svc.mark(sns if sns is not None else list(index), a, b)
    return timed(await svc.flush(), svc.settings.timezone)  # type: ignore[no-any-return]


@router.get("/availability/status", **answers(RollupStatus))
async def status(request: Request, _: Viewer) -> dict[str, Any]:
    """The roll-up job: last closed hour materialised, pending recounts, timings."""
    svc = _svc(request)
    return timed({"rolled_to": svc.rolled_to, "pending_unit_hours": svc.pending, **svc.pending_after, **svc.stats},  # type: ignore[no-any-return]
                 svc.settings.timezone)
