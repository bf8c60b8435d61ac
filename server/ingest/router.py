"""Ingest counters: messages and samples taken in, every rejection counted by reason; the dead letters."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ..auth import Principal, require

router = APIRouter(prefix="/api/v1/ingest", tags=["health"])


@router.get("/stats")
async def ingest_stats(request: Request, _: Annotated[Principal, Depends(require("viewer"))]) -> dict[str, Any]:
    """Messages and samples taken in, and every rejection counted by reason."""
    from ..app import ingest_stats

    return await ingest_stats(request.app)  # the primary's, whichever process answers


@router.get("/dead-letters")
async def dead_letters(
    request: Request, _: Annotated[Principal, Depends(require("admin"))],
    sn: Annotated[str | None, Query(max_length=32, pattern=r"^[A-Za-z0-9_-]+$",
                                    description="only this unit's")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Messages that passed the boundary but could not be stored, even alone (newest first): kept with the
    reason and their validated content (no field outside the schema), acknowledged so they are never
    redelivered. Admins only."""
    total, rows = await request.app.state.storage.dead_letters(limit, sn)
    return {"total": total, "items": rows}
