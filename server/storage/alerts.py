"""The alerts' store: open, refresh, close and reopen alerts by key, acknowledge, list, and the webhook queue.

One domain store of the storage (issue 15's split of ``sqlite.py``): its queries run on whichever engine the
storage has (``engine.py``, ``postgres.py``), in the SQL both backends run. ``SqlStore`` inherits it, so the old
method names on the storage stay where callers expect them.

Whether a raised alert opens, refreshes the open one or reopens a closed one is the alerts domain's rule
(``server/alerts/lifecycle.py``): :meth:`AlertStore.apply_alert` reads the key's state, asks the rule, and does
what it answers, in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from .accounts import Within, places_sql, units_within_sql

AlertAction = Literal["open", "refresh", "reopen"]


@dataclass(frozen=True)
class AlertState:
    """What is stored of an alert's key when it is raised again."""
    id: int
    opened_ts: int
    closed_ts: int | None  # None: open
    acked: bool


@dataclass(frozen=True)
class RaisedAlert:
    """A condition an alert rule found standing at ``ts``."""
    key: str  # one alert per standing condition
    kind: str
    sn: str | None
    county: str | None
    ts: int
    message: str
    data: dict[str, Any]
    webhook: bool  # queue it for the webhook when it opens


class AlertRow(TypedDict):
    id: int
    key: str
    kind: str
    sn: str | None
    county: str | None
    opened_ts: int
    last_ts: int
    closed_ts: int | None
    message: str
    data: dict[str, Any]
    acked_by: str | None
    acked_ts: float | None
    webhook: str  # "none", "pending", "sent", "failed"
    webhook_attempts: int


class AlertStore:
    async def apply_alert(self, alert: RaisedAlert, rule: Callable[[AlertState | None], AlertAction]) -> AlertAction:
        """Raise ``alert``, in one transaction: ``rule`` is told what is stored of its key (None: nothing) and
        answers what to do, which is done and returned. ``"open"``: a new alert; ``"refresh"``: the open one
        keeps its id, opening time, acknowledgement and webhook state, and takes the new time, message and data;
        ``"reopen"``: a new occurrence keeping the id (opened now, not acknowledged, queued for the webhook if
        ``alert.webhook``)."""
        payload = json.dumps(alert.data, ensure_ascii=False)
        webhook = "pending" if alert.webhook else "none"
        async with self.write() as db:
            row = await (await db.execute("SELECT id, opened_ts, closed_ts, acked_by FROM alerts WHERE key=?",
                                          (alert.key,))).fetchone()
            action = rule(None if row is None else AlertState(int(row[0]), int(row[1]), row[2], row[3] is not None))
            if row is None and action != "open":
                raise ValueError(f"alert {alert.key!r}: nothing stored to {action}")
            if action == "refresh":
                await db.execute("UPDATE alerts SET last_ts=?, message=?, data=? WHERE id=?",
                                 (alert.ts, alert.message, payload, row[0]))
            elif action == "reopen":
                await db.execute(
                    "UPDATE alerts SET opened_ts=?, last_ts=?, closed_ts=NULL, message=?, data=?, acked_by=NULL, acked_ts=NULL, "
                    "webhook=?, webhook_attempts=0 WHERE id=?", (alert.ts, alert.ts, alert.message, payload, webhook, row[0]))
            elif action == "open" and row is None:
                await db.execute(
                    "INSERT INTO alerts(key, kind, sn, county, opened_ts, last_ts, message, data, webhook) VALUES (?,?,?,?,?,?,?,?,?)",
                    (alert.key, alert.kind, alert.sn, alert.county, alert.ts, alert.ts, alert.message, payload, webhook))
            else:
                raise ValueError(f"alert {alert.key!r}: {action!r} is not an action for what is stored")
        return action

    async def close_alerts(self, kind: str, keep_keys: set[str], ts: int) -> int:
        async with self.write() as db:
            cur = await db.execute("SELECT key FROM alerts WHERE kind=? AND closed_ts IS NULL", (kind,))
            gone = [r[0] for r in await cur.fetchall() if r[0] not in keep_keys]
            await db.executemany("UPDATE alerts SET closed_ts=? WHERE key=?", [(ts, k) for k in gone])
        return len(gone)

    async def list_alerts(self, open_only: bool = True, kind: str | None = None, sn: str | None = None,
                          limit: int = 100, offset: int = 0, within: Within = None) -> tuple[int, list[AlertRow]]:
        """``within``: a scoped caller's alerts: of its units, or of its counties (an alert of no unit and no
        county, the server's own, is the province's)."""
        where, args = [], []
        if within is not None:
            units, more = units_within_sql(within)
            places, more2 = places_sql(within)
            where.append(f"({units} OR county IN (SELECT county FROM institutions WHERE {places}))")
            args += more + more2
        if open_only:
            where.append("closed_ts IS NULL")
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if sn:
            where.append("sn = ?")
            args.append(sn)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        total = (await self._one(f"SELECT count(*) FROM alerts {clause}", args))[0]
        rows = await self._all(f"SELECT * FROM alerts {clause} ORDER BY last_ts DESC, id DESC LIMIT ? OFFSET ?",
                               [*args, limit, offset])
        out = []
        for r in rows:
            d = dict(r)
            d["data"] = json.loads(d["data"])
            out.append(d)
        return int(total), out

    async def ack_alert(self, alert_id: int, by: str, ts: float) -> bool:
        async with self.write() as db:
            cur = await db.execute("UPDATE alerts SET acked_by=?, acked_ts=? WHERE id=?", (by, ts, alert_id))
        return bool(cur.rowcount)

    async def get_alert(self, alert_id: int) -> AlertRow | None:
        row = await self._one("SELECT * FROM alerts WHERE id=?", (alert_id,))
        if row is None:
            return None
        d = dict(row)
        d["data"] = json.loads(d["data"])
        return d

    async def close_alert(self, alert_id: int, ts: int) -> bool | None:
        """Close an open alert by hand: True; already closed: False; no such alert: None."""
        async with self.write() as db:
            cur = await db.execute("UPDATE alerts SET closed_ts=? WHERE id=? AND closed_ts IS NULL", (ts, alert_id))
            if cur.rowcount:
                return True
            row = await (await db.execute("SELECT 1 FROM alerts WHERE id=?", (alert_id,))).fetchone()
        return None if row is None else False

    async def pending_webhooks(self, limit: int = 50) -> list[AlertRow]:
        rows = await self._all("SELECT * FROM alerts WHERE webhook='pending' ORDER BY id LIMIT ?", (limit,))
        out = []
        for r in rows:
            d = dict(r)
            d["data"] = json.loads(d["data"])
            out.append(d)
        return out

    async def mark_webhook(self, alert_id: int, state: str, attempts: int) -> None:
        async with self.write() as db:
            await db.execute("UPDATE alerts SET webhook=?, webhook_attempts=? WHERE id=?", (state, attempts, alert_id))
