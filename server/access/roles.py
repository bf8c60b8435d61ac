"""Who may act on what in network and business access: THE one place that knows about principals and scopes.

Everything else in ``server/access`` asks this module: :func:`counties_of` (the counties a caller's lists are
limited to, None for the province), :func:`sees` (one object's county / city), :func:`may_review` (whether a
caller may decide an application's current step).

Built on :mod:`server.auth.scope` (issue 18's accounts half: a Principal with a role and a Scope); if that module
is absent (an older tree), the fallback below uses the plain roles: every caller sees the province, engineers and
admins review the county step, admins the province step. Switching means editing only this file.
"""

from __future__ import annotations

from typing import Any

try:
    from ..auth.scope import Principal, in_scope, resolver, scoped  # issue 18's accounts half
    SCOPED = True
except ImportError:  # pragma: no cover - the tree before the accounts half
    from ..auth import Principal  # type: ignore[assignment]

    SCOPED = False

    def in_scope(principal: Any, county: str | None, city: str | None = None) -> bool:  # type: ignore[misc]
        return True

    def resolver(param: str) -> Any:  # type: ignore[misc]
        return lambda fn: fn

    def scoped(*paths: str) -> None:  # type: ignore[misc]
        return None

__all__ = ["Principal", "counties_of", "may_review", "resolver", "scoped", "sees", "SCOPED"]

STEP_NAMES = {"county": "county review", "province": "province approval"}


def _scope(p: Any) -> Any:
    return getattr(p, "scope", None)


def province(p: Any) -> bool:
    scope = _scope(p)
    return scope is None or bool(scope.province)


def sees(p: Any, county: str | None, city: str | None = None) -> bool:
    """Whether ``p`` may see something of ``county`` (in ``city``)."""
    return province(p) or in_scope(p, county, city)


async def counties_of(p: Any, store: Any) -> list[str] | None:
    """The counties ``p``'s lists are limited to (None: the province, no filter): the scope's counties and the
    counties of the institutions in its cities (``store``: the access store)."""
    if province(p):
        return None
    scope = _scope(p)
    return sorted(set(scope.counties) | set(await store.counties_of_cities(sorted(scope.cities))))


def may_review(p: Any, step: str, county: str, city: str) -> str | None:
    """None when ``p`` may decide ``step`` of an application of ``county``; else why not (a sentence).

    ``county``: an admin whose scope covers the county (a county administrator; a province admin may stand in);
    ``province``: an admin of the province scope. Without scopes (fallback): engineers and admins review the
    county step, admins approve the province step."""
    role = getattr(p, "role", "")
    if step == "county":
        if not SCOPED:
            return None if role in ("engineer", "admin") else f"needs role engineer or admin (you are {role})"
        if role != "admin":
            return f"the county review needs a county administrator (you are {role})"
        return None if sees(p, county, city) else f"the county review of {county} is not in your scope"
    if step == "province":
        if role != "admin":
            return f"the province approval needs a province administrator (you are {role})"
        return None if province(p) else "the province approval needs a province administrator (your scope is a county)"
    return f"unknown step {step}"
