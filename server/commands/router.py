"""HTTP API: /api/v1/commands, /api/v1/jobs, /api/v1/packages.

Roles: viewers read; engineers also send diagnostics; administrators send everything
(reboot, shutdown, set_config, software_update), abort jobs and upload packages.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..answers import Page, Time, page, timed
from ..auth import Principal, require
from ..auth.bounds import Name, Offset, SNQuery
from ..auth.openapi import ErrorBody, Open, answers, answers_file
from ..auth.scope import resolver, scoped
from ..registry.models import FieldError
from .service import CommandError, CommandService
from .service import Request as CommandRequest

router = APIRouter(prefix="/api/v1", tags=["commands"], responses={503: {
    "model": ErrorBody, "description": "The command service is not running, or the server cannot sign commands"}})
# a scoped caller's jobs: those whose every unit lies in its scope (the list through the storage's scope filter,
# one job through the ``job_id`` resolver below); decision 031
scoped("GET /api/v1/jobs", "GET /api/v1/jobs/{job_id}", "POST /api/v1/jobs/{job_id}/abort")


@resolver("job_id")
async def _job_in_scope(app: Any, value: str, principal: Principal) -> bool:
    total, _rows = await app.state.storage.jobs_within(principal.scope.within(), 1, 0, job_id=value)
    return total == 1


class Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    county: str | None = None
    region: str | None = None
    institution: str | None = None
    model: str | None = None
    vendor: str | None = None
    status: str | None = None
    terminal_type: str | None = None
    link_type: str | None = None


class SendBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    params: dict[str, Any] = {}
    sn: str | None = None
    sns: list[str] | None = Field(None, max_length=100_000)
    filter: Filter | None = None
    expires_s: int | None = Field(None, ge=10)
    rate_per_min: float | None = Field(None, gt=0)
    abort_pct: float | None = Field(None, gt=0, le=100)
    min_executed: int | None = Field(None, ge=1)
    confirm: bool = False
    off_hours: bool = False
    canary: int = Field(0, ge=0)
    wave_size: int = Field(0, ge=0)


class Command(Open):
    """One command to one unit: its state and the times it went through (``null`` until reached)."""

    id: str
    job: str | None
    wave: int
    sn: str
    type: str
    params: dict[str, Any]
    created_by: str
    created: Time
    issued: Time
    expires: Time
    state: str
    reason: str
    sends: int
    sent: Time | None
    delivered: Time | None
    started: Time | None
    finished: Time | None
    code: int | None
    output: str


class JobUnit(Open):
    id: str
    sn: str
    wave: int
    state: str
    reason: str
    sends: int
    sent: Time | None
    started: Time | None
    finished: Time | None
    code: int | None
    output: str


class Job(Open):
    id: str
    type: str
    params: dict[str, Any]
    created_by: str
    created: Time
    total: int
    state: str
    reason: str
    finished: Time | None
    progress: dict[str, int] | None = None
    units: list[JobUnit] | None = None


class Created(Open):
    """What was made: ``command`` (one unit) or ``job`` (several, or off hours)."""

    command: Command | None = None
    job: Job | None = None


class Package(Open):
    id: str
    component: str
    version: str
    models: list[str]
    sha256: str
    size: int
    created_by: str | None = None
    created: Time | None = None


_REFUSED = {404: {"model": ErrorBody, "description": "A package the parameters name does not exist"},
            409: {"model": ErrorBody, "description": "Refused as it stands (too many units without confirm, "
                                                     "pending commands, a job no longer running)"},
            503: {"model": ErrorBody, "description": "The server cannot sign commands (no key) or the command "
                                                     "service is not running"}}


def _created(model: type[BaseModel]) -> dict[str, Any]:
    out = answers(model)
    out["status_code"] = 201
    out["responses"] = {201: out["responses"].pop(200), **_REFUSED}
    return out


def _tz(request: Request) -> str:
    return request.app.state.settings.timezone  # type: ignore[no-any-return]


class AbortBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=500)


def _svc(request: Request) -> CommandService:
    svc = getattr(request.app.state, "commands", None)
    if svc is None:
        raise HTTPException(503, "the command service is not running")
    return svc


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _error(err: CommandError) -> JSONResponse:
    """The error body every operation answers (:class:`ErrorBody`), with the refusal's ``reason`` code."""
    body: dict[str, Any] = {"detail": err.message}
    if err.reason:
        body["reason"] = err.reason
    if err.field:
        body["errors"] = [{"field": err.field, "error": err.message}]
    return JSONResponse(body, status_code=err.status)


