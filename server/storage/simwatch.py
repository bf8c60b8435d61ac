"""What the SIM-change rule reads and remembers (decision 030), on either engine.

* the identity reports any server process stored: the ``events`` that carry an ICCID (inventory, the modem's
  identity, the agent's own ``sim_changed``), by the time they were received (``events_identity``, a partial index
  on ``received_at`` of those three kinds: the read stays small however many other events there are);
* ``sim_known``: per unit, the ICCID the rule last took and the agent's time of that report;
* in ``meta``, how far the rule has read (the newest ``received_at`` it saw).

The rule itself (which report is a change) is the alerts domain's: ``server/alerts/simwatch.py``. These are
functions of a storage rather than a store class of their own: the rule is their only user.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

CURSOR_KEY = "sim_watch_received_to"
_CHUNK = 10_000  # SNs a statement (SQLite's parameter limit is 32,766)


@dataclass(frozen=True)
class IdentityReport:
    sn: str
    ts: int  # the agent's time of the report
    kind: str  # inventory, identity or sim_changed
    iccid: str  # "" when the report has none
    old_iccid: str  # what a sim_changed event says was there before ("" otherwise)
    received_at: float  # when the process that stored it received it (that host's clock)


async def identity_reports(storage: Any, received_after: float) -> list[IdentityReport]:
    """Every stored report carrying an identity received after ``received_after``, by unit, then agent time."""
    rows = await storage._all(
        "SELECT sn, ts, kind, data, received_at FROM events "
        "WHERE kind IN ('inventory', 'identity', 'sim_changed') AND received_at > ? ORDER BY sn, ts, received_at",
        (received_after,))
    out = []
    for sn, ts, kind, data, received_at in rows:
        try:
            d = json.loads(data)
        except ValueError:
            continue  # (ingest stores validated JSON: never seen)
        if not isinstance(d, dict):
            continue
        out.append(IdentityReport(str(sn), int(ts), str(kind), str(d.get("iccid") or ""),
                                  str(d.get("old_iccid") or ""), float(received_at)))
    return out


async def known(storage: Any, sns: Iterable[str]) -> dict[str, tuple[str, int]]:
    """sn -> (ICCID, agent time of its report) the rule last took, for those of ``sns`` it has taken one for."""
    wanted = sorted(set(sns))
    out: dict[str, tuple[str, int]] = {}
    for i in range(0, len(wanted), _CHUNK):
        part = wanted[i:i + _CHUNK]
        rows = await storage._all(f"SELECT sn, iccid, ts FROM sim_known WHERE sn IN ({','.join('?' * len(part))})",
                                  part)
        out.update({str(r[0]): (str(r[1]), int(r[2])) for r in rows})
    return out


async def read_to(storage: Any) -> float | None:
    """The newest ``received_at`` the rule has read (None: it never ran on this database)."""
    rows = await storage._all("SELECT value FROM meta WHERE key=?", (CURSOR_KEY,))
    return float(rows[0][0]) if rows else None


async def remember(storage: Any, taken: dict[str, tuple[str, int]], received_to: float) -> None:
    """Keep what the rule took and how far it read, in the caller's transaction when there is one (the alerts it
    raised from them commit with them, or none does)."""
    async with storage.write() as db:
        if taken:
            await db.executemany(
                "INSERT INTO sim_known(sn, iccid, ts) VALUES (?,?,?) "
                "ON CONFLICT(sn) DO UPDATE SET iccid=excluded.iccid, ts=excluded.ts",
                [(sn, iccid, ts) for sn, (iccid, ts) in sorted(taken.items())])
        await db.execute("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                         (CURSOR_KEY, repr(received_to)))
