"""Network access, business access and service statistics (issue 18): IP pools, applications with their review
steps, the business interface register and access monitoring, the terminals' service aggregates, deployment
coverage and the province map's figures."""

from __future__ import annotations

from typing import Any


async def start(app: Any, settings: Any, storage: Any, ingest: Any, registry: Any, primary: bool) -> Any:
    """The service on ``app.state.access``; in a process that ingests, its hook on ingest's commits and the task
    storing what terminals report."""
    from .service import Access

    access = Access(settings, storage, registry, app.state.clock, getattr(app.state, "audit", None))
    app.state.access = access
    if primary:
        ingest.on_committed.append(access.on_committed)
        await access.start()
    return access


def install_api(app: Any) -> None:
    from .router import router

    app.include_router(router)
