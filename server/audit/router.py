"""GET /api/v1/audit: the audit trail, newest first, filtered; GET /api/v1/audit/limits: this process's API limit
counters (requests without a valid token, refused for rate, locked-out addresses). Auditors and administrators
(the auditor role exists to read the trail); a county or city auditor reads the rows about its units."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict

from ..answers import Page, Time, page, timed
from ..auth import Principal, require
from ..auth.bounds import TIME_FORMS, Name, Offset, TimeQuery, time_param
from ..auth.openapi import answers
from ..auth.scope import province_only, scoped

router = APIRouter(prefix="/api/v1", tags=["audit"])
# a scoped auditor or administrator reads the rows about its units (commands to them, their jobs); the API limit
# counters are the province's (decision 031)
scoped("GET /api/v1/audit")
province_only("/api/v1/audit/limits")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class AuditRow(_Open):
    id: int
    ts: Time
    actor: str
    role: str
    client: str
    action: str
    target: str
    status: int | None
    detail: dict[str, Any]


class LockedAddress(_Open):
    address: str
    until: Time
    retry_after_s: int


class LimitCounters(_Open):
    """Counted by the process that answers (``worker``) since it started (``since``); the audit trail's
    ``auth.failed`` rows (one per address per minute) and ``auth.lockout`` rows hold every process's."""

    worker: int
    since: Time
    unauthenticated: int
    rate_limited: int
    locked_refused: int
    lockouts: int
    locked_out: list[LockedAddress]
    limits: dict[str, float]


@router.get("/audit", **answers(Page[AuditRow]))
async def list_audit(
    request: Request,
    _p: Annotated[Principal, Depends(require("auditor"))],
    actor: Name = None,
    action: Annotated[str | None, Query(max_length=100,
                                        description="exact, or a prefix ending in * (e.g. command.*)")] = None,
    target: Annotated[str | None, Query(max_length=512)] = None,
    client: Name = None,
    since: TimeQuery = None,
    until: Annotated[str | None, Query(min_length=1, max_length=40, description=f"before this time (a day alone: "
                                                                                 f"to its end): {TIME_FORMS}")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """The audit trail, newest first (a caller with a county or city scope: the rows about its units, commands to
    them and their jobs)."""
    tz = request.app.state.settings.timezone
    filters = {"actor": actor, "action": action, "target": target, "client": client,
               "since": time_param(since, "since", tz), "until": time_param(until, "until", tz, end=True)}
    audit = request.app.state.audit
    within = _p.scope.within()  # a county or city scope: the rows about its units only
    rows = await audit.query(**filters, limit=limit, offset=offset, within=within)
    return timed(page(rows, await audit.count(**filters, within=within), limit, offset), tz)  # type: ignore[no-any-return]


@router.get("/audit/limits", **answers(LimitCounters))
async def limit_counters(request: Request, _p: Annotated[Principal, Depends(require("auditor"))]) -> dict[str, Any]:
    """Requests answered 401 (``unauthenticated``), refused 429 for rate (``rate_limited``) or lock-out
    (``locked_refused``), lock-outs begun, the addresses locked out now, and the limits in force."""
    return timed(request.app.state.api_limiter.snapshot(), request.app.state.settings.timezone)  # type: ignore[no-any-return]
