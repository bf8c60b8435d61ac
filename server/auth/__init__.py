"""Who is asking: bearer tokens (scripts) and the dashboard's signed-in users (issue 18), each a
:class:`~server.auth.scope.Principal` with a role (admin, engineer, viewer, auditor) and a scope; tokens and
sessions stored hashed. Path parameters outside the caller's scope answer 404 here, for every route
(:func:`server.auth.scope.check_path`)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..alerts.lifecycle import raise_alert
from ..storage import Storage
from ..tasks import beside
from .scope import COOKIE, ROLES, Principal, Scope, check_path, in_scope  # noqa: F401  (re-exported)
from .scope import RANK as _RANK

log = logging.getLogger(__name__)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(storage: Storage, name: str, role: str, owner: str = "", scope: str = "province",
                       expires: float | None = None) -> str:
    if role not in ROLES:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}")
    text = Scope.parse(scope).text()
    token = "pf_" + secrets.token_urlsafe(32)
    await storage.add_token(name, role, hash_token(token), time.time(), owner, text, expires)
    return token


_bearer = HTTPBearer(auto_error=False)
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TOKEN_TOUCH_S = 60.0  # a token's last use is written at most this often (at once from a new address)
_TOKEN_WRITTEN: dict[str, tuple[float, str]] = {}


def get_accounts(app: Any) -> Any:
    """The app's :class:`~server.auth.accounts.Accounts` (made on first use, on the app's storage and audit)."""
    acc = getattr(app.state, "accounts", None)
    if acc is None:
        from .accounts import Accounts

        async def alert(key: str, message: str, data: dict[str, Any]) -> None:
            await security_alert(app, key, message, data)

        sec = app.state.settings.security
        acc = app.state.accounts = Accounts(app.state.storage, getattr(app.state, "audit", None), alert,
                                            lock_failures=sec.signin_failures,
                                            lock_s=sec.signin_lock_minutes * 60.0)
    elif acc.audit is None:
        acc.audit = getattr(app.state, "audit", None)
    return acc


async def security_alert(app: Any, key: str, message: str, data: dict[str, Any], county: str | None = None) -> None:
    """A ``security`` alert (suspicious behaviour: the dashboard and the webhooks see it like any other)."""
    settings = app.state.settings
    try:
        new = await raise_alert(app.state.storage, key, "security", None, county, int(time.time()), message, data,
                                bool(settings.alerts.webhook_url))
    except Exception:
        log.exception("could not raise the security alert %s", key)
        return
    alerts = getattr(app.state, "alerts", None)
    if new and alerts is not None and hasattr(alerts, "_webhook_wake"):
        alerts._webhook_wake.set()


async def _token_principal(request: Request, token: str) -> Principal:
    th = hash_token(token)
    row = await request.app.state.storage.find_token(th)
    if row is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
    now = time.time()
    if row.get("expires") is not None and row["expires"] <= now:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "token expired: ask an administrator for a new one",
                            {"WWW-Authenticate": "Bearer"})
    client = request.client.host if request.client else ""
    last, seen_from = row.get("last_used"), row.get("last_client") or ""
    written = _TOKEN_WRITTEN.get(th)  # this process's own last write: many requests at once write once
    due = last is None or now - last >= TOKEN_TOUCH_S or seen_from != client
    if due and not (written and written[1] == client and now - written[0] < TOKEN_TOUCH_S):
        _TOKEN_WRITTEN[th] = (now, client)
        if len(_TOKEN_WRITTEN) > 10_000:
            _TOKEN_WRITTEN.clear()
        # the last use is a record, not a condition: written beside the request, not before its answer
        storage = request.app.state.storage
        beside(("token", th, now), lambda: storage.token_used(th, now, client),
               f"could not record the use of token {row['name']}")
        if seen_from and seen_from != client and request.app.state.settings.security.token_new_address:
            await security_alert(request.app, f"security:token:{row['name']}:{client}",
                                 f"token {row['name']} used from a new address {client} (before: {seen_from})",
                                 {"what": "token_new_address", "token": row["name"], "client": client,
                                  "before": seen_from})
    return Principal(row["name"], row["role"], Scope.parse(row.get("scope")), "token", row.get("owner") or "")


async def _session_principal(request: Request, cookie: str) -> Principal:
    got = await get_accounts(request.app).session_principal(cookie)
    if got is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not signed in, or the session has ended: sign in again")
    p, csrf, stage = got
    if stage and not request.url.path.startswith("/api/v1/session"):  # a session that may only enrol or replace
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "two-factor sign-in is compulsory for administrators: "
                            "enrol an authenticator app first" if stage == "enrol" else
                            "this is a one-time password: replace it first (POST /api/v1/session/password)")
    if request.method in WRITES and not hmac.compare_digest(request.headers.get("x-csrf-token", ""), csrf):
        from ..registry.models import FieldError

        raise FieldError("X-CSRF-Token", "missing or not this session's (GET /api/v1/session gives it)", 403)
    return p


async def principal(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller: a bearer token (scripts) or the dashboard's session cookie; refused 401 otherwise. Path
    parameters naming something outside the caller's scope answer 404 here."""
    if creds is not None and creds.scheme.lower() == "bearer":
        p = await _token_principal(request, creds.credentials)
    elif request.cookies.get(COOKIE):
        p = await _session_principal(request, request.cookies[COOKIE])
    else:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    request.state.principal = p  # the audit middleware names the actor from it
    await check_path(request, p)
    return p


def require(role: str):  # type: ignore[no-untyped-def]
    """At least ``role`` (viewer < engineer < admin; an auditor reads what a viewer reads); ``auditor``: the
    audit trail and the login log, for auditors and admins."""

    async def dep(p: Annotated[Principal, Depends(principal)]) -> Principal:
        if role == "auditor" and p.role not in ("auditor", "admin"):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"needs role auditor or admin (you are {p.role})")
        if _RANK[p.role] < _RANK[role]:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"needs role {role} (you are {p.role})")
        return p

    return dep
