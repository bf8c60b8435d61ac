"""Alerts API: list (open or all), acknowledge (engineers and admins), evaluate now (admins)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ..auth import Principal, require
from ..auth.bounds import Id64, Name, Offset, SNQuery
from ..auth.openapi import Open, answers
from ..registry.models import FieldError

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


class AlertPage(Open):
    total: int
    items: list[dict[str, Any]]


class Acked(Open):
    id: int
    acked_by: str


class Evaluated(Open):
    standing: Any


@router.get("", **answers(AlertPage))
async def list_alerts(
    request: Request,
    _: Annotated[Principal, Depends(require("viewer"))],
    open_only: Annotated[bool, Query(alias="open")] = True,
    kind: Name = None,
    sn: SNQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    total, items = await request.app.state.storage.list_alerts(open_only, kind, sn, limit, offset)
    return {"total": total, "items": items}


@router.post("/{alert_id}/ack", **answers(Acked))
async def ack(request: Request, alert_id: Id64, who: Annotated[Principal, Depends(require("engineer"))]) -> dict[str, Any]:
    if not await request.app.state.storage.ack_alert(alert_id, who.name, request.app.state.clock.now()):
        raise FieldError("alert_id", f"alert {alert_id} not found", 404)
    return {"id": alert_id, "acked_by": who.name}


@router.post("/evaluate", **answers(Evaluated))
async def evaluate(request: Request, _: Annotated[Principal, Depends(require("admin"))]) -> dict[str, Any]:
    """Run every alert rule now (they also run in the background every ``alerts.interval_s``)."""
    return {"standing": await request.app.state.alerts.evaluate()}
