"""The audit trail, in its own table (created by storage's migrations: ``server/storage/schema.py``).

Append-only is enforced by the database itself: triggers abort any UPDATE or DELETE, so a
bug (or a hurried operator with the API) cannot rewrite history. Request bodies are never
recorded (they can carry personal data); commands are recorded by type, targets and
parameter names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ..storage.accounts import audit_within_sql

log = logging.getLogger(__name__)

MAX_DETAIL = 4096


class Audit:
    def __init__(self, storage: Any, now: Callable[[], float]) -> None:
        self.storage = storage
        self.now = now

    async def record(self, actor: str, action: str, target: str = "", *, role: str = "", client: str = "",
                     status: int | None = None, detail: dict[str, Any] | None = None) -> None:
        """One audit row, in its own transaction, or in the caller's when called inside ``storage.write()``."""
        text = json.dumps(detail or {}, ensure_ascii=False, default=str, separators=(",", ":"))
        if len(text) > MAX_DETAIL:
            text = json.dumps({"truncated": text[:MAX_DETAIL]}, ensure_ascii=False)
        async with self.storage.write() as db:
            await db.execute(
                "INSERT INTO audit(ts, actor, role, client, action, target, status, detail) VALUES (?,?,?,?,?,?,?,?)",
                (self.now(), actor, role, client, action, target[:512], status, text))

    async def record_many(self, rows: list[tuple[str, str, str, dict[str, Any]]],
                          client_in_detail: bool = False) -> None:
        """(actor, action, target, detail) rows in one commit (state changes of many commands); with
        ``client_in_detail`` each row's ``detail["client"]`` fills the client column (failed sign-ins by address)."""
        if not rows:
            return
        now = self.now()
        async with self.storage.write() as db:
            await db.executemany(
                "INSERT INTO audit(ts, actor, action, target, client, detail) VALUES (?,?,?,?,?,?)",
                [(now, a, act, t[:512], str(d.get("client", ""))[:100] if client_in_detail else "",
                  json.dumps(d, ensure_ascii=False, default=str, separators=(",", ":")))
                 for a, act, t, d in rows])

    async def query(self, *, actor: str | None = None, action: str | None = None, target: str | None = None,
                    client: str | None = None, since: float | None = None, until: float | None = None,
                    before_id: int | None = None, limit: int = 100, offset: int = 0, within: Any = None
                    ) -> list[dict[str, Any]]:
        """``within``: a scoped caller's ``Scope.within()``, the rows about its units only (decision 031)."""
        clause, args = self._where(actor, action, target, client, since, until, before_id, within)
        async with self.storage.reader() as db:
            cur = await db.execute(
                f"SELECT id, ts, actor, role, client, action, target, status, detail FROM audit {clause} "
                "ORDER BY id DESC LIMIT ? OFFSET ?", [*args, limit, offset])
            rows = await cur.fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["detail"] = json.loads(d["detail"]) if d["detail"] else {}
            out.append(d)
        return out

    async def count(self, *, actor: str | None = None, action: str | None = None, target: str | None = None,
                    client: str | None = None, since: float | None = None, until: float | None = None,
                    within: Any = None) -> int:
        """Rows :meth:`query` would page through with these filters."""
        clause, args = self._where(actor, action, target, client, since, until, None, within)
        async with self.storage.reader() as db:
            cur = await db.execute(f"SELECT count(*) FROM audit {clause}", args)
            row = await cur.fetchone()
        return int(row[0])

    @staticmethod
    def _where(actor: str | None, action: str | None, target: str | None, client: str | None, since: float | None,
               until: float | None, before_id: int | None, within: Any = None) -> tuple[str, list[Any]]:
        where, args = [], []
        if within is not None:  # the one scope filter, storage's (server/storage/accounts.py)
            cond, cargs = audit_within_sql(within)
            where.append(cond)
            args += cargs
        for col, value in (("actor", actor), ("client", client), ("target", target)):
            if value:
                where.append(f"{col} = ?")
                args.append(value)
        if action:
            if action.endswith("*"):
                where.append("action LIKE ?")
                args.append(action[:-1].replace("%", "") + "%")
            else:
                where.append("action = ?")
                args.append(action)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if until is not None:
            where.append("ts < ?")
            args.append(until)
        if before_id is not None:
            where.append("id < ?")
            args.append(before_id)
        return (f"WHERE {' AND '.join(where)}" if where else ""), args
