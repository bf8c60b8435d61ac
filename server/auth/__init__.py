"""Bearer tokens with roles (admin, engineer, viewer), stored hashed."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..storage import Storage

ROLES = ("admin", "engineer", "viewer")
_RANK = {"viewer": 0, "engineer": 1, "admin": 2}


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


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
    return Principal(row["name"], row["role"])


def require(role: str):  # type: ignore[no-untyped-def]
    async def dep(p: Annotated[Principal, Depends(principal)]) -> Principal:
        if _RANK[p.role] < _RANK[role]:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"needs role {role} (you are {p.role})")
        return p

    return dep
