"""``GET /api/v1/server/inspection``: the server's self-inspection (server/inspection/service.py) for people, the
dashboard's card and the report; ``POST /api/v1/server/inspection/run`` runs it now and updates its alerts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from ..answers import Time
from ..auth import Principal, require
from ..auth.openapi import Open, answers
from .service import Inspector, answer, inspect

router = APIRouter(prefix="/api/v1/server", tags=["server"])


class Inspection(Open):
    now: Time
    status: str
    problems: list[dict[str, Any]]  # check, key, message (English), vars (the figures, for a translation)
    disks: list[dict[str, Any]]
    database: dict[str, Any]
    backup: dict[str, Any]
    broker: dict[str, Any]
    ingest: dict[str, Any]
    certificates: dict[str, Any]
    time_sync: dict[str, Any]
    disk_alert_pct: float


@router.get("/inspection", **answers(Inspection))
async def inspection(request: Request, _: Annotated[Principal, Depends(require("viewer"))]) -> dict[str, Any]:
    """Disks and database fill, last backup and its age, broker connectivity, ingest lag and rejects, certificate
    expiry (CA, broker, server, every terminal), time sync; ``problems`` lists what is wrong (``status``
    ``alert``), each also raised as an alert by the periodic inspection."""
    app = request.app
    return answer(await inspect(app), app.state.settings.timezone)


@router.post("/inspection/run", **answers(Inspection))
async def run(request: Request, _: Annotated[Principal, Depends(require("admin"))]) -> dict[str, Any]:
    """Inspect now and raise or close the ``server`` and ``certificate`` alerts (this also runs every
    ``inspection.interval_s``)."""
    app = request.app
    inspector = getattr(app.state, "inspector", None) or Inspector(app)
    return answer(await inspector.run(), app.state.settings.timezone)
