"""Ingest counters: messages and samples taken in, every rejection counted by reason; the dead letters."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ..answers import Page, Time, page, timed
from ..auth import Principal, require
from ..auth.openapi import Open, answers
from ..auth.scope import province_only

router = APIRouter(prefix="/api/v1/ingest", tags=["health"])
# the broker's and the pipeline's: a dead letter may name no unit (or a forged one), the counters are the whole
# province's; a county user gets 404 by decision (decision 031)
province_only("/api/v1/ingest/stats", "/api/v1/ingest/dead-letters")


class IngestFigures(Open):
    """Counted since the primary started (whichever process answers: the primary's figures)."""

    connected: bool
    messages: int
    accepted: int
    samples_stored: int
    events_stored: int
    duplicates: int
    commits: int
    rejected_messages: dict[str, int]
    rejected_items: dict[str, int]
    storage_errors: int
    last_commit: Time | None
    dead_letters: int
    queued: int
    oldest_queued_s: float
    ready: bool
    problems: list[str]


class Worker(Open):
    pid: int
    role: str


class Health(Open):
    """``status``: ``ok``, ``degraded`` (ingest disconnected from the broker) or ``stalled`` (503)."""

    status: str
    problems: list[str]
    ingest: IngestFigures
    worker: Worker


class Ready(Open):
    ready: bool
    problems: list[str]


class DeadLetter(Open):
    id: int
    received_at: Time
    sn: str | None
    topic: str
    reason: str
    size: int
    sha256: str


def _tz(request: Request) -> str:
    return request.app.state.settings.timezone  # type: ignore[no-any-return]


@router.get("/stats", **answers(IngestFigures))
async def ingest_stats(request: Request, _: Annotated[Principal, Depends(require("viewer"))]) -> dict[str, Any]:
    """Messages and samples taken in, and every rejection counted by reason."""
    from ..app import ingest_stats

    return timed(await ingest_stats(request.app), _tz(request))  # type: ignore[no-any-return]  # the primary's


@router.get("/dead-letters", **answers(Page[DeadLetter]))
async def dead_letters(
    request: Request, _: Annotated[Principal, Depends(require("admin"))],
    sn: Annotated[str | None, Query(max_length=32, pattern=r"^[A-Za-z0-9_-]+$",
                                    description="only this unit's")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=100_000, description="items to skip")] = 0,
) -> dict[str, Any]:
    """Messages that passed the boundary but could not be stored, even alone (newest first): kept with the
    reason and their validated content (no field outside the schema), acknowledged so they are never
    redelivered. Admins only."""
    total, rows = await request.app.state.storage.dead_letters(limit + offset, sn)
    return timed(page(rows[offset:], total, limit, offset), _tz(request))  # type: ignore[no-any-return]
