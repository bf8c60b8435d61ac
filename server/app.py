"""The fleet server's app factory: nothing happens at import; ``create_app(settings)`` builds it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from wire.clock import Clock

from .ingest.service import Ingest
from .settings import Settings
from .storage import open_storage
from .storage.base import INGEST_STATS_KEY, PENDING_KEY
from .storage.registry import stamp_once

log = logging.getLogger(__name__)


def make_clock(settings: Settings) -> Clock:
    c = settings.clock
    return Clock.from_config(c.speed, c.start, c.anchor, c.schedule, c.file)


async def purge_raw_samples(app: FastAPI) -> int:
    """One retention pass: remove raw samples older than ``retention_days`` (default 14) on the app's clock."""
    s: Settings = app.state.settings
    cutoff = int(app.state.clock.now()) - s.retention_days * 86400
    n: int = await app.state.storage.purge_samples(cutoff)
    if n:
        log.info("retention: removed %d raw samples older than %d days", n, s.retention_days)
    ev_cutoff = int(app.state.clock.now()) - s.ingest.event_retention_days * 86400
    m: int = await app.state.storage.purge_events(ev_cutoff)
    if m:
        log.info("retention: removed %d events older than %d days", m, s.ingest.event_retention_days)
    return n


async def _retention(app: FastAPI) -> None:
    while True:
        try:
            await purge_raw_samples(app)
        except Exception:
            log.exception("retention pass failed")
        await asyncio.sleep(3600)


async def _start_fleet(app: FastAPI, settings: Settings, storage: Any, ingest: Ingest, primary: bool = True) -> list[Any]:
    """Registry, roll-ups, alerts (issue 4): services on app.state and, in the primary, their background tasks
    (an API-only process answers from the same services without their loops)."""
    from .alerts.service import Alerts
    from .availability.service import Availability
    from .registry.pages import AnswerCache
    from .registry.service import Registry

    clock = app.state.clock
    registry = Registry(settings, storage, clock.now)
    app.state.registry = registry
    app.state.unit_pages = AnswerCache(settings.api.list_cache_s)
    await registry.index()  # warm: the first figures request should not pay for it
    # On PostgreSQL every primary (one per host, or several) ingests; the one holding the leadership also runs the
    # work that must run once (server/leadership.py): each starts as a follower and is promoted when it leads.
    follower = primary and getattr(storage, "dialect", "") == "postgresql"
    lead_now = primary and not follower
    availability = Availability(settings, storage, registry, clock)
    await availability.start(background=lead_now, follower=follower)
    app.state.availability = availability
    ingest.on_committed.append(availability.on_committed)
    alerts = Alerts(settings, storage, registry, availability, clock)
    if lead_now:
        await alerts.start()
    app.state.alerts = alerts  # (SIM changes: read from what any process stored, server/alerts/simwatch.py)
    from .inspection.service import Inspector

    inspector = Inspector(app)  # the server's self-inspection and its alerts, where the alerts run (issue 17)
    app.state.inspector = inspector
    if lead_now and settings.alerts.enabled:
        inspector.start()
    from .renewal import Renewals

    renewals = Renewals(settings, storage, ingest, clock)  # terminals' certificate renewal (issue 17, decision 026)
    app.state.renewals = renewals
    ingest.on_committed.append(renewals.on_committed)
    if primary:
        await renewals.start(deliver=lead_now)
    from .commands import start as start_commands

    commands = await start_commands(app, settings, storage, ingest, registry, background=lead_now, results=follower)
    from .access import start as start_access

    access = await start_access(app, settings, storage, ingest, registry, primary)  # issue 18: access, statistics
    app.state.leadership = None
    if follower:
        from .leadership import Leadership

        async def promote() -> None:
            await availability.promote()
            await alerts.start()
            if settings.alerts.enabled:
                inspector.start()
            await renewals.start_delivery()
            await commands.start_dispatcher()
            app.state.retention_task = asyncio.create_task(_retention(app), name="retention")

        app.state.leadership = Leadership(storage, [promote])
    return [availability, alerts, inspector, renewals, commands, access]


async def _publish_ingest(app: FastAPI) -> None:
    """Primary beside API workers: its ingest figures go to ``meta`` every second (when they change), so that
    ``/healthz`` and ``/api/v1/ingest/stats`` say the same whichever process answers; and so do the hours it has
    marked for recount, so that figures say ``complete: false`` for them whichever process answers."""
    sent: dict[str, str] = {}
    while True:
        try:
            await publish_for_workers(app, sent)
        except Exception:
            log.exception("could not publish the ingest figures")
        await asyncio.sleep(1.0)


