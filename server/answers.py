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
    offset takes the short way (``time.gmtime``: a fifth of the time of a zone-aware datetime, which counts on a
    page of 1,000 units with five times each)."""
    if ts is None:
        return None
    if isinstance(ts, float) and not ts.is_integer():
        return datetime.fromtimestamp(round(ts, 3), zone).isoformat(timespec="milliseconds")
    fixed = _fixed_offset(zone)
    if fixed is None or not 946_684_800 <= ts < 4_102_444_800:
        return datetime.fromtimestamp(int(ts), zone).isoformat(timespec="seconds")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(ts) + fixed[0])) + fixed[1]


def timed(value: Any, tz: str | ZoneInfo) -> Any:
    """A copy of ``value`` with every epoch number under a :data:`TIME_KEYS` key (at any depth, not inside the
    :data:`OPAQUE` fields) as ISO 8601 with the offset of ``tz``. What the stores hand out (and may cache) is
    never changed."""
    return _copy(value, tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz))


def _copy(value: Any, zone: ZoneInfo) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in TIME_KEYS and isinstance(v, int | float) and not isinstance(v, bool):
                out[k] = iso(v, zone)
            elif k not in OPAQUE and isinstance(v, dict | list):
                out[k] = _copy(v, zone)
            else:
                out[k] = v
        return out
    if isinstance(value, list):
        return [_copy(v, zone) if isinstance(v, dict | list) else v for v in value]
    return value


def page(items: list[Any], total: int | None, limit: int, offset: int, **extra: Any) -> dict[str, Any]:
    return {**extra, "total": total, "limit": limit, "offset": offset, "items": items}
