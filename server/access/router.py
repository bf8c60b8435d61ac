"""Network access (IP pools, applications, combined query), business access (interfaces, applications, access
monitoring) and service statistics: the API (docs/api.md, sections "Network access", "Business access",
"Service statistics")."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..answers import Page, Time, page, timed
from ..auth import require
from ..auth.bounds import Offset
from ..auth.openapi import ErrorBody, Open, answers
from ..registry.models import FieldError, LevelCode
from . import roles, stats

router = APIRouter(tags=["access"])

PoolId = Annotated[int, Path(ge=1, le=2**62)]
AppId = Annotated[int, Path(ge=1, le=2**62)]
IfaceCode = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Short = Annotated[str | None, Query(max_length=100)]
MAX_POOL_BITS = 16  # a pool holds at most 65,536 addresses (a /16)


def answers_also(model: type[BaseModel], **codes: str) -> dict[str, Any]:
    """:func:`answers` with more error statuses documented (``e409="why"``), each with the one error body."""
    out = answers(model)
    for code, why in codes.items():
        out["responses"][int(code[1:])] = {"model": ErrorBody, "description": why}
    return out


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _svc(request: Request) -> Any:
    return request.app.state.access


async def _counties(request: Request, who: Any) -> list[str] | None:
    return await roles.counties_of(who, _svc(request).store)


# --- IP pools ---------------------------------------------------------------------------------------------
class PoolIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    region: str = Field(min_length=1, max_length=100, description="a county or a city (the institutions' county "
                                                                  "or region), whose terminals take from this pool")
    link_type: Literal["wired", "4g_vpdn"]
    cidr: str = Field(min_length=7, max_length=43, description="IPv4 network, e.g. 10.61.1.0/24 (at most a /16)")
    first: str | None = Field(None, max_length=15, description="first address handed out (default: the network's "
                                                               "first host)")
    last: str | None = Field(None, max_length=15, description="last address handed out (default: the last host)")
    note: str = Field("", max_length=200)


class Pool(Open):
    id: int
    region: str
    link_type: str
    cidr: str
    first_ip: str
    last_ip: str
    size: int
    allocated: int
    reserved: int
    free: int
    note: str
    created: Time
    created_by: str


class Address(Open):
    ip: str
    state: str
    sn: str | None
    institution: str | None
    application: int | None
    note: str
    ts: Time


class ReserveIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    ip: str = Field(min_length=7, max_length=15)
    note: str = Field("", max_length=200)


def _range(body: PoolIn) -> tuple[str, int, int]:
    try:
        net = ipaddress.IPv4Network(body.cidr, strict=True)
    except ValueError as err:
        raise FieldError("cidr", f"not an IPv4 network: {err}") from err
    if net.prefixlen < 32 - MAX_POOL_BITS:
        raise FieldError("cidr", f"at most a /{32 - MAX_POOL_BITS} ({2 ** MAX_POOL_BITS} addresses) per pool")
    hosts = (int(net.network_address) + 1, int(net.broadcast_address) - 1) if net.prefixlen < 31 else (
        int(net.network_address), int(net.broadcast_address))
    first, last = hosts
    for name, text in (("first", body.first), ("last", body.last)):
        if text is None:
            continue
        try:
            ip = ipaddress.IPv4Address(text)
        except ValueError as err:
            raise FieldError(name, f"not an IPv4 address: {text!r}") from err
        if not hosts[0] <= int(ip) <= hosts[1]:
            raise FieldError(name, f"{ip} is not a host address of {net}")
        if name == "first":
            first = int(ip)
        else:
            last = int(ip)
    if first > last:
        raise FieldError("last", "comes before first")
    return str(net), first, last


@router.post("/api/v1/access/pools", **answers_also(Pool, e409="The range overlaps another pool"))
async def add_pool(request: Request, body: PoolIn, who: Annotated[Any, Depends(require("admin"))]) -> Any:
    """Define a pool: the addresses approval hands out to the region's terminals on that link type."""
    if not roles.province(who):
        raise FieldError("region", "pools are defined by a province administrator", 403)
    cidr, first, last = _range(body)
    from ..storage.access import AddressTaken

    store = _svc(request).store
    try:
        pool_id = await store.add_pool(body.region, body.link_type, cidr, first, last, body.note, who.name,
                                       request.app.state.clock.now())
    except AddressTaken as err:
        raise FieldError("cidr", str(err), 409) from err
    await _svc(request)._audit(who, "access.pool.add", 0, _client(request),
                               {"pool": pool_id, "region": body.region, "link_type": body.link_type, "cidr": cidr})
    return await _pool_answer(request, pool_id)


