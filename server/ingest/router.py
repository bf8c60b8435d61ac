"""Ingest counters: messages and samples taken in, every rejection counted by reason."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from ..auth import Principal, require

router = APIRouter(prefix="/api/v1/ingest", tags=["health"])


@router.get("/stats")
async def ingest_stats(request: Request, _: Annotated[Principal, Depends(require("viewer"))]) -> dict[str, Any]:
    """Messages and samples taken in, and every rejection counted by reason."""
    from ..app import ingest_stats

    return await ingest_stats(request.app)  # the primary's, whichever process answers
