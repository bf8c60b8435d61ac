"""Every API write (POST/PUT/PATCH/DELETE under /api/) goes into the audit trail with who, from
where and the response status, whether it succeeded or was refused. Bodies are not recorded.

Requests refused 401 (no token, an unknown or revoked one) are not written one by one: anyone can send them, and
each row would cost the append-only table ~500 bytes for good. The API guard counts them and writes one
``auth.failed`` row per client address per minute (server/auth/limits.py)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuditMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in WRITES or not scope.get("path", "").startswith("/api/"):
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            code = status[0] if status else 500
            # 401: counted by the API guard and audited per address per minute (server/auth/limits.py); sign-in
            # and sign-out write their own rows with the result (server/auth/accounts.py)
            if code != 401 and scope.get("path", "").rstrip("/") != "/api/v1/session":
                await self._record(scope, code)

    async def _record(self, scope: dict[str, Any], status: int) -> None:
        app = scope.get("app")
        audit = getattr(getattr(app, "state", None), "audit", None)
        if audit is None:
            return
        who = (scope.get("state") or {}).get("principal")  # set by server.auth.principal
        actor, role = (who.name, who.role) if who is not None else ("anonymous", "")
        client = scope.get("client")
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            await audit.record(actor, f"api.{scope['method'].lower()}", scope["path"], role=role,
                               client=client[0] if client else "", status=status,
                               detail={"query": query[:500]} if query else None)
        except Exception:
            log.exception("audit: could not record %s %s", scope["method"], scope["path"])
