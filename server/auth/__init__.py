"""Who is asking: bearer tokens (scripts) and the dashboard's signed-in users (issue 18), each a
:class:`~server.auth.scope.Principal` with a role (admin, engineer, viewer, auditor) and a scope; tokens and
sessions stored hashed. Path parameters outside the caller's scope answer 404 here, for every route
(:func:`server.auth.scope.check_path`)."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..storage import Storage
from .scope import RANK as _RANK
from .scope import ROLES, Principal, Scope, check_path, in_scope  # noqa: F401  (re-exported)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(storage: Storage, name: str, role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}")
    token = "pf_" + secrets.token_urlsafe(32)
    await storage.add_token(name, role, hash_token(token), time.time())
    return token


_bearer = HTTPBearer(auto_error=False)


async def principal(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    row = await request.app.state.storage.find_token(hash_token(creds.credentials))
    if row is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
    p = Principal(row["name"], row["role"], Scope.parse(row.get("scope")), "token", row.get("owner") or "")
    await check_path(request, p)
    return p


def require(role: str):  # type: ignore[no-untyped-def]
    async def dep(p: Annotated[Principal, Depends(principal)]) -> Principal:
        if _RANK[p.role] < _RANK[role]:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"needs role {role} (you are {p.role})")
        return p

    return dep