async def publish_for_workers(app: Any, sent: dict[str, str]) -> None:
    """One round of :func:`_publish_ingest`: write what changed since ``sent`` (updated)."""
    avail = getattr(app.state, "availability", None)
    for key, text in ((INGEST_STATS_KEY, json.dumps(app.state.ingest.figures(), sort_keys=True)),
                      (PENDING_KEY, json.dumps(avail.pending_ranges() if avail is not None else []))):
        if sent.get(key) != text:
            await app.state.storage.meta_set_apart(key, text)
            sent[key] = text


async def ingest_stats(app: Any) -> dict[str, Any]:
    """This process's ingest figures; in an API-only process, the primary's (at most ~2 s old; zeros before the
    primary has published any)."""
    if getattr(app.state, "role", "primary") == "primary":
        return app.state.ingest.figures()  # type: ignore[no-any-return]
    text = (await app.state.storage.versions()).get(INGEST_STATS_KEY)
    return json.loads(text) if text else app.state.ingest.figures()  # type: ignore[no-any-return]


def _quiet_gc() -> tuple[int, int, int]:
    """After start-up: the objects built so far (modules, the registry index of every unit) are moved out of the
    cyclic collector's reach, and it runs less often. Measured on 50,000 units in bench_server_api: full
    collections paused each API process 22-27 times, up to 130 ms each (1.8-2.0 s in all); with this 4-9 times,
    0.3-0.7 s in all. Returns the thresholds before, for the shutdown."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    return before


PRIMARY_PID_ENV = "POSFLEET_PRIMARY_PID"  # set by the primary for the API workers it starts


async def _exit_with_parent(parent: int) -> None:
    """An API-only process ends when the process that started it is gone (no orphans holding the port)."""
    while True:
        if os.getppid() != parent:
            log.warning("API worker %d: the primary (pid %d) is gone; stopping", os.getpid(), parent)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        await asyncio.sleep(1.0)


class WorkerHeader:
    """Every response says which process answered it (``X-Posfleet-Worker: <pid>``)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.header = (b"x-posfleet-worker", str(os.getpid()).encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)


