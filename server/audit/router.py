"""GET /api/v1/audit: the audit trail, newest first, filtered (administrators only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ..auth import Principal, require

router = APIRouter(prefix="/api/v1", tags=["audit"])


@router.get("/audit")
async def list_audit(
    request: Request,
    _p: Annotated[Principal, Depends(require("admin"))],
    actor: str | None = None,
    action: Annotated[str | None, Query(description="exact, or a prefix ending in * (e.g. command.*)")] = None,
    target: str | None = None,
    client: str | None = None,
    since: float | None = None,
    until: float | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    rows = await request.app.state.audit.query(actor=actor, action=action, target=target, client=client,
                                               since=since, until=until, before_id=before_id, limit=limit)
    return {"items": rows, "next_before_id": rows[-1]["id"] if len(rows) == limit else None}
