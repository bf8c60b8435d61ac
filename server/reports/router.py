"""Operations report API: the same report as ``posfleet report ops``, as printable HTML, CSV or PDF."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from ..auth import Principal, require
from ..auth.bounds import Name
from ..auth.openapi import ErrorBody, answers_file
from ..availability.router import Until, When
from .ops import build, render_csv, render_html
from .pdf import ChromiumMissing, PdfError, html_to_pdf

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])


_FILES = answers_file("text/html", "text/csv", "application/pdf",
                      description="The report: HTML to print on A4, CSV, or PDF (by format)")
_FILES["responses"][503] = {"model": ErrorBody, "description": "PDF asked for and no Chromium to print it with: "
                                                              "the error names reports.chromium"}


@router.get("/ops", **_FILES)
async def ops_report(
    request: Request,
    _: Annotated[Principal, Depends(require("viewer"))],
    start: When,
    end: Until,
    county: Name = None,
    format: Literal["html", "csv", "pdf"] = "html",  # noqa: A002 - the query parameter's name
    lang: Literal["zh", "en"] = "zh",
) -> Response:
    svc = request.app.state.availability
    a, b = svc.period(start, end)
    data = await build(svc, request.app.state.storage, a, b, county, lang)
    name = f"ops-{data['from'][:10]}-{data['to'][:10]}"
    if format == "csv":
        return Response(render_csv(data), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    if format == "pdf":
        cfg = request.app.state.settings.reports
        slots = getattr(request.app.state, "pdf_slots", None)
        if slots is None:  # made here, on the server's own event loop
            slots = request.app.state.pdf_slots = asyncio.Semaphore(cfg.pdf_concurrency)
        try:
            async with slots:
                pdf = await html_to_pdf(render_html(data), cfg.chromium, cfg.pdf_timeout_s)
        except ChromiumMissing as err:
            return JSONResponse({"detail": str(err), "errors": [{"field": "reports.chromium", "error": str(err)}]},
                                status_code=503)
        except PdfError as err:
            return JSONResponse({"detail": str(err)}, status_code=500)
        return Response(pdf, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'})
    return Response(render_html(data), media_type="text/html; charset=utf-8")
