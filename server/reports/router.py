"""Operations report API: the same report as ``posfleet report ops``, as printable HTML or CSV."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from ..auth import Principal, require
from .ops import build, render_csv, render_html

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])


@router.get("/ops")
async def ops_report(
    request: Request,
    _: Annotated[Principal, Depends(require("viewer"))],
    start: Annotated[str, Query(alias="from", max_length=40)],
    end: Annotated[str, Query(alias="to", max_length=40)],
    county: str | None = None,
    format: Literal["html", "csv"] = "html",  # noqa: A002 - the query parameter's name
    lang: Literal["zh", "en"] = "zh",
) -> Response:
    svc = request.app.state.availability
    a, b = svc.period(start, end)
    data = await build(svc, request.app.state.storage, a, b, county, lang)
    name = f"ops-{data['from'][:10]}-{data['to'][:10]}"
    if format == "csv":
        return Response(render_csv(data), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    return Response(render_html(data), media_type="text/html; charset=utf-8")
