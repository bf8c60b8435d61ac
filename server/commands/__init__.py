"""Remote commands, jobs and update packages on the server (issue 5).

``install_api(app)`` adds the routers and the audit middleware (before start-up);
``await start(app, settings, storage, ingest, registry)`` starts the service and returns it
(with ``stop()``) for the app's shutdown.
"""

from __future__ import annotations

import time
from typing import Any


def install_api(app: Any) -> None:
    from ..audit.middleware import AuditMiddleware
    from ..audit.router import router as audit_router
    from .router import router

    app.add_middleware(AuditMiddleware)
    app.include_router(router)
    app.include_router(audit_router)


async def start(app: Any, settings: Any, storage: Any, ingest: Any, registry: Any = None,
                background: bool = True, results: bool = False) -> Any:
    """``background=False`` (an API-only worker process): commands are queued and read here, and the primary's
    dispatcher, which polls the queue every ``dispatch_interval_s``, sends them."""
    from ..audit import Audit
    from .service import CommandService

    audit = Audit(storage, time.time)
    app.state.audit = audit
    svc = CommandService(settings, storage, ingest, app.state.clock, registry, audit)
    await svc.start(background, results)
    app.state.commands = svc
    return svc
