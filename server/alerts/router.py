"""Alerts API: list (open or all), acknowledge (engineers and admins), evaluate now (admins)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ..auth import Principal, require
from ..registry.models import FieldError

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


@router.get("")
async def list_alerts(
    request: Request,
    _: Annotated[Principal, Depends(require("viewer"))],
    open_only: Annotated[bool, Query(alias="open")] = True,
    kind: str | None = None,
    sn: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    total, items = await request.app.state.storage.list_alerts(open_only, kind, sn, limit, offset)
    return {"total": total, "items": items}


@router.post("/{alert_id}/ack")
async def ack(request: Request, alert_id: int, who: Annotated[Principal, Depends(require("engineer"))]) -> dict[str, Any]:
    if not await request.app.state.storage.ack_alert(alert_id, who.name, request.app.state.clock.now()):
        raise FieldError("alert_id", f"alert {alert_id} not found", 404)
    return {"id": alert_id, "acked_by": who.name}


@router.post("/evaluate")
async def evaluate(request: Request, _: Annotated[Principal, Depends(require("admin"))]) -> dict[str, Any]:
    """Run every alert rule now (they also run in the background every ``alerts.interval_s``)."""
    return {"standing": await request.app.state.alerts.evaluate()}
