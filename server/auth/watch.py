"""Suspicious behaviour alerted (issue 18, the tender: "suspicious behaviour alerted"): besides repeated failed
sign-ins (server/auth/accounts.py) and a token used from a new address (server/auth/__init__.py),

* **mass exports**: one caller exporting more than :data:`EXPORT_ROWS` rows (units or institutions, CSV or
  XLSX) within an hour;
* **commands to many units outside working hours**: one caller sending commands to :data:`NIGHT_UNITS` units or
  more within an hour, outside :data:`WORK_HOURS` on a weekday (or at a weekend), in the fleet's time zone.

Counted in each API process's memory for the last hour (with several API workers a caller's exports spread over
them are counted per process: the figure is a floor). Each raises a ``security`` alert (dashboard, webhooks).
"""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .scope import Principal

EXPORT_ROWS = 5000
NIGHT_UNITS = 50
WORK_HOURS = (8, 19)  # [08:00, 19:00) Monday to Friday
WINDOW_S = 3600.0


class _Window:
    def __init__(self) -> None:
        self.seen: dict[str, deque[tuple[float, int]]] = {}

    def add(self, who: str, n: int, now: float) -> int:
        q = self.seen.setdefault(who, deque())
        q.append((now, n))
        while q and q[0][0] < now - WINDOW_S:
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


async def _count(app: Any, which: int, p: Principal, n: int, now: float | None, limit: int, what: str,
                 message: str) -> bool:
    """Add ``n`` to ``p``'s last hour in window ``which``; a ``security`` alert when this crosses ``limit``."""
    from . import security_alert

    now = time.time() if now is None else now
    total = _windows(app)[which].add(_who(p), n, now)
    if total - n < limit <= total:
        await security_alert(app, f"security:{what}:{_who(p)}", message.format(name=p.name, total=total),
                             {"what": what, "actor": p.name, "count": total})
        return True
    return False


async def exported(app: Any, p: Principal, what: str, rows: int, now: float | None = None) -> bool:
    """Note an export of ``rows`` rows; True when it raised the alert."""
    return await _count(app, 0, p, rows, now, EXPORT_ROWS, "mass_export",
                        "{name} exported {total} rows within an hour (last: " + what.replace("{", "") + ")")


def off_hours(ts: float, tz: str) -> bool:
    t = datetime.fromtimestamp(ts, ZoneInfo(tz))
    return t.weekday() >= 5 or not WORK_HOURS[0] <= t.hour < WORK_HOURS[1]


async def commanded(app: Any, p: Principal, units: int, now: float | None = None) -> bool:
    """Note commands sent to ``units`` units; True when it raised the alert (outside working hours only)."""
    now = time.time() if now is None else now
    if not off_hours(now, app.state.settings.timezone):
        return False
    return await _count(app, 1, p, units, now, NIGHT_UNITS, "night_commands",
                        "{name} sent commands to {total} units within an hour outside working hours")
