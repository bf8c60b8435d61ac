"""Who is asking and what they may see (issue 18): the :class:`Principal` every authenticated request carries,
with its role and its :class:`Scope` (the province, or some cities and/or counties).

A scoped principal sees only the units whose institution lies in its scope, and only those institutions; a unit
with no institution yet belongs to the province alone. Anything outside answers **404**, as if it did not exist
(a 403 would confirm that the SN or code exists). Domains use:

* :func:`in_scope` (``principal``, county, city) for one thing;
* :func:`scope_sns` (``principal``, registry index) -> the SNs in scope, or None for the province (no filter);
* :func:`not_found` to refuse, in the API's one error shape.

Routes and path parameters are checked in one place, :func:`check_path` (run by :func:`server.auth.principal` for every
authenticated route): each parameter name has a resolver registered by its domain (:func:`resolver`) that says
where the object lies; a parameter with no resolver is refused to a scoped principal, and so is every route not
listed by :func:`scoped` as filtering by scope (fail closed: a new route stays out of a county user's reach until
its domain filters it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, status

ROLES = ("admin", "engineer", "viewer", "auditor")
# viewer and auditor read; the auditor also reads the audit trail and the login log; engineers send commands and
# edit the registry; admins manage users, tokens and settings
RANK = {"viewer": 0, "auditor": 0, "engineer": 1, "admin": 2}
COOKIE = "posfleet_session"  # the dashboard's session cookie (server/auth/accounts.py)


@dataclass(frozen=True)
class Scope:
    """The province (no cities, no counties) or the union of some cities (the institutions' ``region``) and
    counties (their ``county``)."""

    cities: frozenset[str] = field(default_factory=frozenset)
    counties: frozenset[str] = field(default_factory=frozenset)

    @property
    def province(self) -> bool:
        return not self.cities and not self.counties

    def covers(self, county: str | None, city: str | None = None) -> bool:
        if self.province:
            return True
        return bool((county and county in self.counties) or (city and city in self.cities))

    def text(self) -> str:
        """``province`` or ``city:西安市,county:长安区`` (what is stored and shown; :meth:`parse` reads it)."""
        if self.province:
            return "province"
        return ",".join([f"city:{c}" for c in sorted(self.cities)] + [f"county:{c}" for c in sorted(self.counties)])

    def within(self) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """(cities, counties) for the storage's query filter (``server/storage/accounts.py``); None: province."""
        return None if self.province else (tuple(sorted(self.cities)), tuple(sorted(self.counties)))

    def as_dict(self) -> dict[str, Any]:
        return {"province": self.province, "cities": sorted(self.cities), "counties": sorted(self.counties)}

    @classmethod
    def parse(cls, text: str | None) -> Scope:
        """``province`` (or empty), or comma-separated ``city:NAME`` / ``county:NAME``; ValueError naming the bad
        part."""
        text = (text or "").strip()
        if text in ("", "province"):
            return PROVINCE
        cities: set[str] = set()
        counties: set[str] = set()
        for part in text.split(","):
            kind, sep, name = part.strip().partition(":")
            name = name.strip()
            if not sep or kind not in ("city", "county") or not name or len(name) > 100:
                raise ValueError(f"scope: {part.strip()!r} is not city:NAME or county:NAME (or the word province)")
            (cities if kind == "city" else counties).add(name)
        return cls(frozenset(cities), frozenset(counties))


PROVINCE = Scope()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: ``via`` is ``token`` (a script's bearer token) or ``session`` (the dashboard's
    signed-in user); ``user`` the named user behind it ("" for a token with no owner)."""

    name: str
    role: str
    scope: Scope = PROVINCE
    via: str = "token"
    user: str = ""
    session: str = ""  # the session's id (its hash), to end it

    @property
    def province(self) -> bool:
        return self.scope.province


def in_scope(principal: Principal, county: str | None, city: str | None = None) -> bool:
    """Whether something in ``county`` (of ``city``) is within ``principal``'s scope."""
    return principal.scope.covers(county, city)


def unit_in_scope(principal: Principal, info: Any) -> bool:
    """``info``: a registry :class:`~server.registry.service.UnitInfo` (or None: not registered, province only)."""
    if principal.scope.province:
        return True
    return info is not None and bool(info.institution) and principal.scope.covers(info.county, info.region)


_SNS_CACHE: dict[tuple[int, Scope], tuple[Any, frozenset[str]]] = {}


def scope_sns(principal: Principal, index: dict[str, Any]) -> frozenset[str] | None:
    """The SNs of ``index`` (the registry's) in ``principal``'s scope, None for the province (no filter).
    Cached per index object (the registry builds a new one when it changes; the entry holds it, so its id is not
    reused while cached) and scope."""
    if principal.scope.province:
        return None
    key = (id(index), principal.scope)
    got = _SNS_CACHE.get(key)
    if got is None or got[0] is not index:
        if len(_SNS_CACHE) > 64:
            _SNS_CACHE.clear()
        got = (index, frozenset(sn for sn, info in index.items() if unit_in_scope(principal, info)))
        _SNS_CACHE[key] = got
    return got[1]


def not_found(what: str, value: Any) -> HTTPException:
    """The answer to anything outside the caller's scope: the same 404 as for something that does not exist."""
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {value} not found")


# path parameters -> where their object lies ------------------------------------------------------------------
# resolver(app, value, principal) -> True (in scope), False (outside or unknown: 404)
Resolver = Callable[[Any, str, Principal], Awaitable[bool]]
_RESOLVERS: dict[str, Resolver] = {}


def resolver(param: str) -> Callable[[Resolver], Resolver]:
    """Register the function that says whether the object named by path parameter ``param`` is in a scoped
    principal's scope (one per parameter name, for every route that uses it)."""

    def add(fn: Resolver) -> Resolver:
        _RESOLVERS[param] = fn
        return fn

    return add


async def anywhere(app: Any, value: str, principal: Principal) -> bool:
    """For parameters naming things that belong to no county (update packages, documentation pages)."""
    return True


# Route templates whose answers a scoped principal may have: they filter by scope themselves (or hold nothing of a
# county's). Any other route answers a scoped principal 404 (fail closed: a new route is out of a county user's
# reach until its domain filters it and lists it here with :func:`scoped`).
SCOPED: set[str] = set()


def scoped(*paths: str) -> None:
    """Route templates (every method) or ``METHOD template`` (that method only) that filter by scope."""
    SCOPED.update(paths)


# Routes that are the province's by decision, not for want of a filter: what they hold belongs to no county (the
# broker's dead letters, the ingest pipeline's figures). They answer a scoped principal 404 like any route not in
# :data:`SCOPED`; listing them says so on purpose (decision 031), and the scope walk checks the two sets apart.
PROVINCE_ONLY: set[str] = set()


def province_only(*paths: str) -> None:
    """Route templates (or ``METHOD template``) a scoped principal is refused by decision."""
    PROVINCE_ONLY.update(paths)


async def check_path(request: Any, principal: Principal) -> None:
    """404 when the route is not one that filters by scope (:data:`SCOPED`), or a path parameter names something
    outside ``principal``'s scope (or has no resolver)."""
    if principal.scope.province:
        return
    path = getattr(request.scope.get("route"), "path", None)
    method_path = f"{request.method} {path}"
    if path in PROVINCE_ONLY or method_path in PROVINCE_ONLY or (path not in SCOPED and method_path not in SCOPED):
        raise not_found("path", request.url.path)
    for name, value in request.path_params.items():
        fn = _RESOLVERS.get(name)
        if fn is None or not await fn(request.app, str(value), principal):
            raise not_found(name, value)


def _builtin() -> None:
    @resolver("sn")
    async def _sn(app: Any, value: str, principal: Principal) -> bool:
        index = await app.state.registry.index()
        return unit_in_scope(principal, index.get(value))

    @resolver("code")
    async def _code(app: Any, value: str, principal: Principal) -> bool:
        row = await app.state.storage.get_institution(value)
        return row is not None and principal.scope.covers(row.get("county"), row.get("region"))

    @resolver("alert_id")
    async def _alert(app: Any, value: str, principal: Principal) -> bool:
        row = await app.state.storage.get_alert(int(value))
        if row is None:
            return False
        if row.get("sn"):
            return unit_in_scope(principal, (await app.state.registry.index()).get(row["sn"]))
        if not row.get("county"):
            return False  # the server's own alerts are the province's
        return any(principal.scope.covers(i["county"], i["region"])
                   for i in await app.state.storage.list_institutions(row["county"]))

    @resolver("cid")
    async def _command(app: Any, value: str, principal: Principal) -> bool:
        svc = getattr(app.state, "commands", None)
        cmd = await svc.get_command(value) if svc is not None else None
        return cmd is not None and unit_in_scope(principal, (await app.state.registry.index()).get(cmd["sn"]))


_builtin()
# the routes of the registry, units and alerts that filter by scope (their lists take ``within``; their path
# parameters have resolvers above); other domains add theirs with ``scoped(...)``
scoped("/api/v1/units", "/api/v1/units/{sn}", "/api/v1/units/{sn}/samples", "/api/v1/units/{sn}/events",
       "/api/v1/institutions", "GET /api/v1/institutions/{code}", "/api/v1/registry/units",
       "GET /api/v1/registry/units/{sn}",
       "/api/v1/registry/units.csv", "/api/v1/registry/units.xlsx", "/api/v1/registry/institutions.csv",
       "/api/v1/registry/institutions.xlsx", "/api/v1/registry/units/{sn}/status", "/api/v1/alerts",
       "/api/v1/alerts/{alert_id}/ack", "/api/v1/alerts/{alert_id}/close",
       "POST /api/v1/commands", "POST /api/v1/jobs",
       "/dashboard/api/context", "/dashboard/api/units",  # the dashboard's units list filters (server/dashboard)
       "/api/v1/analytics/live",  # of the caller's units (server/analytics)
       # one unit's own figures, commands: the path parameter is the check
       "/api/v1/units/{sn}/network", "/api/v1/units/{sn}/data", "/api/v1/units/{sn}/slots",
       "GET /api/v1/commands/{cid}", "GET /api/v1/commands")  # commands: one unit's (sn), checked by the route  # commands: the named units checked (server/commands/router.py)
