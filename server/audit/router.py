"""GET /api/v1/audit: the audit trail, newest first, filtered; GET /api/v1/audit/limits: this process's API limit
counters (requests without a valid token, refused for rate, locked-out addresses). Administrators only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict

from ..auth import Principal, require
from ..auth.bounds import MAX_INT64, EpochF, Name

router = APIRouter(prefix="/api/v1", tags=["audit"])


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class AuditRow(_Open):
    id: int
    ts: float
    actor: str
    role: str
    client: str
    action: str
    target: str
    status: int | None
    detail: dict[str, Any]


class AuditPage(_Open):
    items: list[AuditRow]
    next_before_id: int | None


class LockedAddress(_Open):
    address: str
    until: float
    retry_after_s: int


class LimitCounters(_Open):
    """Counted by the process that answers (``worker``) since it started (``since``); the audit trail's
    ``auth.failed`` rows (one per address per minute) and ``auth.lockout`` rows hold every process's."""

    worker: int
    since: float
    unauthenticated: int
    rate_limited: int
    locked_refused: int
    lockouts: int
    locked_out: list[LockedAddress]
    limits: dict[str, float]


@router.get("/audit", response_model=AuditPage)
async def list_audit(
    request: Request,
    _p: Annotated[Principal, Depends(require("admin"))],
    actor: Name = None,
    action: Annotated[str | None, Query(max_length=100,
                                        description="exact, or a prefix ending in * (e.g. command.*)")] = None,
    target: Annotated[str | None, Query(max_length=512)] = None,
    client: Name = None,
    since: EpochF = None,
    until: EpochF = None,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_INT64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    rows = await request.app.state.audit.query(actor=actor, action=action, target=target, client=client,
                                               since=since, until=until, before_id=before_id, limit=limit)
    return {"items": rows, "next_before_id": rows[-1]["id"] if len(rows) == limit else None}


@router.get("/audit/limits", response_model=LimitCounters)
async def limit_counters(request: Request, _p: Annotated[Principal, Depends(require("admin"))]) -> dict[str, Any]:
    """Requests answered 401 (``unauthenticated``), refused 429 for rate (``rate_limited``) or lock-out
    (``locked_refused``), lock-outs begun, the addresses locked out now, and the limits in force."""
    return request.app.state.api_limiter.snapshot()  # type: ignore[no-any-return]