async def _pool_answer(request: Request, pool_id: int) -> Any:
    for p in await _svc(request).store.pools():
        if p["id"] == pool_id:
            return timed(p, request.app.state.settings.timezone)
    raise FieldError("pool_id", f"pool {pool_id} not found", 404)


@router.get("/api/v1/access/pools", **answers(Page[Pool]))
async def list_pools(request: Request, who: Annotated[Any, Depends(require("viewer"))],
                     link_type: Annotated[Literal["wired", "4g_vpdn"] | None, Query()] = None,
                     limit: Limit = 100, offset: Offset = 0) -> Any:
    """Every pool in the caller's scope with its use (allocated, reserved, free)."""
    pools = await _svc(request).store.pools(None, link_type)
    counties = await _counties(request, who)
    if counties is not None:
        insts = await request.app.state.storage.list_institutions()
        cities = {i.get("region") for i in insts if i.get("county") in counties}
        pools = [p for p in pools if p["region"] in counties or p["region"] in cities]
    return timed(page(pools[offset:offset + limit], len(pools), limit, offset), request.app.state.settings.timezone)


@router.get("/api/v1/access/pools/{pool_id}/addresses", **answers(Page[Address]))
async def pool_addresses(request: Request, pool_id: PoolId, who: Annotated[Any, Depends(require("viewer"))],
                         limit: Limit = 100, offset: Offset = 0) -> Any:
    """The pool's addresses in use (allocated to a terminal, or reserved by hand)."""
    if await _svc(request).store.pool(pool_id) is None:
        raise FieldError("pool_id", f"pool {pool_id} not found", 404)
    total, items = await _svc(request).store.pool_addresses(pool_id, limit, offset)
    return timed(page(items, total, limit, offset), request.app.state.settings.timezone)


@router.post("/api/v1/access/pools/{pool_id}/reserve", **answers_also(Pool, e409="The address is already reserved or allocated"))
async def reserve(request: Request, pool_id: PoolId, body: ReserveIn,
                  who: Annotated[Any, Depends(require("admin"))]) -> Any:
    """Keep one address of the pool out of allocation (a gateway, a printer server...)."""
    pool = await _svc(request).store.pool(pool_id)
    if pool is None:
        raise FieldError("pool_id", f"pool {pool_id} not found", 404)
    try:
        ip = int(ipaddress.IPv4Address(body.ip))
    except ValueError as err:
        raise FieldError("ip", f"not an IPv4 address: {body.ip!r}") from err
    if not pool["first_ip"] <= ip <= pool["last_ip"]:
        raise FieldError("ip", f"{body.ip} is outside pool {pool_id} ({pool['cidr']})")
    from ..storage.access import AddressTaken

    try:
        await _svc(request).store.reserve(pool_id, ip, body.note, request.app.state.clock.now())
    except AddressTaken as err:
        raise FieldError("ip", str(err), 409) from err
    await _svc(request)._audit(who, "access.pool.reserve", 0, _client(request), {"pool": pool_id, "ip": body.ip})
    return await _pool_answer(request, pool_id)


# --- applications -----------------------------------------------------------------------------------------
class ApplicationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    domain: Literal["network", "business"]
    action: Literal["register", "change", "deregister"]
    institution: str = Field(min_length=1, max_length=64)
    sn: str = Field("", max_length=64, description="the terminal")
    link_type: Literal["", "wired", "4g_vpdn"] = Field("", description="network: the link the terminal uses")
    carrier: str = Field("", max_length=32, description="network, 4G VPDN: the carrier")
    interface: str = Field("", max_length=64, description="business: the interface's code")
    note: str = Field("", max_length=500, description="what the applicant says")


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    decision: Literal["approve", "reject"]
    note: str = Field("", max_length=500, description="a rejection's reason (required), or a remark")


class Step(Open):
    ts: Time
    actor: str
    role: str
    step: str
    decision: str
    note: str


class Application(Open):
    id: int
    domain: str
    action: str
    institution: str
    county: str
    region: str
    sn: str
    link_type: str
    carrier: str
    interface: str
    note: str
    steps: list[str]
    step: int
    state: str = Field(description="pending_county, pending_province, approved or rejected")
    ip: str | None
    reject_reason: str
    created: Time
    created_by: str
    updated: Time
    history: list[Step] | None = None


@router.post("/api/v1/access/applications", **answers_also(
    Application, e404="The institution does not exist (or is outside the caller's scope)"))
async def apply(request: Request, body: ApplicationIn, who: Annotated[Any, Depends(require("engineer"))]) -> Any:
    """An institution's application for network or business access, a change or a deregistration: it waits for
    the first configured step (county review by default)."""
    a = await _svc(request).apply(who, body.model_dump(), _client(request))
    return timed(a, request.app.state.settings.timezone)


