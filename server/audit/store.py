"""The audit trail: who did what, when, from where. Its rows are kept by storage's audit store
(``server/storage/audit.py``), append-only in the database itself: triggers refuse any change or removal, so a bug (or
a hurried operator with the API) cannot rewrite history.

What goes into a row is decided here: the time it is recorded, its target and detail bounded (a detail longer than
:data:`MAX_DETAIL` is kept truncated, as text), request bodies never (they can carry personal data); commands are
recorded by type, targets and parameter names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ..storage.audit import AuditEntry, AuditQuery, AuditRow

log = logging.getLogger(__name__)

MAX_DETAIL = 4096
MAX_TARGET = 512
MAX_CLIENT = 100


def _bounded(detail: dict[str, Any] | None) -> dict[str, Any]:
    text = json.dumps(detail or {}, ensure_ascii=False, default=str, separators=(",", ":"))
    return {"truncated": text[:MAX_DETAIL]} if len(text) > MAX_DETAIL else (detail or {})


class Audit:
    def __init__(self, storage: Any, now: Callable[[], float]) -> None:
        self.storage = storage
        self.now = now

    async def record(self, actor: str, action: str, target: str = "", *, role: str = "", client: str = "",
                     status: int | None = None, detail: dict[str, Any] | None = None) -> None:
        """One audit row, in its own transaction, or in the caller's when called inside ``storage.write()``."""
        await self.storage.add_audit([AuditEntry(self.now(), actor, action, target[:MAX_TARGET], role=role,
                                                 client=client, status=status, detail=_bounded(detail))])

    async def record_many(self, rows: list[tuple[str, str, str, dict[str, Any]]],
                          client_in_detail: bool = False) -> None:
        """(actor, action, target, detail) rows in one commit (state changes of many commands); with
        ``client_in_detail`` each row's ``detail["client"]`` fills the client column (failed sign-ins by address)."""
        if not rows:
            return
        now = self.now()
        await self.storage.add_audit([
            AuditEntry(now, a, act, t[:MAX_TARGET], client=str(d.get("client", ""))[:MAX_CLIENT] if client_in_detail
                       else "", detail=d) for a, act, t, d in rows])

    async def query(self, *, actor: str | None = None, action: str | None = None, target: str | None = None,
                    client: str | None = None, since: float | None = None, until: float | None = None,
                    before_id: int | None = None, limit: int = 100, offset: int = 0, within: Any = None
                    ) -> list[AuditRow]:
        """Newest first; ``action``: exact, or a prefix ending in ``*``; ``within``: a scoped caller's
        ``Scope.within()``, the rows about its units only (decision 031)."""
        q = self._query(actor, action, target, client, since, until, before_id, within)
        return await self.storage.audit_rows(q, limit, offset)  # type: ignore[no-any-return]

    async def count(self, *, actor: str | None = None, action: str | None = None, target: str | None = None,
                    client: str | None = None, since: float | None = None, until: float | None = None,
                    within: Any = None) -> int:
        """Rows :meth:`query` would page through with these filters."""
        return int(await self.storage.count_audit(self._query(actor, action, target, client, since, until, None,
                                                              within)))

    @staticmethod
    def _query(actor: str | None, action: str | None, target: str | None, client: str | None, since: float | None,
               until: float | None, before_id: int | None, within: Any) -> AuditQuery:
        prefix = action[:-1] if action and action.endswith("*") else None
        return AuditQuery(actor=actor or None, action=None if prefix is not None else action or None,
                          action_prefix=prefix, target=target or None, client=client or None, since=since,
                          until=until, before_id=before_id, within=within)
