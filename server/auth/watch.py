"""Suspicious behaviour alerted (issue 18, the tender: "suspicious behaviour alerted"): besides repeated failed
sign-ins (server/auth/accounts.py) and a token used from a new address (server/auth/__init__.py),

* **mass exports**: one caller exporting more than ``[security] export_rows`` rows (units or institutions, CSV or
  XLSX) within ``window_minutes``;
* **commands to many units outside working hours**: one caller sending commands to ``night_command_units`` units
  or more within ``window_minutes``, outside ``working_hours`` (fleet time zone; the weekend by default).

The thresholds are settings (``server/settings.py``, ``SecuritySettings``), read at each count. Counted in each API
process's memory for the last window (with several API workers a caller's exports spread over them are counted
per process: the figure is a floor). Each raises a ``security`` alert (dashboard, webhooks).
"""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime
from typing import Any

from counting.hours import ServiceHours

from .scope import Principal


class _Window:
    def __init__(self) -> None:
        self.seen: dict[str, deque[tuple[float, int]]] = {}

    def add(self, who: str, n: int, now: float, window_s: float) -> int:
        q = self.seen.setdefault(who, deque())
        q.append((now, n))
        while q and q[0][0] < now - window_s:
            q.popleft()
        if len(self.seen) > 10_000:
            self.seen = {who: q}
        return sum(k for _, k in q)


def _windows(app: Any) -> tuple[_Window, _Window]:
    w = getattr(app.state, "watch_windows", None)
    if w is None:
        w = app.state.watch_windows = (_Window(), _Window())
    return w  # type: ignore[no-any-return]


def _who(p: Principal) -> str:
    return f"{p.via}:{p.name}"


def _within(minutes: int) -> str:
    return "within an hour" if minutes == 60 else f"within {minutes} minutes"


async def _count(app: Any, which: int, p: Principal, n: int, now: float | None, limit: int, what: str,
                 message: str) -> bool:
    """Add ``n`` to ``p``'s last window in window ``which``; a ``security`` alert when this crosses ``limit``
    (0: never)."""
    from . import security_alert

    now = time.time() if now is None else now
    minutes = app.state.settings.security.window_minutes
    total = _windows(app)[which].add(_who(p), n, now, minutes * 60.0)
    if limit and total - n < limit <= total:
        await security_alert(app, f"security:{what}:{_who(p)}",
                             message.format(name=p.name, total=total, within=_within(minutes)),
                             {"what": what, "actor": p.name, "count": total})
        return True
    return False


async def exported(app: Any, p: Principal, what: str, rows: int, now: float | None = None) -> bool:
    """Note an export of ``rows`` rows; True when it raised the alert."""
    limit = app.state.settings.security.export_rows
    # more than export_rows: the alert fires on reaching export_rows + 1
    return await _count(app, 0, p, rows, now, limit + 1 if limit else 0, "mass_export",
                        "{name} exported {total} rows {within} (last: " + what.replace("{", "") + ")")


_HOURS: dict[tuple[str, str], ServiceHours] = {}


def working(settings: Any) -> ServiceHours:
    """``[security] working_hours`` in the fleet's zone (parsed once per value)."""
    wh = settings.security.working_hours
    key = (repr(sorted(wh.items())) if isinstance(wh, dict) else wh, settings.timezone)
    got = _HOURS.get(key)
    if got is None:
        got = _HOURS[key] = ServiceHours.parse(wh, settings.timezone)
    return got


def off_hours(ts: float, settings: Any) -> bool:
    """Whether ``ts`` lies outside ``[security] working_hours``."""
    hours = working(settings)
    return not hours.contains(datetime.fromtimestamp(ts, hours.tz))


async def commanded(app: Any, p: Principal, units: int, now: float | None = None) -> bool:
    """Note commands sent to ``units`` units; True when it raised the alert (outside working hours only)."""
    now = time.time() if now is None else now
    settings = app.state.settings
    if not off_hours(now, settings):
        return False
    return await _count(app, 1, p, units, now, settings.security.night_command_units, "night_commands",
                        "{name} sent commands to {total} units {within} outside working hours")
