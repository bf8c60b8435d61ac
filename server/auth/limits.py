"""Rate limits and lock-out for the HTTP API (issue 12; docs/decisions/013-api-limits.md).

Kept in the memory of each API process (no shared store): with ``http.api_workers = N`` a client whose
connections land on several processes gets up to N times the figures below.

* **Per token**: a token bucket of ``api.burst`` requests refilled at ``api.rate_per_s`` (default 300 at once,
  20 a second sustained), keyed by the token's SHA-256 whether the token is valid or not.
* **Per client address**: a bucket of ``api.address_burst`` refilled at ``api.address_rate_per_s`` for every
  request (default 600, 50 a second: several people behind one NAT share an address).
* **Lock-out**: ``api.lockout_failures`` requests answered 401 (no token, an unknown or a revoked one) from one
  address within ``api.lockout_window_s`` lock that address out for ``api.lockout_s`` (default 10 in 5 minutes,
  15 minutes). While locked, the address is answered 429 without looking at its token, except a token this
  process has already answered without 401 (a colleague's dashboard behind the same NAT keeps working; a token
  first shown during the lock-out waits for its end, so the lock gives a guesser no answer).

Refusals are 429 with ``Retry-After`` (whole seconds) and a body naming what was exceeded. Requests answered 401
are counted (``GET /api/v1/audit/limits``) and written to the audit trail as one ``auth.failed`` row per address
per minute (with the count and up to five paths), plus one ``auth.lockout`` row when an address is locked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MAX_KEYS = 50_000  # buckets or addresses kept before the idle ones are dropped (many addresses: an attack)


@dataclass
class Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """Token buckets by key: ``take(key)`` is 0.0 when the request may go, else the seconds until it may."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.buckets: dict[str, Bucket] = {}

    def take(self, key: str, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        b = self.buckets.get(key)
        if b is None:
            if len(self.buckets) >= MAX_KEYS:
                self._prune(now)
            b = self.buckets[key] = Bucket(self.burst, now)
        else:
            b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Drop the buckets that have refilled (idle): forgetting them changes nothing."""
        full = self.burst / self.rate
        for k in [k for k, b in self.buckets.items() if now - b.stamp >= full]:
            del self.buckets[k]
        if len(self.buckets) >= MAX_KEYS:  # all busy: drop the oldest half
            for k in sorted(self.buckets, key=lambda k: self.buckets[k].stamp)[: MAX_KEYS // 2]:
                del self.buckets[k]


@dataclass
class _Minute:
    count: int = 0
    paths: list[str] = field(default_factory=list)


class Limiter:
    """The limits of one API process (state only; :class:`ApiGuard` applies it to requests)."""

    def __init__(self, cfg: Any, mono: Any = time.monotonic, wall: Any = time.time) -> None:
        self.cfg = cfg
        self.mono = mono
        self.wall = wall
        self.tokens = TokenBuckets(cfg.rate_per_s, cfg.burst)
        self.addresses = TokenBuckets(cfg.address_rate_per_s, cfg.address_burst)
        self.failures: dict[str, deque[float]] = {}
        self.locked: dict[str, float] = {}  # address -> monotonic end of its lock-out
        self.good: dict[str, float] = {}  # token hash -> last time answered without 401
        self.minutes: dict[tuple[str, int], _Minute] = {}  # failed auth per (address, minute) not yet audited
        self.since = wall()
        self.unauthenticated = 0
        self.rate_limited = 0
        self.locked_refused = 0
        self.lockouts = 0

    # --- before the request
    def lock_left(self, address: str, token_hash: str | None) -> float:
        end = self.locked.get(address)
        if end is None:
            return 0.0
        now = self.mono()
        if now >= end:
            del self.locked[address]
            return 0.0
        if token_hash is not None and token_hash in self.good:
            return 0.0
        return end - now

    # --- after the request
    def failed(self, address: str, path: str) -> bool:
        """A request answered 401; True when this one locks the address out."""
        self.unauthenticated += 1
        minute = int(self.wall() // 60)
        m = self.minutes.get((address, minute))
        if m is None:
            if len(self.minutes) >= MAX_KEYS:  # cannot be written as fast as it fills: keep the count only
                m = _Minute()
            else:
                m = self.minutes[(address, minute)] = _Minute()
        m.count += 1
        if len(m.paths) < 5 and path not in m.paths:
            m.paths.append(path[:200])
        n = self.cfg.lockout_failures
        if n <= 0:
            return False
        now = self.mono()
        q = self.failures.get(address)
        if q is None:
            if len(self.failures) >= MAX_KEYS:
                self._prune_failures(now)
            q = self.failures[address] = deque(maxlen=n)
        q.append(now)
        if len(q) >= n and now - q[0] <= self.cfg.lockout_window_s and address not in self.locked:
            self.locked[address] = now + self.cfg.lockout_s
            self.lockouts += 1
            q.clear()
            return True
        return False

    def succeeded(self, token_hash: str) -> None:
        if token_hash not in self.good and len(self.good) >= MAX_KEYS:
            self.good.clear()
        self.good[token_hash] = self.mono()

    def _prune_failures(self, now: float) -> None:
        for k in [k for k, q in self.failures.items() if not q or now - q[-1] > self.cfg.lockout_window_s]:
            del self.failures[k]

    def due_minutes(self, everything: bool = False) -> list[tuple[str, int, _Minute]]:
        """The (address, minute) failure counts to write now: the closed minutes (all of them at shutdown)."""
        current = int(self.wall() // 60)
        due = [(a, m, v) for (a, m), v in self.minutes.items() if everything or m < current]
        for a, m, _v in due:
            del self.minutes[(a, m)]
        return due

    def snapshot(self) -> dict[str, Any]:
        now, wall = self.mono(), self.wall()
        locked = [{"address": a, "until": round(wall + end - now, 3), "retry_after_s": math.ceil(end - now)}
                  for a, end in sorted(self.locked.items()) if end > now]
        c = self.cfg
        return {"worker": os.getpid(), "since": self.since, "unauthenticated": self.unauthenticated,
                "rate_limited": self.rate_limited, "locked_refused": self.locked_refused, "lockouts": self.lockouts,
                "locked_out": locked[:100],
                "limits": {"rate_per_s": c.rate_per_s, "burst": c.burst, "address_rate_per_s": c.address_rate_per_s,
                           "address_burst": c.address_burst, "lockout_failures": c.lockout_failures,
                           "lockout_window_s": c.lockout_window_s, "lockout_s": c.lockout_s}}


def token_hash(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            if scheme.lower() == b"bearer" and token:
                return hashlib.sha256(token).hexdigest()
            return None
    return None


class AuditFlusher:
    """Writes the limiter's failed-auth counts to the audit trail: one row per address per minute, at the end of
    the minute (and whatever is left when the server stops)."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.handle: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def schedule(self, app: Any) -> None:
        if self.handle is not None:
            return
        delay = 60.0 - self.limiter.wall() % 60 + 0.5
        self.handle = asyncio.get_running_loop().call_later(delay, self._fire, app)

    def _fire(self, app: Any) -> None:
        self.handle = None
        self.spawn(self.flush(app))
        if self.limiter.minutes:
            self.schedule(app)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def flush(self, app: Any, everything: bool = False) -> None:
        due = self.limiter.due_minutes(everything)
        audit = getattr(app.state, "audit", None)
        if not due or audit is None:
            return
        rows = [("anonymous", "auth.failed", address,
                 {"client": address, "count": m.count, "minute": minute * 60, "paths": m.paths})
                for address, minute, m in due]
        try:
            await audit.record_many(rows, client_in_detail=True)
        except Exception:
            log.exception("audit: could not record %d failed-auth rows", len(rows))

    async def lockout(self, app: Any, address: str) -> None:
        audit = getattr(app.state, "audit", None)
        if audit is None:
            return
        c = self.limiter.cfg
        try:
            await audit.record("anonymous", "auth.lockout", address, client=address, status=429,
                               detail={"failures": c.lockout_failures, "window_s": c.lockout_window_s,
                                       "lockout_s": c.lockout_s})
        except Exception:
            log.exception("audit: could not record the lock-out of %s", address)

    async def close(self, app: Any) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.flush(app, everything=True)
