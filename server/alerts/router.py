"""Alerts API: list (open or all), acknowledge or close with a note (engineers and admins; both audited as
``alert.ack`` / ``alert.close`` with the note), evaluate now (admins).

Closing by hand is for alerts no rule closes (``sim_changed``, ``security``) and for a condition someone has
dealt with; an alert whose condition still stands is opened again by the next evaluation (as a new occurrence)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from wire.times import iso

from ..answers import Page, Time, page, timed
from ..auth import Principal, require
from ..auth.bounds import Id64, Name, Offset, SNQuery
from ..auth.openapi import ErrorBody, Open, answers
from ..registry.models import FieldError

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


class Alert(Open):
    id: int
    kind: str
    sn: str | None
    county: str | None
    opened_ts: Time
    last_ts: Time
    closed_ts: Time | None
    message: str
    data: dict[str, Any]
    acked_by: str | None
    acked_ts: Time | None
    note: str
    closed_by: str | None


class Acked(Open):
    id: int
    acked_by: str
    note: str


class Closed(Open):
    id: int
    closed_by: str
    closed_ts: Time
    note: str


class NoteIn(BaseModel):
    """What the person acknowledging or closing says (kept in the audit trail, shown with the alert)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    note: str = Field("", max_length=500)


class Evaluated(Open):
    standing: Any


@router.get("", **answers(Page[Alert]))
async def list_alerts(
    request: Request,
    p: Annotated[Principal, Depends(require("viewer"))],
    open_only: Annotated[bool, Query(alias="open")] = True,
    kind: Name = None,
    sn: SNQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    total, items = await request.app.state.storage.list_alerts(open_only, kind, sn, limit, offset,
                                                               p.scope.within())
    audit = getattr(request.app.state, "audit", None)
    for a in items:  # who closed it by hand and the note said then (or when acknowledging), from the audit trail
        a["note"], a["closed_by"] = "", None
        if audit is None or not (a.get("acked_by") or a.get("closed_ts")):
            continue
        for row in await audit.query(action="alert.*", target=f"alert:{a['id']}", limit=10):  # newest first
            if row["detail"].get("opened_ts") != a["opened_ts"]:
                continue  # an earlier occurrence of the same alert
            if row["action"] == "alert.close" and a.get("closed_ts") is not None and a["closed_by"] is None:
                a["closed_by"], a["note"] = row["actor"], str(row["detail"].get("note") or "")
            elif row["action"] == "alert.ack" and a.get("acked_by") and not a["note"]:
                a["note"] = str(row["detail"].get("note") or "")
    return timed(page(items, total, limit, offset), request.app.state.settings.timezone)  # type: ignore[no-any-return]


async def _audit(request: Request, who: Principal, action: str, alert_id: int, note: str) -> None:
    """The action with its note, and which occurrence of the alert it was about (an alert closed and raised again
    keeps its id)."""
    audit = getattr(request.app.state, "audit", None)
    alert = await request.app.state.storage.get_alert(alert_id)
    if audit is not None and alert is not None:
        await audit.record(who.name, action, f"alert:{alert_id}", role=who.role,
                           client=request.client.host if request.client else "", status=200,
                           detail={"note": note, "kind": alert["kind"], "sn": alert["sn"],
                                   "opened_ts": alert["opened_ts"]})


@router.post("/{alert_id}/ack", **answers(Acked))
async def ack(request: Request, alert_id: Id64, who: Annotated[Principal, Depends(require("engineer"))],
              body: NoteIn | None = None) -> dict[str, Any]:
    """Acknowledge: someone is on it (the alert stays open until its condition clears, or it is closed)."""
    note = body.note if body else ""
    if not await request.app.state.storage.ack_alert(alert_id, who.name, request.app.state.clock.now()):
        raise FieldError("alert_id", f"alert {alert_id} not found", 404)
    await _audit(request, who, "alert.ack", alert_id, note)
    return {"id": alert_id, "acked_by": who.name, "note": note}


_CLOSE = answers(Closed)
_CLOSE["responses"][409] = {"model": ErrorBody, "description": "The alert is already closed"}


@router.post("/{alert_id}/close", **_CLOSE)
async def close(request: Request, alert_id: Id64, body: NoteIn,
                who: Annotated[Principal, Depends(require("engineer"))]) -> dict[str, Any]:
    """Close an open alert with a note saying what was done."""
    storage = request.app.state.storage
    now = int(request.app.state.clock.now())
    done = await storage.close_alert(alert_id, now)
    if done is None:
        raise FieldError("alert_id", f"alert {alert_id} not found", 404)
    if done is False:
        raise FieldError("alert_id", f"alert {alert_id} is already closed", 409)
    await _audit(request, who, "alert.close", alert_id, body.note)
    return {"id": alert_id, "closed_by": who.name, "closed_ts": iso(now, request.app.state.settings.timezone),
            "note": body.note}


@router.post("/evaluate", **answers(Evaluated))
async def evaluate(request: Request, _: Annotated[Principal, Depends(require("admin"))]) -> dict[str, Any]:
    """Run every alert rule now (they also run in the background every ``alerts.interval_s``)."""
    return {"standing": await request.app.state.alerts.evaluate()}