async def _in_scope(request: Request, body: SendBody, p: Principal) -> None:
    """A scoped caller names its units (sn or sns), each in its scope: any other answers 404 (issue 18)."""
    if p.province:
        return
    from ..auth.scope import not_found, unit_in_scope

    if body.filter is not None or not (body.sn or body.sns):
        raise FieldError("filter", "a user with a county or city scope names the units (sn or sns)", 422)
    index = await request.app.state.registry.index()
    for sn in [body.sn] if body.sn else body.sns or []:
        if not unit_in_scope(p, index.get(sn)):
            raise not_found("sn", sn)


async def _send(request: Request, body: SendBody, p: Principal, job: bool) -> Any:
    await _in_scope(request, body, p)
    req = CommandRequest(type=body.type, params=body.params, sn=body.sn, sns=body.sns,
                         filter=body.filter.model_dump(exclude_none=True) if body.filter else None,
                         expires_s=body.expires_s, rate_per_min=body.rate_per_min, abort_pct=body.abort_pct,
                         min_executed=body.min_executed, confirm=body.confirm, off_hours=body.off_hours,
                         canary=body.canary, wave_size=body.wave_size, job=job)
    try:
        out = await _svc(request).create(p.name, p.role, _client(request), req)
    except CommandError as err:
        return _error(err)
    from ..auth.watch import commanded

    job = out.get("job") or {}
    await commanded(request.app, p, int(job.get("total") or len(body.sns or []) or 1))
    return JSONResponse(timed(out, _tz(request)), status_code=201)


@router.post("/commands", **_created(Created))
async def send_command(request: Request, body: SendBody,
                       p: Annotated[Principal, Depends(require("engineer"))]) -> Any:
    """One unit: a command. Several units (or off_hours): a job."""
    return await _send(request, body, p, job=False)


@router.post("/jobs", **_created(Created))
async def send_job(request: Request, body: SendBody, p: Annotated[Principal, Depends(require("engineer"))]) -> Any:
    return await _send(request, body, p, job=True)


@router.get("/commands", **answers(Page[Command]))
async def list_commands(request: Request, _p: Annotated[Principal, Depends(require("viewer"))],
                        sn: SNQuery = None, state: Name = None, job: Name = None,
                        type: Name = None,  # noqa: A002 - the query parameter's name
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Offset = 0) -> dict[str, Any]:
    """Commands, newest first (a caller with a county or city scope: one of its units' at a time, ``sn``)."""
    if not _p.province:
        from ..auth.scope import not_found, unit_in_scope

        if not sn:
            raise FieldError("sn", "a user with a county or city scope lists one unit's commands at a time", 422)
        if not unit_in_scope(_p, (await request.app.state.registry.index()).get(sn)):
            raise not_found("sn", sn)
    svc = _svc(request)
    items = await svc.list_commands(sn, state, job, type, limit, offset)
    return timed(page(items, await svc.count_commands(sn, state, job, type), limit, offset), _tz(request))  # type: ignore[no-any-return]


Ident = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("/commands/{cid}", **answers(Command))
async def get_command(request: Request, cid: Ident, _p: Annotated[Principal, Depends(require("viewer"))]) -> Any:
    cmd = await _svc(request).get_command(cid)
    if cmd is None:
        raise FieldError("cid", f"no command {cid}", 404)
    return timed(cmd, _tz(request))


@router.get("/jobs", **answers(Page[Job]))
async def list_jobs(request: Request, _p: Annotated[Principal, Depends(require("viewer"))],
                    limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Offset = 0) -> dict[str, Any]:
    """Jobs, newest first (a caller with a county or city scope: the jobs whose every unit is in its scope)."""
    total, items = await _svc(request).jobs_page(limit, offset, _p.scope.within())
    return timed(page(items, total, limit, offset), _tz(request))  # type: ignore[no-any-return]


@router.get("/jobs/{job_id}", **answers(Job))
async def get_job(request: Request, job_id: Ident, _p: Annotated[Principal, Depends(require("viewer"))],
                  units: bool = True) -> Any:
    job = await _svc(request).get_job(job_id, units=units)
    if job is None:
        raise FieldError("job_id", f"no job {job_id}", 404)
    return timed(job, _tz(request))


