"""Prometheus ``GET /metrics`` (issue 17), with prometheus-client.

What a scrape gets (``posfleet_`` prefix):

* ingest: ``ingest_messages_total``, ``ingest_samples_stored_total``, ``ingest_events_stored_total`` (counters:
  the ingest rate is ``rate()`` of these), ``ingest_lag_seconds`` (the oldest message waiting for its commit),
  ``ingest_queued_messages``, ``ingest_rejected_messages_total{reason}``, ``ingest_rejected_items_total{reason}``,
  ``ingest_dead_letters_total``, ``ingest_storage_errors_total``, ``broker_connected``;
* ``api_request_duration_seconds{method,route,status}``: a histogram of every HTTP request this process answered,
  by route template (``/api/v1/units/{sn}``, never the SN itself: bounded label values);
* ``recount_backlog_hours`` (hours marked for recount) and ``recount_backlog_unit_hours`` (unit-hours, in the
  process that counts);
* ``alerts_open{kind}`` (the self-inspection's findings are alerts of kinds ``server`` and ``certificate``),
  ``units{state}`` (heard by ingest, by broker session);
* ``api_unit_list_answers_total{answer}``: registry unit lists this process made or handed out again (decision 038).

Every figure is read when scraped (the ingest figures are the primary's, whichever process answers: as
``/healthz``), nothing per unit: a scrape costs the same for 50 or 50,000 units but for two grouped counts
(benchmarks/bench_metrics.py). Access: decision 027 (open to ``metrics.open_to`` networks, a token elsewhere).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..storage.selfcheck import open_alerts_by_kind, units_by_state

# request durations: from a cached index read (~1 ms) to a PDF report (tens of seconds)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class _Figures(Collector):
    """Reads the app's figures at scrape time; :meth:`refresh` fetches the database's before ``collect``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.snapshot: dict[str, Any] = {}

    async def refresh(self) -> None:
        from ..app import ingest_stats

        app = self.app
        storage = app.state.storage
        avail = getattr(app.state, "availability", None)
        ranges: list[list[int]]
        if getattr(app.state, "role", "primary") == "primary" and avail is not None:
            ranges = avail.pending_ranges()
            unit_hours = avail.pending
        else:
            import json

            from ..storage.base import PENDING_KEY

            text = (await storage.versions()).get(PENDING_KEY)
            ranges, unit_hours = (json.loads(text) if text else []), None
        self.snapshot = {
            "ingest": await ingest_stats(app),
            "alerts": await open_alerts_by_kind(storage),
            "units": await units_by_state(storage),
            "pending_hours": sum((b - a) // 3600 for a, b in ranges),
            "pending_unit_hours": unit_hours,
        }

    def collect(self) -> Any:
        snap = self.snapshot
        if not snap:
            return
        f = snap["ingest"]
        for name, key, doc in (("ingest_messages", "messages", "MQTT messages received from terminals"),
                               ("ingest_samples_stored", "samples_stored", "samples stored"),
                               ("ingest_events_stored", "events_stored", "events stored"),
                               ("ingest_duplicates", "duplicates", "items received again and ignored"),
                               ("ingest_dead_letters", "dead_letters", "messages kept as dead letters"),
                               ("ingest_storage_errors", "storage_errors", "failed database commits")):
            yield CounterMetricFamily(f"posfleet_{name}", doc, value=float(f.get(key, 0)))
        for name, key, doc in (("ingest_rejected_messages", "rejected_messages", "whole messages refused, by reason"),
                               ("ingest_rejected_items", "rejected_items", "samples/events refused, by reason")):
            c = CounterMetricFamily(f"posfleet_{name}", doc, labels=["reason"])
            for reason, n in sorted((f.get(key) or {}).items()):
                c.add_metric([str(reason)], float(n))
            yield c
        yield GaugeMetricFamily("posfleet_ingest_lag_seconds", "age of the oldest message waiting for its commit",
                                value=float(f.get("oldest_queued_s", 0.0)))
        yield GaugeMetricFamily("posfleet_ingest_queued_messages", "messages received, not yet committed",
                                value=float(f.get("queued", 0)))
        yield GaugeMetricFamily("posfleet_broker_connected", "1 while ingest holds its broker session",
                                value=1.0 if f.get("connected") else 0.0)
        yield GaugeMetricFamily("posfleet_recount_backlog_hours", "hours marked for an availability recount",
                                value=float(snap["pending_hours"]))
        if snap["pending_unit_hours"] is not None:
            yield GaugeMetricFamily("posfleet_recount_backlog_unit_hours", "unit-hours marked for a recount",
                                    value=float(snap["pending_unit_hours"]))
        g = GaugeMetricFamily("posfleet_alerts_open", "open alerts by kind", labels=["kind"])
        for kind, n in sorted(snap["alerts"].items()):
            g.add_metric([kind], float(n))
        yield g
        g = GaugeMetricFamily("posfleet_units", "units heard by ingest, by broker session state", labels=["state"])
        for state, n in sorted(snap["units"].items()):
            g.add_metric([state], float(n))
        yield g
        pages = getattr(self.app.state, "unit_pages", None)
        if pages is not None:  # this process's (server/registry/pages.py)
            c = CounterMetricFamily("posfleet_api_unit_list_answers", "registry unit lists this process answered: "
                                    "made, or kept from an identical request", labels=["answer"])
            c.add_metric(["made"], float(pages.misses))
            c.add_metric(["kept"], float(pages.hits))
            yield c
        storage = getattr(self.app.state, "storage", None)
        if storage is not None and hasattr(storage, "together_asked"):  # this process's (decision 042)
            c = CounterMetricFamily("posfleet_api_access_checks", "token and session checks this process made, and "
                                    "the statements that answered them (checks at once share one)", labels=["count"])
            c.add_metric(["checks"], float(storage.together_asked))
            c.add_metric(["statements"], float(storage.together_sent))
            yield c


class _Timing:
    """ASGI middleware: every HTTP request's duration into the histogram, by route template."""

    def __init__(self, app: Any, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        t = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.histogram.labels(scope["method"], path, f"{status[0] // 100}xx").observe(time.perf_counter() - t)


def _open_to(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    nets = request.app.state.metrics_networks
    return any(addr in n for n in nets if n.version == addr.version)


def install(app: FastAPI) -> None:
    """``/metrics`` and the request timing on ``app`` (``metrics.enabled``)."""
    settings = app.state.settings
    if not settings.metrics.enabled:
        return
    disable_created_metrics()  # no *_created series: half of a scrape's lines, nothing Prometheus needs
    registry = CollectorRegistry(auto_describe=False)
    histogram = Histogram("posfleet_api_request_duration_seconds", "HTTP requests answered by this process",
                          ["method", "route", "status"], buckets=BUCKETS, registry=registry)
    figures = _Figures(app)
    registry.register(figures)
    app.state.metrics_registry = registry
    app.state.metrics_networks = [ipaddress.ip_network(n, strict=False) for n in settings.metrics.open_to]
    app.add_middleware(_Timing, histogram=histogram)

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus text format. Open to ``metrics.open_to``; from elsewhere a bearer token of any role."""
        if not _open_to(request):
            from ..auth import hash_token

            auth = request.headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token or \
                    await request.app.state.storage.find_token(hash_token(token.strip())) is None:
                raise HTTPException(401, "metrics: a bearer token is needed from this address (metrics.open_to)",
                                    {"WWW-Authenticate": "Bearer"})
        await figures.refresh()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
