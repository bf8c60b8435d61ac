"""Fast server tests: the real app (factory, lifespan, SQLite file, ingest code path) over httpx.ASGITransport.

No MQTT here: telemetry goes through the real ingest's ``_process`` (decode, validate, commit, post-commit hooks)
with payloads encoded exactly as the agent sends them. A settable clock stands in for the wall clock, so the
"current hour" is whatever a test says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from server.app import create_app
from server.auth import create_token
from server.settings import parse
from tests.backend import storage_url
from wire import codec
from wire.clock import Clock
from wire.messages import Batch, Check, Event, Sample

TZ = ZoneInfo("Asia/Shanghai")


def at(text: str) -> int:
    """Epoch seconds of a Shanghai wall time ``YYYY-MM-DD HH:MM``."""
    return int(datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp())


class TestClock(Clock):
    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def now(self) -> float:
        return self.t


OK_CHECKS = {"printer": Check(0), "idcard": Check(0), "modem": Check(0), "storage": Check(0)}


def sample(seq: int, ts: int, *, interval: int = 60, connected: bool = True, rtt_ms: int | None = 80,
           checks: dict[str, Check] | None = None, **kw: Any) -> Sample:
    return Sample(seq=seq, ts=ts, interval=interval, connected=connected, rtt_ms=rtt_ms,
                  checks=dict(OK_CHECKS if checks is None else checks), **kw)


@dataclass
class Api:
    app: Any
    client: httpx.AsyncClient
    clock: TestClock
    tokens: dict[str, str]
    _seq: dict[str, int]

    def h(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def get(self, path: str, role: str = "admin", **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.h(role))

    async def req(self, method: str, path: str, role: str = "admin", **kw: Any) -> httpx.Response:
        return await self.client.request(method, path, headers=self.h(role), **kw)

    async def feed(self, sn: str, samples: list[Sample], events: list[Event] | None = None, epoch: int = 1) -> None:
        """Deliver one telemetry batch through the real ingest path (as if it came over MQTT).

        Samples arrive after they are taken: the clock moves to the end of the newest one if it is behind.
        """
        if samples:
            self.clock.t = max(self.clock.t, max(s.ts + s.interval for s in samples))
        batch = Batch(sn=sn, epoch=epoch, samples=samples, events=events or [])
        await self.app.state.ingest._process([(f"pf/{sn}/t", codec.encode(batch), 0, 0)])

    async def minutes(self, sn: str, start: int, n: int, **kw: Any) -> None:
        """``n`` one-minute samples from ``start``."""
        seq = self._seq.get(sn, 0)
        items = [sample(seq + k, start + 60 * k, **kw) for k in range(n)]
        self._seq[sn] = seq + n
        for i in range(0, n, 500):
            await self.feed(sn, items[i: i + 500])

    async def settle(self) -> None:
        """Run the pending recount now (what the debounced background task does)."""
        await self.app.state.availability.flush()


def make_settings(tmp_path: Path, extra: dict[str, Any] | None = None) -> Any:
    data: dict[str, Any] = {
        "storage": {"url": storage_url(tmp_path)},
        "ingest_enabled": False,
        "retention_days": 3650,
        "availability": {"recount_debounce_s": 3600},  # tests flush explicitly
        "alerts": {"interval_s": 3600},
    }
    for k, v in (extra or {}).items():
        if isinstance(v, dict):
            data.setdefault(k, {}).update(v)
        else:
            data[k] = v
    return parse(data)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with make_api(tmp_path) as a:
        yield a


class make_api:  # noqa: N801 - used as an async context manager
    def __init__(self, tmp_path: Path, extra: dict[str, Any] | None = None, now: str = "2025-03-03 12:00") -> None:
        self.settings = make_settings(tmp_path, extra)
        self.now = now

    async def __aenter__(self) -> Api:
        app = create_app(self.settings)
        clock = TestClock(at(self.now))
        app.state.clock = clock
        self._lifespan = app.router.lifespan_context(app)
        await self._lifespan.__aenter__()
        tokens = {role: await create_token(app.state.storage, f"t-{role}", role) for role in ("admin", "engineer", "viewer")}
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        return Api(app, self._client, clock, tokens, {})

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()
        await self._lifespan.__aexit__(*exc)
