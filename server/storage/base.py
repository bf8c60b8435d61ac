"""The storage interface the rest of the server is written against.

A PostgreSQL backend implements the same methods; nothing outside storage/ knows SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class SampleRow:
    sn: str
    epoch: int
    seq: int
    ts: int
    interval: int
    clock: int
    connected: bool
    rtt_ms: int | None
    checks: dict[str, list[Any]]  # name -> [state, reason]
    body: dict[str, Any]
    received_at: float


@dataclass(frozen=True)
class EventRow:
    sn: str
    epoch: int
    seq: int
    ts: int
    kind: str
    data: dict[str, Any]
    received_at: float


@dataclass
class UnitQuery:
    q: str = ""
    online: bool | None = None
    sort: str = "sn"
    descending: bool = False
    limit: int = 50
    offset: int = 0
    sns: list[str] = field(default_factory=list)


class Storage(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # ingest: one call = one transaction; duplicates (same sn, epoch, seq) are ignored
    async def store_telemetry(self, samples: list[SampleRow], events: list[EventRow]) -> int: ...
    async def set_state(self, sn: str, online: bool, ts: float, reason: str, version: str) -> None: ...

    # registry
    async def list_units(self, query: UnitQuery) -> tuple[int, list[dict[str, Any]]]: ...
    async def get_unit(self, sn: str) -> dict[str, Any] | None: ...
    async def recent_samples(self, sn: str, limit: int, before: int | None = None) -> list[dict[str, Any]]: ...
    async def samples_between(self, sns: list[str] | None, start: int, end: int) -> list[SampleRow]: ...
    async def count_samples(self) -> int: ...
    async def purge_samples(self, before_ts: int) -> int: ...

    # tokens
    async def add_token(self, name: str, role: str, token_hash: str, created: float) -> None: ...
    async def find_token(self, token_hash: str) -> dict[str, Any] | None: ...
