"""Operations report API: the same report as ``posfleet report ops`` (HTML, CSV, XLSX or PDF) for a month, a quarter
or plain days; and the reports the server made on its own (server/reports/schedule.py), listed and downloaded."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from ..answers import Page, Time
from ..auth import Principal, require
from ..auth.bounds import Name
from ..auth.openapi import ErrorBody, Open, answers, answers_file
from ..auth.scope import not_found, province_only, scoped, unit_in_scope
from ..registry.models import FieldError
from .ops import MEDIA, build, file_name, render
from .pdf import ChromiumMissing, PdfError
from .periods import resolve

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/reports", tags=["reports"])
# a scoped caller's report is a county report of its scope (:func:`report_county`); the reports the server makes
# on its own are the province's (decision 031)
scoped("GET /api/v1/reports/ops")
province_only("/api/v1/reports/stored", "/api/v1/reports/stored/{name}")


_FILES = answers_file("text/html", "text/csv", "application/pdf", MEDIA["xlsx"],
                      description="The report: HTML to print on A4, CSV, XLSX or PDF (by format)")
_FILES["responses"][503] = {"model": ErrorBody, "description": "PDF asked for and no Chromium to print it with: "
                                                              "the error names reports.chromium"}

Month = Annotated[str | None, Query(max_length=10, description="a calendar month of the fleet's zone: 2026-11")]
Quarter = Annotated[str | None, Query(max_length=8, description="a calendar quarter: 2026Q4")]
From = Annotated[str | None, Query(alias="from", max_length=40, description="first day (2026-10-01) or a whole hour")]
To = Annotated[str | None, Query(alias="to", max_length=40, description="last day, included (2026-10-31), or a whole "
                                                                         "hour (excluded)")]


def disposition(name: str) -> str:
    """``attachment`` with an ASCII name and the UTF-8 one (RFC 6266): county names are Chinese."""
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_")
    if ascii_name == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


async def server_inspection(app: Any) -> dict[str, Any] | None:
    """The server's self-inspection (issue 17, server/inspection) for the report's section; None when it fails
    (the section then says the inspection is not available rather than holding the report back)."""
    from ..inspection.service import inspect

    try:
        return await inspect(app)
    except Exception:  # noqa: BLE001 - the report goes out; the section says the inspection is not available
        log.exception("the server's self-inspection failed; the report goes out without it")
        return None


async def report_county(app: Any, who: Principal, county: str | None) -> str | None:
    """The county a report covers: any (or the province) for a province caller. A scoped caller's report is one
    county of its scope, a county report (its figures only, no contract tier: the tier is the province's): its one
    county by default; with several counties or a city, ``county`` names which (422 without). A county outside
    the scope answers 404, as one that does not exist."""
    if who.province:
        return county
    if county is None:
        if len(who.scope.counties) != 1 or who.scope.cities:
            raise FieldError("county", "a user whose scope is several counties or a city names one county of it "
                                       "(a report covers one county)", 422)
        county = next(iter(who.scope.counties))
    if county in who.scope.counties:
        return county
    units = [u for u in (await app.state.registry.index()).values() if u.county == county]
    if not units or not all(unit_in_scope(who, u) for u in units):  # a city's county: every unit of it in the city
        raise not_found("county", county)
    return county


async def pdf_slot(app: Any) -> asyncio.Semaphore:
    slots = getattr(app.state, "pdf_slots", None)
    if slots is None:  # made here, on the server's own event loop
        slots = app.state.pdf_slots = asyncio.Semaphore(app.state.settings.reports.pdf_concurrency)
    return slots


@router.get("/ops", **_FILES)
async def ops_report(
    request: Request,
    who: Annotated[Principal, Depends(require("viewer"))],
    start: From = None,
    end: To = None,
    month: Month = None,
    quarter: Quarter = None,
    county: Name = None,
    format: Literal["html", "csv", "xlsx", "pdf"] = "html",  # noqa: A002 - the query parameter's name
    lang: Literal["zh", "en"] | None = None,
    part: Literal["report", "appendix"] = "report",
) -> Response:
    """The operations service report for one period: ``month`` (2026-11), ``quarter`` (2026Q4) or ``from`` and
    ``to`` (days in the fleet's zone, the last included). ``part=appendix`` gives the inspection appendix alone
    (per county files for a large fleet). ``lang``: ``[reports] lang`` by default (Chinese). A user with a county or
    city scope gets a county report of its scope (``county``: which one when the scope has several)."""
    app = request.app
    svc = app.state.availability
    settings = app.state.settings
    county = await report_county(app, who, county)
    period = resolve(svc, month=month, quarter=quarter, start=start, end=end)
    language = lang or settings.reports.lang
    # the server's self-inspection is the province's (its terminal certificate counts are the whole fleet's)
    inspection = await server_inspection(app) if part == "report" and who.province else None
    data = await build(svc, app.state.storage, period.start, period.end, county, language, period=period,
                       server_inspection=inspection, part=part,
                       appendix=True if format in ("xlsx", "csv") else None)  # tables hold any size
    name = file_name(data, format)
    try:
        if format == "pdf":
            async with await pdf_slot(app):
                body = await render(data, format, settings)
        else:
            body = await render(data, format, settings)
    except ChromiumMissing as err:
        return JSONResponse({"detail": str(err), "errors": [{"field": "reports.chromium", "error": str(err)}]},
                            status_code=503)
    except PdfError as err:
        return JSONResponse({"detail": str(err)}, status_code=500)
    headers = {} if format == "html" else {"Content-Disposition": disposition(name)}
    return Response(body, media_type=MEDIA[format], headers=headers)


class StoredReport(Open):
    name: str
    kind: str
    period: str
    format: str
    bytes: int
    sha256: str
    made: Time
    complete: bool
    delivered: dict[str, Any]
    url: str


@router.get("/stored", **answers(Page[StoredReport]))
async def stored_reports(request: Request, _: Annotated[Principal, Depends(require("viewer"))],
                         limit: Annotated[int, Query(ge=1, le=500)] = 100,
                         offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    """Reports the server made on its own (``[reports.schedule]``), newest first, with their delivery."""
    from .schedule import listing

    items = await listing(request.app)
    return {"total": len(items), "limit": limit, "offset": offset, "items": items[offset:offset + limit]}


_STORED = answers_file("application/pdf", MEDIA["xlsx"], "text/csv", "text/html", description="A stored report")
_STORED["responses"][404] = {"model": ErrorBody, "description": "no such stored report"}


@router.get("/stored/{name}", **_STORED)
async def stored_report(request: Request, name: Annotated[str, Path(max_length=200)],
                        _: Annotated[Principal, Depends(require("viewer"))]) -> Response:
    """One stored report's file, as listed by ``GET /api/v1/reports/stored``."""
    from .schedule import read_stored

    got = await read_stored(request.app, name)
    if got is None:
        return JSONResponse({"detail": f"no stored report named {name!r}",
                             "errors": [{"field": "name", "error": "not found"}]}, status_code=404)
    body, fmt = got
    return Response(body, media_type=MEDIA[fmt], headers={"Content-Disposition": disposition(name)})