_ABORT = answers(Job)
_ABORT["responses"][409] = _REFUSED[409]


@router.post("/jobs/{job_id}/abort", **_ABORT)
async def abort_job(request: Request, job_id: Ident, body: AbortBody,
                    p: Annotated[Principal, Depends(require("admin"))]) -> Any:
    try:
        return timed(await _svc(request).abort_job(job_id, p.name, p.role, _client(request), body.reason), _tz(request))
    except CommandError as err:
        return _error(err)


_UPLOAD = _created(Package)
_UPLOAD["openapi_extra"] = {"requestBody": {"required": True, "description": "the package (.tar.gz)", "content": {
    "application/gzip": {"schema": {"type": "string", "format": "binary"}}}}}


@router.post("/packages", **_UPLOAD)
async def upload_package(request: Request, p: Annotated[Principal, Depends(require("admin"))]) -> Any:
    """Body: the .tar.gz; headers X-Signature and X-Endorsement (base64), made by `posfleet server command
    package-build`. Verified against the fleet CA before it is kept."""
    try:
        sig = base64.b64decode(request.headers.get("x-signature", ""), validate=True)
        endo = base64.b64decode(request.headers.get("x-endorsement", ""), validate=True)
    except (binascii.Error, ValueError) as err:
        raise FieldError("X-Signature", "X-Signature and X-Endorsement must be base64") from err
    if not sig or not endo:
        raise FieldError("X-Signature" if not sig else "X-Endorsement",
                         "X-Signature and X-Endorsement headers are required")
    data = await request.body()
    try:
        out = await _svc(request).add_package(data, sig, endo, p.name, p.role, _client(request))
    except CommandError as err:
        return _error(err)
    return JSONResponse(timed(out, _tz(request)), status_code=201)


@router.get("/packages", **answers(Page[Package]))
async def list_packages(request: Request, _p: Annotated[Principal, Depends(require("viewer"))],
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Offset = 0) -> Any:
    """Update packages kept on the server, newest first."""
    items = await _svc(request).list_packages()
    return timed(page(items[offset:offset + limit], len(items), limit, offset), _tz(request))


_DOWNLOAD = answers_file("application/gzip", description="The package, or the part of it asked for (206)")
_DOWNLOAD["responses"][206] = {"description": "The byte range asked for", "content": {
    "application/gzip": {"schema": {"type": "string", "format": "binary"}}}}
_DOWNLOAD["responses"][416] = {"model": ErrorBody, "description": "The byte range cannot be served"}


@router.get("/packages/{pid}/download", **_DOWNLOAD)
async def download_package(request: Request, pid: Ident,
                           t: Annotated[str, Query(max_length=200, description="the command's download token")] = ""
                           ) -> Response:
    """For terminals: the token in the URL belongs to one signed software_update command (one unit,
    until the command ends or expires). Supports ``Range: bytes=N-`` so a broken 4G download resumes."""
    path = await _svc(request).package_for_token(pid, t) if t else None
    if path is None or not path.is_file():
        raise HTTPException(404, "no such package for this token")
    size = path.stat().st_size
    start, end = 0, size - 1
    status = 200
    rng = request.headers.get("range", "")
    if rng:
        unit, _, spec = rng.partition("=")
        lo, _, hi = spec.partition("-")
        try:
            if unit.strip() != "bytes" or "," in spec:
                raise ValueError(rng)
            start = int(lo) if lo else size - int(hi)
            end = int(hi) if lo and hi else size - 1
        except ValueError as err:
            raise HTTPException(416, "only one byte range, bytes=N- or bytes=N-M") from err
        if start < 0 or start >= size or end < start:
            return JSONResponse({"detail": f"range: {rng} is outside the package's {size} bytes",
                                 "errors": [{"field": "Range", "error": f"outside the package's {size} bytes"}]},
                                status_code=416, headers={"Content-Range": f"bytes */{size}"})
        end = min(end, size - 1)
        status = 206

    def chunks() -> Any:
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                block = f.read(min(65536, left))
                if not block:
                    return
                left -= len(block)
                yield block

    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start + 1)}
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(chunks(), status_code=status, headers=headers, media_type="application/gzip")
