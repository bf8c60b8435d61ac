"""The alerts' store: open, refresh, close and reopen alerts by key, acknowledge, list, and the webhook queue.

One domain store of the storage (issue 15's split of ``sqlite.py``): its queries run on whichever engine the
storage has (``engine.py``, ``postgres.py``), in the SQL both backends run. ``SqlStore`` inherits it, so the old
method names on the storage stay where callers expect them.
"""

from __future__ import annotations

import json
from typing import Any

from .accounts import Within, places_sql, units_within_sql


class AlertStore:
    async def raise_alert(self, key: str, kind: str, sn: str | None, county: str | None, ts: int, message: str,
                          data: dict[str, Any], webhook: bool) -> bool:
        """Open an alert (or refresh the open one with this key). Returns True when newly opened."""
        payload = json.dumps(data, ensure_ascii=False)
        async with self.write() as db:
            row = await (await db.execute("SELECT id, closed_ts FROM alerts WHERE key=?", (key,))).fetchone()
            if row is not None and row[1] is None:
                await db.execute("UPDATE alerts SET last_ts=?, message=?, data=? WHERE id=?", (ts, message, payload, row[0]))
                return False
            if row is not None:  # closed before: reopen as a new occurrence, keeping its id
                await db.execute(
                    "UPDATE alerts SET opened_ts=?, last_ts=?, closed_ts=NULL, message=?, data=?, acked_by=NULL, acked_ts=NULL, "
                    "webhook=?, webhook_attempts=0 WHERE id=?", (ts, ts, message, payload, "pending" if webhook else "none", row[0]))
            else:
                await db.execute(
                    "INSERT INTO alerts(key, kind, sn, county, opened_ts, last_ts, message, data, webhook) VALUES (?,?,?,?,?,?,?,?,?)",
                    (key, kind, sn, county, ts, ts, message, payload, "pending" if webhook else "none"))
        return True

    async def close_alerts(self, kind: str, keep_keys: set[str], ts: int) -> int:
        async with self.write() as db:
            cur = await db.execute("SELECT key FROM alerts WHERE kind=? AND closed_ts IS NULL", (kind,))
            gone = [r[0] for r in await cur.fetchall() if r[0] not in keep_keys]
            await db.executemany("UPDATE alerts SET closed_ts=? WHERE key=?", [(ts, k) for k in gone])
        return len(gone)

    async def list_alerts(self, open_only: bool = True, kind: str | None = None, sn: str | None = None,
                          limit: int = 100, offset: int = 0, within: Within = None) -> tuple[int, list[dict[str, Any]]]:
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

    async def get_alert(self, alert_id: int) -> dict[str, Any] | None:
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

    async def pending_webhooks(self, limit: int = 50) -> list[dict[str, Any]]:
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
