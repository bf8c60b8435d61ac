"""What every answer of the API looks like (issue 14; docs/api.md, decision 021).

* **Times** are ISO 8601 strings with the offset of the fleet's time zone, whole seconds
  (``2026-12-06T23:07:08+08:00``; milliseconds where the server keeps fractions: command timings), whatever
  the field is called (``ts``, ``opened_ts``, ``last_seen``...):
  :func:`timed` turns the epoch seconds the stores keep into that, for the fields named in :data:`TIME_KEYS`,
  leaving what terminals or people wrote (``data``, ``params``, ``detail``, ``output``) as it was.
  Durations are numbers with their unit in the name (``uptime_s``, ``latency_ms``).
* **Lists** are pages: ``{"total", "limit", "offset", "items"}`` (:class:`Page`), asked for with ``limit`` and
  ``offset``; ``total`` counts every item the filters match (``null`` where counting would mean reading a
  unit's whole history: its samples and events).
* **Errors** are :class:`server.auth.openapi.ErrorBody` (``{"detail", "errors": [{"field", "error"}]}``).
"""

from __future__ import annotations

import functools
import math
import time
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

TIME_KEYS = frozenset({
    "ts", "first_seen", "last_seen", "latest_ts", "received_at", "updated", "registered_at", "first_report",
    "last_report", "from_ts", "last_recount_at", "rolled_to", "now", "since", "until", "last_commit", "opened_ts",
    "closed_ts", "acked_ts", "last_ts", "created", "issued", "expires", "sent", "delivered", "started", "finished", "boot_time",
    "reached_ts", "reported_ts", "counted_to", "last_login", "last_used", "locked_until", "made", "revoked_at",
})
OPAQUE = frozenset({"data", "params", "detail", "output", "identity", "inventory", "body"})  # kept as written

# an answer's time, as the published schema says it
Time = Annotated[str, Field(json_schema_extra={"format": "date-time"},
                            description="ISO 8601 with the fleet's offset, e.g. 2026-12-06T23:07:08+08:00")]
T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list: ``limit`` items from ``offset`` of ``total``."""

    model_config = ConfigDict(extra="allow")
    total: int | None = Field(description="items the filters match (null: not counted)")
    limit: int
    offset: int
    items: list[T]


@functools.lru_cache(maxsize=16)
def _fixed_offset(zone: ZoneInfo) -> tuple[int, str] | None:
    """(seconds, "+08:00") when ``zone`` keeps one offset all year in 2000..2099 (Asia/Shanghai does), else None."""
    offsets = {datetime(y, m, 1, 12, tzinfo=zone).utcoffset() for y in range(2000, 2100, 3) for m in (1, 4, 7, 10)}
    if len(offsets) != 1:
        return None
    off = next(iter(offsets))
    if off is None:
        return None
    sec = int(off.total_seconds())
    return sec, f"{'+' if sec >= 0 else '-'}{abs(sec) // 3600:02d}:{abs(sec) % 3600 // 60:02d}"


def iso(ts: float | None, zone: ZoneInfo) -> str | None:
    """Whole seconds; milliseconds where the server keeps fractions (command and job timings). A zone with one
    offset takes the short way: the day's text kept (:func:`_day`) and the time of day by arithmetic, a tenth of
    the time of a zone-aware datetime, which counts on a page of 1,000 units with five times each."""
    if ts is None:
        return None
    return _iso(ts, zone, _fixed_offset(zone))


@functools.lru_cache(maxsize=4096)
def _day(days: int) -> str:
    """``YYYY-MM-DDT`` of a day counted from 1970-01-01."""
    return time.strftime("%Y-%m-%dT", time.gmtime(days * 86400))


def _iso(ts: float, zone: ZoneInfo, fixed: tuple[int, str] | None) -> str:
    fraction = isinstance(ts, float) and not ts.is_integer()
    if fixed is None or not 946_684_800 <= ts < 4_102_444_800:
        if fraction:
            return datetime.fromtimestamp(round(ts, 3), zone).isoformat(timespec="milliseconds")
        return datetime.fromtimestamp(int(ts), zone).isoformat(timespec="seconds")
    if fraction:  # as datetime.fromtimestamp rounds: the fraction's microseconds half to even, then milliseconds cut
        # (a fraction of round(ts, 3) is within a float's step of k/1000, k < 1000: it never rounds up to a second)
        part, whole = math.modf(round(ts, 3))
        seconds, ms = int(whole), f".{round(part * 1e6) // 1000:03d}"
    else:
        seconds, ms = int(ts), ""
    days, sec = divmod(seconds + fixed[0], 86400)
    hours, sec = divmod(sec, 3600)
    minutes, sec = divmod(sec, 60)
    return f"{_day(days)}{hours:02d}:{minutes:02d}:{sec:02d}{ms}{fixed[1]}"


def timed(value: Any, tz: str | ZoneInfo) -> Any:
    """A copy of ``value`` with every epoch number under a :data:`TIME_KEYS` key (at any depth, not inside the
    :data:`OPAQUE` fields) as ISO 8601 with the offset of ``tz``. What the stores hand out (and may cache) is
    never changed."""
    return _Timed(tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)).copy(value)


def timer(tz: str | ZoneInfo) -> _Timed:
    """What :func:`timed` copies with, for a caller that copies many items itself (``.mapping(item)``, ``.copy``):
    a page of units converts each unit once as it builds it, not again in a walk over the page."""
    return _Timed(tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz))


class _Timed:
    """One answer's copy: the zone's fixed offset looked up once, types tested by identity (a page of 1,000 units
    is some 25,000 keys; this walk was a fifth of a unit list's CPU)."""

    __slots__ = ("zone", "fixed", "memo")

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self.fixed = _fixed_offset(zone)
        self.memo: dict[float, str] = {}  # a unit's first and last report are its first and last seen again

    def copy(self, value: Any) -> Any:
        if isinstance(value, dict):
            return self.mapping(value)
        if isinstance(value, list):
            return self.sequence(value)
        return value

    def sequence(self, value: list[Any]) -> list[Any]:
        copy = self.copy
        return [copy(v) if isinstance(v, dict | list) else v for v in value]

    def mapping(self, value: dict[Any, Any]) -> dict[Any, Any]:
        out = {}
        zone, fixed, copy, memo = self.zone, self.fixed, self.copy, self.memo
        for k, v in value.items():
            kind = type(v)
            if kind is str or v is None or kind is bool:  # most values: kept as they are, bools never times
                out[k] = v
            elif k in TIME_KEYS and isinstance(v, int | float):
                text = memo.get(v)
                if text is None:
                    text = memo[v] = _iso(v, zone, fixed)
                out[k] = text
            elif k not in OPAQUE and isinstance(v, dict | list):
                out[k] = copy(v)
            else:
                out[k] = v
        return out


def page(items: list[Any], total: int | None, limit: int, offset: int, **extra: Any) -> dict[str, Any]:
    return {**extra, "total": total, "limit": limit, "offset": offset, "items": items}