class OneStamp:
    """Each HTTP request reads the registry's stamp at most once (server/storage/registry.py ``stamp_once``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with stamp_once():
            await self.app(scope, receive, send)


async def _stop_fleet(services: list[Any]) -> None:
    for svc in reversed(services):
        await svc.stop()


def _install_fleet_api(app: FastAPI) -> None:
    from pydantic import ValidationError

    from .registry.models import FieldError
    from .registry.router import router as registry_router

    @app.exception_handler(FieldError)
    async def _field_error(request: Request, exc: FieldError) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "errors": [{"field": exc.field, "error": exc.message}]},
                            status_code=exc.status)

    @app.exception_handler(ValidationError)
    async def _bad_body(request: Request, exc: ValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(x) for x in e["loc"]), "error": e["msg"]} for e in exc.errors()]
        return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)

    from .alerts.router import router as alerts_router
    from .analytics.router import router as analytics_router
    from .availability.router import router as availability_router
    from .dashboard.router import router as dashboard_router
    from .inspection.router import router as inspection_router
    from .reports.router import router as reports_router

    app.include_router(registry_router)
    app.include_router(availability_router)
    app.include_router(analytics_router)
    app.include_router(alerts_router)
    app.include_router(reports_router)
    app.include_router(inspection_router)
    app.include_router(dashboard_router)
    from .commands import install_api as install_commands_api

    install_commands_api(app)
    from .access import install_api as install_access_api

    install_access_api(app)


def create_app(settings: Settings, role: str = "primary", publish_ingest: bool = False) -> FastAPI:
    """``role``: ``primary`` (ingest, roll-ups, alerts, webhooks, retention, command dispatch, and the API) or
    ``api`` (an API-only worker beside a primary on the same database: never ingests, runs no background job).
    ``publish_ingest``: a primary with API workers shares its ingest figures with them through ``meta``."""
    if role not in ("primary", "api"):
        raise ValueError(f"role: primary or api, not {role!r}")
    primary = role == "primary"
    parent = int(os.environ.get(PRIMARY_PID_ENV) or os.getppid())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        storage = open_storage(settings.storage.url, settings.base_dir, settings.storage.read_connections)
        await storage.open()
        app.state.storage = storage
        ingest = Ingest(settings, storage, app.state.clock)
        app.state.ingest = ingest
        fleet: list[Any] = []
        # a process that answers the API: a primary with the API off its port (api_workers > 1, primary_api false)
        # answers none, so it reads no list counts ahead and counts no dashboard figures ahead
        serves_api = not primary or settings.http.primary_api or settings.http.api_workers <= 1
        try:
            fleet = await _start_fleet(app, settings, storage, ingest, primary)
            if primary and settings.ingest_enabled:
                await ingest.start()
            if serves_api:
                await storage.warm()
        except BaseException as err:
            # `posfleet server run` checked the files first; whatever still fails here must end the process (the
            # database's threads would otherwise keep it alive, serving nothing): close what was opened
            log.error("start-up failed: %s: %s", type(err).__name__, err)
            with contextlib.suppress(Exception):
                await _stop_fleet(fleet)
            with contextlib.suppress(Exception):
                await ingest.stop()
            with contextlib.suppress(Exception):
                await storage.close()
            raise
        gc_before = _quiet_gc()
        lead = app.state.leadership
        if lead is not None:  # PostgreSQL: the first try now (a lone process leads before its first request)
            await lead.step()
        retention = asyncio.create_task(lead.run() if lead is not None else _retention(app) if primary
                                        else _exit_with_parent(parent))
        publish = asyncio.create_task(_publish_ingest(app)) if primary and publish_ingest else None
        from .reports import schedule as report_schedule

        # monthly/quarterly reports (issue 17): each tick asks storage.lead(), so only the leader makes and sends them
        reports_task = report_schedule.start(app) if primary else None
        # the figures dashboards open with, counted ahead in every process that answers the API
        avail = getattr(app.state, "availability", None)
        warm = (asyncio.create_task(avail.warm_loop(settings.availability.warm_figures_s), name="warm-figures")
                if serves_api and avail is not None and settings.availability.warm_figures_s > 0 else None)
        try:
            yield
        finally:
            if warm is not None:
                warm.cancel()
            retention.cancel()
            if getattr(app.state, "retention_task", None) is not None:
                app.state.retention_task.cancel()
            await report_schedule.stop(reports_task)
            if publish is not None:
                publish.cancel()
            gc.unfreeze()  # (tests build many apps in one process)
            gc.set_threshold(*gc_before)
            await _stop_fleet(fleet)
            await ingest.stop()
            await storage.close()

    app = FastAPI(title="posfleet fleet server", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    from .apidocs import install as install_api_docs

    install_api_docs(app)  # /docs and /redoc with Swagger UI and ReDoc served from the package, no CDN
    app.state.settings = settings
    app.state.clock = make_clock(settings)
    app.state.role = role
    app.add_middleware(WorkerHeader)
    app.add_middleware(OneStamp)
    from .inspection.metrics import install as install_metrics

    install_metrics(app)  # GET /metrics and the API's latency histograms (issue 17, decision 027)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(x) for x in e["loc"] if x not in ("query", "body", "path")), "error": e["msg"]}
                  for e in exc.errors()]
        return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)

    from .answers import timed
    from .auth.openapi import answers
    from .ingest.router import Health, Ready

    health = answers(Health)
    health["responses"][503] = {"model": Health, "description": "ingest is stalled"}
    ready = answers(Ready)
    ready["responses"][503] = {"model": Ready, "description": "not ready to take telemetry"}

    @app.get("/healthz", tags=["health"], **health)
    async def healthz(request: Request, response: Response) -> dict[str, Any]:
        """Liveness. ``status``: ``ok``; ``degraded`` while ingest is disconnected from the broker (a restart would
        not help); ``stalled`` (503) while telemetry waits longer than ``ingest.stall_s`` for a commit.
        ``ingest``: the primary's figures, whichever process answers; ``worker``: the one that did."""
        figures = await ingest_stats(request.app)
        problems = figures.get("problems", [])
        status = "ok"
        if any("stalled" in p for p in problems):
            status = "stalled"
            response.status_code = 503
        elif problems:
            status = "degraded"
        return timed({"status": status, "problems": problems, "ingest": figures,  # type: ignore[no-any-return]
                      "worker": {"pid": os.getpid(), "role": role}}, settings.timezone)

    @app.get("/readyz", tags=["health"], **ready)
    async def readyz(request: Request, response: Response) -> dict[str, Any]:
        """Readiness for a load balancer or monitor: 503 while ingest is disconnected, stalled or lagging."""
        figures = await ingest_stats(request.app)
        problems = figures.get("problems", [])
        if problems:
            response.status_code = 503
        return {"ready": not problems, "problems": problems}

    from .ingest.router import router as ingest_router
    from .units.router import router as units_router

    app.include_router(units_router)
    app.include_router(ingest_router)
    _install_fleet_api(app)
    from .auth.guard import install as install_guard

    install_guard(app)  # last, so outermost: rate limits, lock-out, input screening; documented errors (issue 12)
    return app