@router.get("/api/v1/access/applications", **answers(Page[Application]))
async def list_applications(
    request: Request, who: Annotated[Any, Depends(require("viewer"))],
    domain: Annotated[Literal["network", "business"] | None, Query()] = None,
    action: Annotated[Literal["register", "change", "deregister"] | None, Query()] = None,
    state: Annotated[Literal["pending_county", "pending_province", "approved", "rejected"] | None, Query()] = None,
    institution: Short = None, sn: Short = None, county: Short = None, interface: Short = None,
    limit: Limit = 50, offset: Offset = 0,
) -> Any:
    """Applications in the caller's scope, newest first, with their state."""
    filters = {"domain": domain, "action": action, "state": state, "institution": institution, "sn": sn,
               "county": county, "interface": interface}
    total, items = await _svc(request).store.applications(filters, await _counties(request, who), limit, offset)
    return timed(page(items, total, limit, offset), request.app.state.settings.timezone)


@router.get("/api/v1/access/applications/{app_id}", **answers(Application))
async def get_application(request: Request, app_id: AppId, who: Annotated[Any, Depends(require("viewer"))]) -> Any:
    """One application with every step taken (who, when, decision, note)."""
    a = await _svc(request).detail(app_id)
    if not roles.sees(who, a["county"], a["region"]):
        raise FieldError("app_id", f"application {app_id} not found", 404)
    return timed(a, request.app.state.settings.timezone)


@router.post("/api/v1/access/applications/{app_id}/decision", **answers_also(
    Application, e409="The application is not waiting for a decision (decided, or decided meanwhile), or no free "
                      "address is left in its pools"))
async def decide(request: Request, app_id: AppId, body: DecisionIn,
                 who: Annotated[Any, Depends(require("engineer"))]) -> Any:
    """Decide the application's current step: a county administrator reviews, a province administrator approves
    (``[access] steps``). The last approval allocates the address (network) or grants the interface (business);
    a rejection needs a reason. Audited as ``access.approve`` / ``access.reject``."""
    a = await _svc(request).decide(who, app_id, body.decision == "approve", body.note, _client(request))
    a["history"] = await _svc(request).store.steps_of(app_id)
    return timed(a, request.app.state.settings.timezone)


# --- combined network query -------------------------------------------------------------------------------
class NetworkRow(Open):
    sn: str
    institution: str | None
    institution_name: str | None
    county: str | None
    region: str | None
    link_type: str
    ip: str | None = Field(description="the allocated address")
    reported_ip: str | None = Field(description="the address the terminal last reported")
    reported_link: str | None
    reported_ts: Time | None
    carrier: str | None


@router.get("/api/v1/access/network", **answers(Page[NetworkRow]))
async def network_query(
    request: Request, who: Annotated[Any, Depends(require("viewer"))],
    ip: Annotated[str | None, Query(max_length=15)] = None, institution: Short = None, sn: Short = None,
    link_type: Annotated[Literal["wired", "4g_vpdn"] | None, Query()] = None, carrier: Short = None,
    county: Short = None, limit: Limit = 50, offset: Offset = 0,
) -> Any:
    """网络信息综合查询: terminals by address (allocated or reported), institution, unit, link type, carrier."""
    filters: dict[str, Any] = {"institution": institution, "sn": sn, "link_type": link_type, "carrier": carrier,
                               "county": county}
    if ip is not None:
        try:
            filters["ip"] = int(ipaddress.IPv4Address(ip))
        except ValueError as err:
            raise FieldError("ip", f"not an IPv4 address: {ip!r}") from err
    total, items = await _svc(request).store.network_query(filters, await _counties(request, who), limit, offset)
    return timed(page(items, total, limit, offset), request.app.state.settings.timezone)


# --- business interfaces ----------------------------------------------------------------------------------
class InterfaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=100)
    address: str = Field(min_length=1, max_length=300, description="the request address (URL or host:port)")
    inputs: str = Field("", max_length=2000)
    outputs: str = Field("", max_length=2000)
    description: str = Field("", max_length=2000)
    state: Literal["active", "suspended", "retired"] = "active"


class Interface(Open):
    code: str
    name: str
    address: str
    inputs: str
    outputs: str
    description: str
    state: str
    updated: Time
    updated_by: str
    granted: int | None = None
    reached: int | None = None


