"""Registry API: institutions and units (administrators write, everyone reads), CSV in and out, swap."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from wire.times import TimeInputError, iso, parse_time

from ..answers import Page, Time, page, timed, timer
from ..auth import Principal, require
from ..auth.bounds import SN, Code, Name, Offset
from ..auth.openapi import ErrorBody, Open, answers, answers_file, answers_upload
from ..encode import MsgspecJSON, encode
from ..exports import CSV_TYPE, XLSX_TYPE
from .models import FieldError, Institution, LevelCode, StatusChange, Swap, UnitPatch, UnitRecord
from .pages import AnswerCache
from .service import Registry

router = APIRouter(prefix="/api/v1", tags=["registry"])

Viewer = Annotated[Principal, Depends(require("viewer"))]
Admin = Annotated[Principal, Depends(require("admin"))]


class InstitutionOut(Open):
    code: str
    name: str
    county: str
    region: str
    type: str
    hours: str
    contact: str
    level: str = ""  # provincial, prefectural, county_level, township, village; "": not given (issue 18)


class InstitutionUnit(Open):
    sn: str
    status: str
    online: bool


class InstitutionDetail(InstitutionOut):
    units: list[InstitutionUnit]


class Sim(Open):
    carrier: str | None
    mcc_mnc: str | None
    imsi: str | None
    iccid: str | None
    first_report: Time | None
    last_report: Time | None


class RegisteredUnit(Open):
    sn: str
    institution: str | None
    status: str
    online: bool
    first_seen: Time | None = None
    last_seen: Time | None = None
    sim: Sim
    software: dict[str, str | None]


class StatusEntry(Open):
    from_ts: Time
    status: str
    by: str
    note: str


class RegisteredUnitDetail(RegisteredUnit):
    status_history: list[StatusEntry]


class RegisteredPage(Page[RegisteredUnit]):
    match: Literal["prefix", "contains"] | None


class ImportLineError(Open):
    line: int
    field: str
    error: str


class ImportReport(Open):
    imported: int
    errors: list[ImportLineError]
    # units: what the file adds and changes (with dry_run=true nothing is stored: a preview)
    dry_run: bool = False
    added: int | None = None
    changed: int | None = None
    unchanged: int | None = None
    changes: list[dict[str, Any]] = []


class StatusSet(Open):
    sn: str
    status: str
    from_ts: Time


class Patched(Open):
    sn: str


class SwapDone(Open):
    sn: str
    spare_sn: str


def _tz(request: Request) -> str:
    return request.app.state.settings.timezone  # type: ignore[no-any-return]


def _registry(request: Request) -> Registry:
    return request.app.state.registry  # type: ignore[no-any-return]


def online(unit: dict[str, Any], request: Request, now: float | None = None) -> bool:
    """Online: the broker session is up, or a message arrived within three keep-alive intervals."""
    if unit.get("last_seen") is None:
        return False
    s = request.app.state.settings
    if now is None:
        now = request.app.state.clock.now()
    return bool(unit.get("broker_session")) or now - unit["last_seen"] <= 3 * s.ingest.terminal_keepalive_s


def _unit_out(u: dict[str, Any], request: Request, now: float | None = None, tim: Any = None) -> dict[str, Any]:
    """A registered unit as the API shows it; ``tim`` (:func:`server.answers.timer`): with its times as the answer
    shows them, the same as :func:`timed` over the unit would give, in one copy (a page of units then needs no walk
    over it; the walk and the copies were a sixth of a unit list's CPU at 200,000 terminals, issue 15)."""
    d = dict(u) if tim is None else tim.mapping(u)
    d["online"] = online(u, request, now)
    ident = d.get("identity") or {}
    sim = {k: ident.get(k) for k in ("carrier", "mcc_mnc", "imsi", "iccid")}
    sim["first_report"], sim["last_report"] = d.get("first_seen"), d.get("last_seen")
    d["sim"] = sim if tim is None else tim.mapping(sim)
    inv = d.pop("inventory", None) or {}
    software = {"agent": inv.get("agent") or d.get("agent_version") or None, **(inv.get("components") or {})}
    d["software"] = software if tim is None else tim.copy(software)
    return d


# institutions ---------------------------------------------------------------------------------------
@router.get("/institutions", **answers(Page[InstitutionOut]))
async def list_institutions(request: Request, p: Viewer, county: Name = None,
                            level: Annotated[LevelCode | None, Query(description="the institutions' level")] = None,
                            limit: Annotated[int, Query(ge=1, le=100000)] = 1000, offset: Offset = 0) -> dict[str, Any]:
    total, items = await request.app.state.storage.institutions_page(county, p.scope.within(), limit, offset,
                                                                     level=level)
    return timed(page(items, total, limit, offset), _tz(request))  # type: ignore[no-any-return]


@router.get("/institutions/{code}", **answers(InstitutionDetail))
async def get_institution(request: Request, code: Code, _: Viewer) -> dict[str, Any]:
    inst = await request.app.state.storage.get_institution(code)
    if inst is None:
        raise FieldError("code", f"institution {code!r} not found", 404)
    total, units = await request.app.state.storage.registry_query({"institution": code}, limit=1000)
    inst["units"] = [{"sn": u["sn"], "status": u["status"], "online": online(u, request)} for u in units]
    return timed(inst, _tz(request))  # type: ignore[no-any-return]


@router.put("/institutions/{code}", **answers(InstitutionOut))
async def put_institution(request: Request, code: Code, _: Admin, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    if body.get("code", code) != code:
        raise FieldError("code", "differs from the code in the path")
    inst = Institution.model_validate({**body, "code": code})
    await _registry(request).upsert_institutions([inst.model_dump()])
    return inst.model_dump()


Format = Annotated[Literal["csv", "xlsx"], Query(description="csv (UTF-8, digit strings kept as text) or xlsx "
                                                                "(typed cells)")]


async def _file(data: bytes, name: str, fmt: str, request: Request, p: Principal) -> Response:
    """The export as a download; a mass export (many rows within an hour) is alerted (server/auth/watch.py)."""
    from ..auth.watch import exported

    await exported(request.app, p, f"{name}.{fmt}", max(0, data.count(b"\n") - 1) if fmt == "csv" else
                   await _xlsx_rows(data))
    return Response(data, media_type=XLSX_TYPE if fmt == "xlsx" else CSV_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'})


async def _xlsx_rows(data: bytes) -> int:
    """Data rows of an XLSX export (its first sheet's rows but the header), without loading the workbook."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        name = next((n for n in z.namelist() if n.startswith("xl/worksheets/sheet")), None)
        return max(0, z.read(name).count(b"<row ") - 1) if name else 0


@router.get("/registry/institutions.csv", **answers_file(CSV_TYPE, XLSX_TYPE))
async def export_institutions(request: Request, p: Viewer, lang: Literal["zh", "en"] = "zh",
                              format: Format = "csv") -> Response:  # noqa: A002 - the query parameter's name
    """The institutions as administrators keep them: CSV (``format=csv``) or XLSX (``format=xlsx``)."""
    return await _file(await _registry(request).export_institutions(lang, format, p.scope.within()), "institutions",
                 format, request, p)


@router.get("/registry/institutions.xlsx", **answers_file(XLSX_TYPE))
async def export_institutions_xlsx(request: Request, p: Viewer, lang: Literal["zh", "en"] = "zh") -> Response:
    """The same as ``institutions.csv?format=xlsx``."""
    return await _file(await _registry(request).export_institutions(lang, "xlsx", p.scope.within()), "institutions",
                 "xlsx", request, p)


_IMPORT = {"text/csv": "CSV (UTF-8 or GB18030; Chinese or code headers)", XLSX_TYPE: "XLSX (its first sheet)"}


@router.post("/registry/institutions/import", **answers_upload(ImportReport, _IMPORT))
async def import_institutions(request: Request, _: Admin) -> dict[str, Any]:
    """Body: the CSV or XLSX file. Good rows are stored; each bad row is reported with its line and field. Only the
    file's columns change an existing institution (a new one needs a name); see the units import for empty cells."""
    return await _registry(request).import_institutions(await request.body())


# units ----------------------------------------------------------------------------------------------
@router.get("/registry/units", **answers(RegisteredPage))
async def list_registry_units(
    request: Request,
    p: Viewer,
    q: Annotated[str, Query(max_length=64, description="start (or, see match, any part) of the SN or insurance SN")] = "",
    match: Annotated[Literal["auto", "prefix", "contains"], Query(
        description="prefix: the SN or insurance SN starts with q (indexed); contains: q anywhere (reads every "
                    "unit); auto: prefix, and contains when no unit starts with q")] = "auto",
    institution: Name = None,
    county: Name = None,
    region: Name = None,
    status: Literal["in_service", "spare", "in_repair", "retired"] | None = None,
    link_type: Literal["wired", "4g_vpdn"] | None = None,
    stock_type: Literal["deployed", "spare"] | None = None,
    vendor: Name = None,
    sort: Literal["sn", "institution", "county", "status", "last_seen", "online"] = "sn",
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Offset = 0,
) -> Response:
    filters = {"q": q, "match": "contains" if match == "contains" else "prefix", "institution": institution,
               "county": county, "region": region, "status": status, "link_type": link_type, "stock_type": stock_type,
               "vendor": vendor, "within": p.scope.within()}
    storage = request.app.state.storage

    async def make() -> bytes:
        total, items = await storage.registry_query(filters, sort, order == "desc", limit, offset)
        used = filters["match"] if q else None
        if q and match == "auto" and total == 0:
            filters["match"] = used = "contains"
            total, items = await storage.registry_query(filters, sort, order == "desc", limit, offset)
        now, tim = request.app.state.clock.now(), timer(_tz(request))
        return encode(page([_unit_out(u, request, now, tim) for u in items], total, limit, offset, match=used))

    pages: AnswerCache = request.app.state.unit_pages
    if pages.seconds <= 0:
        return MsgspecJSON(await make())
    # a registry write anywhere moves the version: its answer is never an older one (server/registry/pages.py)
    key = (await storage.registry_version(), p.role, filters["within"], tuple(sorted(request.query_params.multi_items())))
    return MsgspecJSON(await pages.answer(key, make))


@router.get("/registry/units.csv", **answers_file(CSV_TYPE, XLSX_TYPE))
async def export_units(request: Request, p: Viewer, lang: Literal["zh", "en"] = "zh",
                       format: Format = "csv") -> Response:  # noqa: A002 - the query parameter's name
    """Every registered unit with its SIM and last report: CSV (ICCID, IMSI and other digit strings kept as text
    in Excel and WPS) or XLSX (typed cells). Imports back unchanged through ``/registry/units/import``."""
    return await _file(await _registry(request).export_units(lang, format, p.scope.within()), "units", format, request, p)


@router.get("/registry/units.xlsx", **answers_file(XLSX_TYPE))
async def export_units_xlsx(request: Request, p: Viewer, lang: Literal["zh", "en"] = "zh") -> Response:
    """The same as ``units.csv?format=xlsx``."""
    return await _file(await _registry(request).export_units(lang, "xlsx", p.scope.within()), "units", "xlsx", request, p)


@router.post("/registry/units/import", **answers_upload(ImportReport, _IMPORT))
async def import_units(request: Request, who: Admin,
                       dry_run: Annotated[bool, Query(description="store nothing: say what would be added and changed "
                                                                  "(old and new value of each field) and which lines are "
                                                                  "refused")] = False) -> dict[str, Any]:
    """Body: the CSV or XLSX file. Good rows are stored; each bad row is reported with its line and field. Only the
    file's columns change a unit: a column the file lacks is left as stored; an empty cell empties a field that may
    be empty (insurance SN, model, vendor, institution, note...) and leaves status, stock and link type as stored."""
    return await _registry(request).import_units(await request.body(), who.name, dry_run)


@router.get("/registry/units/{sn}", **answers(RegisteredUnitDetail))
async def registry_unit(request: Request, sn: SN, _: Viewer) -> Response:
    got = await request.app.state.storage.registry_unit(sn)  # the row and its status history: one statement
    if got is None:
        raise FieldError("sn", f"unit {sn!r} not found", 404)
    out = _unit_out(got[0], request)
    out["status_history"] = got[1]
    return MsgspecJSON(timed(out, _tz(request)))


@router.put("/registry/units/{sn}", **answers(UnitRecord))
async def put_unit(request: Request, sn: SN, who: Admin, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    if body.get("sn", sn) != sn:
        raise FieldError("sn", "differs from the SN in the path")
    rec = UnitRecord.model_validate({**body, "sn": sn})
    await _registry(request).upsert_unit(rec, who.name)
    return rec.model_dump()


@router.patch("/registry/units/{sn}", **answers(Patched))
async def patch_unit(request: Request, sn: SN, _: Admin, patch: UnitPatch) -> dict[str, Any]:
    await _registry(request).patch_unit(sn, patch)
    return {"sn": sn, **patch.model_dump(exclude_unset=True)}


@router.post("/registry/units/{sn}/status", **answers(StatusSet))
async def change_status(request: Request, sn: SN, who: Admin, change: StatusChange) -> dict[str, Any]:
    at = None
    if change.at:
        try:
            at = parse_time(change.at, "at", request.app.state.settings.timezone)
        except TimeInputError as err:
            raise FieldError("at", err.message) from err
    ts = await _registry(request).set_status(sn, change.status, change.note, who.name, at)
    return {"sn": sn, "status": change.status, "from_ts": iso(ts, _tz(request))}


_SWAP = answers(SwapDone)
_SWAP["responses"][409] = {"model": ErrorBody, "description": "The unit is not in service, or the spare is not a spare"}


@router.post("/units/{sn}/swap", **_SWAP)
async def swap(request: Request, sn: SN, who: Admin, body: Swap) -> dict[str, Any]:
    """Swap a county spare in for a unit sent to repair: both status changes in one transaction."""
    return await _registry(request).swap(sn, body.spare_sn, body.note, who.name)
