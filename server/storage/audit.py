"""The audit trail's store: append rows, and read them back filtered, newest first.

One domain store of the storage (issue 15's split), on whichever engine the storage has, in the SQL both backends
run; ``SqlStore`` inherits it. The table is append-only in the database itself (SQLite triggers, a PostgreSQL
trigger function: ``schema.py``): nothing here, nor anyone with the API, can change or delete a row. What goes into a
row (its time, the bounds of its target and detail, that request bodies never do) is the audit domain's
(``server/audit/store.py``).

Rows as in ``commands.py``: handed out as a ``TypedDict`` (``detail`` decoded), handed in as a frozen dataclass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TypedDict

from .accounts import InScope, Within, audit_within_sql

_AUDIT_LOOKUP_COST = 4  # one target looked up in audit_target costs about this many rows walked and tested
AUDIT_COLUMNS = ("id", "ts", "actor", "role", "client", "action", "target", "status", "detail")


class AuditRow(TypedDict):
    id: int
    ts: float
    actor: str
    role: str
    client: str
    action: str
    target: str
    status: int | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class AuditEntry:
    """A row to append (its ``detail`` stored as compact JSON)."""

    ts: float
    actor: str
    action: str
    target: str = ""
    role: str = ""
    client: str = ""
    status: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditQuery:
    """Which rows: each filter set must match (``action_prefix``: actions starting with it; ``since`` inclusive,
    ``until`` and ``before_id`` exclusive; ``within``: a scoped caller's rows, ``audit_within_sql``)."""

    actor: str | None = None
    action: str | None = None
    action_prefix: str | None = None
    target: str | None = None
    client: str | None = None
    since: float | None = None
    until: float | None = None
    before_id: int | None = None
    within: Within = None


def _detail(d: dict[str, Any]) -> str:
    return json.dumps(d, ensure_ascii=False, default=str, separators=(",", ":"))


def _where(q: AuditQuery, in_scope: InScope | None = None) -> tuple[str, list[Any]]:
    where, args = [], []
    if q.within is not None:  # the one scope filter (server/storage/accounts.py)
        cond, cargs = audit_within_sql(q.within, in_scope=in_scope)
        where.append(cond)
        args += cargs
    for col, value in (("actor", q.actor), ("client", q.client), ("target", q.target), ("action", q.action)):
        if value:
            where.append(f"{col} = ?")
            args.append(value)
    if q.action_prefix is not None:
        where.append("action LIKE ?")
        args.append(q.action_prefix.replace("%", "") + "%")
    for cond, value in (("ts >= ?", q.since), ("ts < ?", q.until), ("id < ?", q.before_id)):
        if value is not None:
            where.append(cond)
            args.append(value)
    return (f"WHERE {' AND '.join(where)}" if where else ""), args


class AuditStore:
    async def add_audit(self, rows: list[AuditEntry]) -> None:
        """Append ``rows`` in one transaction (the caller's, when called inside ``storage.write()``)."""
        if not rows:
            return
        async with self.write() as db:  # type: ignore[attr-defined]
            await db.executemany(
                "INSERT INTO audit(ts, actor, role, client, action, target, status, detail) VALUES (?,?,?,?,?,?,?,?)",
                [(r.ts, r.actor, r.role, r.client, r.action, r.target, r.status, _detail(r.detail)) for r in rows])

    audit_lookup: bool | None = None  # a scope's rows: None chooses (_audit_where); the tests take each way

    async def _audit_where(self, q: AuditQuery) -> tuple[str, list[Any]]:
        """``_where`` with a scope's registered SNs as one set: the scope's kept SNs (decision 034's
        ``_kept_units``, checked against the registry's stamp at every call) instead of the registry and
        institutions subquery (decision 036). The same rows: that subquery's SNs are the kept list's
        (``kept_lists = False``: the subquery, as the tests compare). Looked up in ``audit_target`` when the trail
        holds more rows than ``_AUDIT_LOOKUP_COST`` per SN (SQLite; ``max(id)``, one index read, for its length),
        else the trail is walked and each row tested (a new install's: a few rows against 1,780 lookups)."""
        if q.within is None or not self.kept_lists:  # type: ignore[attr-defined]
            return _where(q)
        sns = await self._kept_units(q.within, registered=True)  # type: ignore[attr-defined]
        lookup = self.audit_lookup
        if lookup is None:
            last = (await self._quick("SELECT max(id) FROM audit"))[0][0]  # type: ignore[attr-defined]
            lookup = (last or 0) > _AUDIT_LOOKUP_COST * len(sns)
        cond, args = self.in_set_sql("@col@", sns, lookup=lookup)  # type: ignore[attr-defined]  # one JSON text
        return _where(q, lambda col: (cond.replace("@col@", col), args))

    async def audit_rows(self, q: AuditQuery, limit: int = 100, offset: int = 0) -> list[AuditRow]:
        """The rows ``q`` selects, newest first."""
        clause, args = await self._audit_where(q)
        rows = await self._all(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit {clause} "  # type: ignore[attr-defined]
                               "ORDER BY id DESC LIMIT ? OFFSET ?", [*args, limit, offset])
        out = []
        for r in rows:
            d = dict(zip(AUDIT_COLUMNS, r, strict=True))
            d["detail"] = json.loads(d["detail"]) if d["detail"] else {}
            out.append(d)
        return out  # type: ignore[return-value]

    async def count_audit(self, q: AuditQuery) -> int:
        """How many rows :meth:`audit_rows` pages through."""
        clause, args = await self._audit_where(q)
        return int((await self._all(f"SELECT count(*) FROM audit {clause}", args))[0][0])  # type: ignore[attr-defined]