@router.put("/api/v1/access/interfaces/{interface}", **answers(Interface))
async def put_interface(request: Request, interface: IfaceCode, body: InterfaceIn,
                        who: Annotated[Any, Depends(require("admin"))]) -> Any:
    """Add an insurance business interface to the register, or change it (audited)."""
    if not roles.province(who):
        raise FieldError("interface", "the interface register is kept by a province administrator", 403)
    new = await _svc(request).store.put_interface({"code": interface, **body.model_dump()}, who.name,
                                                  request.app.state.clock.now())
    await _svc(request)._audit(who, "access.interface." + ("add" if new else "change"), 0, _client(request),
                               {"interface": interface, "state": body.state})
    row = await _svc(request).store.interface(interface)
    return timed(row, request.app.state.settings.timezone)


@router.get("/api/v1/access/interfaces", **answers(Page[Interface]))
async def list_interfaces(request: Request, _: Annotated[Any, Depends(require("viewer"))],
                          limit: Limit = 100, offset: Offset = 0) -> Any:
    """The register, with how many terminals are granted each interface and how many reach it."""
    rows = await _svc(request).store.interfaces()
    return timed(page(rows[offset:offset + limit], len(rows), limit, offset), request.app.state.settings.timezone)


class Reach(Open):
    sn: str
    interface: str
    granted: bool
    reached: bool | None = Field(description="true: the terminal's application reached it at its last attempt; "
                                             "false: it failed; null: never reported")
    reached_ts: Time | None
    reported_ts: Time | None
    detail: str
    institution: str | None
    county: str | None


@router.get("/api/v1/access/monitoring", **answers(Page[Reach]))
async def monitoring(
    request: Request, who: Annotated[Any, Depends(require("viewer"))],
    interface: Short = None, state: Annotated[Literal["working", "failing", "unknown"] | None, Query()] = None,
    limit: Limit = 100, offset: Offset = 0,
) -> Any:
    """Which terminals have working access to which interface (reported by the agents)."""
    total, items = await _svc(request).store.access_status(await _counties(request, who), interface, state, limit,
                                                           offset)
    return timed(page(items, total, limit, offset), request.app.state.settings.timezone)


# --- service statistics -----------------------------------------------------------------------------------
@router.get("/api/v1/statistics/services", **answers(stats.Services))
async def services(
    request: Request, who: Annotated[Any, Depends(require("viewer"))],
    period: Annotated[Literal["week", "month", "half_year", "year"], Query()] = "month",
    by: Annotated[Literal["day", "month"], Query()] = "day",
    end: Annotated[str | None, Query(max_length=10, description="last day (YYYY-MM-DD); default today")] = None,
) -> Any:
    """Services and people served by day or month over the period, identity checks by method (counts and
    shares), the ten institutions with the most services, services by the institutions' level."""
    return await stats.services(request.app, await _counties(request, who), period, by, end)


@router.get("/api/v1/statistics/coverage", **answers(stats.Coverage))
async def coverage(
    request: Request, who: Annotated[Any, Depends(require("viewer"))],
    type: Short = None, region: Short = None, county: Short = None, model: Short = None,  # noqa: A002
    level: Annotated[LevelCode | None, Query(description="the institutions' level")] = None,
    months: Annotated[int, Query(ge=1, le=36)] = 12,
) -> Any:
    """Deployment coverage: institutions by type and by level covered by at least one deployed terminal, coverage
    per county over the months, new deployments per month, the counties ranked; filters by type, level, region,
    county, model."""
    return await stats.coverage(request.app, await _counties(request, who),
                                {"type": type, "level": level, "region": region, "county": county, "model": model},
                                months)


@router.get("/api/v1/statistics/map", **answers(stats.MapFigures))
async def map_figures(request: Request, who: Annotated[Any, Depends(require("viewer"))]) -> Any:
    """Terminals per county and city (deployed, online) for the dashboard's province map."""
    return await stats.map_figures(request.app, await _counties(request, who))


# --- where path parameters lie (scoped users: 404 outside their scope) -------------------------------------
@roles.resolver("pool_id")
async def _pool_scope(app: Any, value: str, who: Any) -> bool:
    pool = await app.state.access.store.pool(int(value)) if value.isdigit() else None
    if pool is None:
        return False
    insts = await app.state.storage.list_institutions()
    return any(i.get("county") == pool["region"] or i.get("region") == pool["region"] for i in insts
               if roles.sees(who, i.get("county"), i.get("region")))


@roles.resolver("app_id")
async def _app_scope(app: Any, value: str, who: Any) -> bool:
    a = await app.state.access.store.application(int(value)) if value.isdigit() else None
    return a is not None and roles.sees(who, a["county"], a["region"])


@roles.resolver("interface")
async def _iface_scope(app: Any, value: str, who: Any) -> bool:
    return True  # the register is the province's, read by everyone


# every route here filters by the caller's scope itself (lists by county, objects by their county): open to scoped
# principals (server/auth/scope.py answers 404 on routes not listed)
roles.scoped(*(getattr(r, "path", "") for r in router.routes))
