"""Remote commands on the server: sign, queue, send when the unit is online, re-send, expire, and
follow every state the agent reports; jobs pace a command over many units.

* Each (command, unit) is signed once when it is created (Ed25519, the command key the fleet CA
  endorsed) and the same bytes are (re)sent: a re-send has the same id and nonce, so the agent
  reports where it stands and never runs it twice.
* A unit gets its commands when its broker state says online (``Ingest.on_state``) and at each
  dispatcher pass; a command without a final result is sent again after ``resend_after_s``, at most
  ``max_sends`` times (the agent answers a duplicate with the state it recorded, so a result lost
  when the agent died between recording it and queueing the report is asked for again); anything
  not delivered by its expiry is ``expired``.
* States come back in ``cmd`` events (``Ingest.on_committed``); they only move forward
  (queued -> sent -> delivered/running -> succeeded/failed/rejected). A late report from the
  agent overrides ``expired``: the agent is the witness of what ran.
* A job releases its units at ``rate_per_min``, wave after wave (a canary group first), only
  outside the institution's service hours when ``off_hours`` is set, and stops (the units not
  yet sent are expired with reason "job aborted") when ``abort_pct`` of the executed units failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wire import topics
from wire.codec import encode
from wire.commands import DIAGNOSTIC, FINAL, MAX_OUTPUT, TYPES, Command, SignedCommand, encode_command

from ..settings import Settings
from ..tasks import cancel
from .keys import SigningKey, SigningKeyError, load_key
from .store import command_dict, job_dict

log = logging.getLogger(__name__)

RANK = {"queued": 0, "sent": 1, "delivered": 2, "running": 3, "succeeded": 4, "failed": 4, "rejected": 4,
        "expired": 4}
AGENT_STATES = frozenset({"delivered", "running", "succeeded", "failed", "rejected"})
FAILED = ("failed", "rejected", "expired")
#: the reboot budget (catalogue S8): reboots and shutdowns per unit in any hour, together; the agent keeps its own
#: (agent commands.reboots_per_hour), which is what protects the terminal; this one answers the operator at once
DESTRUCTIVE = ("reboot", "shutdown")
REBOOTS_PER_HOUR = 3


class CommandError(Exception):
    def __init__(self, status: int, message: str, field: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.reason = reason  # a short word to act on ("rate_limited"), when there is one


@dataclass
class Request:
    """What the API asks for (validated by the router's pydantic model)."""

    type: str
    params: dict[str, Any] = field(default_factory=dict)
    sn: str | None = None
    sns: list[str] | None = None
    filter: dict[str, str] | None = None
    expires_s: int | None = None
    rate_per_min: float | None = None
    abort_pct: float | None = None
    min_executed: int | None = None
    confirm: bool = False
    off_hours: bool = False
    canary: int = 0
    wave_size: int = 0
    job: bool = False


def _new_id(prefix: str) -> str:
    return f"{prefix}{time.strftime('%Y%m%d')}-{secrets.token_hex(6)}"


class CommandService:
    def __init__(self, settings: Settings, storage: Any, ingest: Any, clock: Any, registry: Any = None,
                 audit: Any = None) -> None:
        self.settings = settings
        self.cs = settings.commands
        self.storage = storage
        self.ingest = ingest
        self.clock = clock
        self.registry = registry
        self.audit = audit
        self.key: SigningKey | None = None
        self.key_error = ""
        self._wake = asyncio.Event()
        self._results: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self.passes = 0

    @property
    def db(self) -> Any:
        return self.storage.db

    # lifecycle -----------------------------------------------------------------------------
    async def start(self, background: bool = True, results: bool = False) -> None:
        """``background=False``: an API-only process (no dispatcher, no results: they arrive through the primary's
        ingest), or with ``results`` a follower that ingests beside a leader (server/leadership.py): it records
        the results its ingest receives; the leader's dispatcher alone sends (:meth:`start_dispatcher`)."""
        self.load_key()  # (the tables are storage's: created by its migrations)
        if not background and not results:
            return
        self.ingest.on_committed.append(self.on_committed)
        self._tasks.append(asyncio.create_task(self._result_loop(), name="commands-results"))
        if background:
            await self.start_dispatcher()

    async def start_dispatcher(self) -> None:
        self.ingest.on_state.append(self.on_state)
        self._tasks.append(asyncio.create_task(self._dispatcher(), name="commands-dispatcher"))

    async def stop(self) -> None:
        await cancel(self._tasks)

    def load_key(self) -> None:
        try:
            self.key = load_key(self.settings.path(self.cs.key_file), self.settings.path(self.cs.endorsement_file))
            self.key_error = ""
            if self.key.not_after < time.time() + 30 * 86400:
                log.warning("command key %s endorsement ends in less than 30 days: rotate it "
                            "(posfleet ca command-key)", self.key.key_id)
        except SigningKeyError as err:
            self.key = None
            endo = str(self.settings.path(self.cs.endorsement_file))
            setting = "commands.endorsement_file" if str(err).startswith(endo + ":") else "commands.key_file"
            self.key_error = f"{setting}: {err}"  # the setting to fix, and the file
            log.warning("remote commands are refused (HTTP 503) until the command-signing key can be read: %s",
                        self.key_error)

    # hooks (event loop, must not block) --------------------------------------------------------
    def on_state(self, sn: str, online: bool) -> None:
        if online:
            self._wake.set()

    def on_committed(self, samples: Iterable[Any], events: Iterable[Any]) -> None:
        mine = [e for e in events if e.kind == "cmd"]
        if mine:
            self._results.put_nowait(mine)

    # creating -------------------------------------------------------------------------------------
    async def resolve_targets(self, req: Request) -> list[str]:
        if req.sn:
            sns = [req.sn]
        elif req.sns:
            sns = list(dict.fromkeys(req.sns))
        elif req.filter is not None:  # an empty filter is refused below, not taken for no filter
            filters = {k: v for k, v in req.filter.items() if v}
            allowed = {"county", "region", "institution", "model", "vendor", "status", "terminal_type", "link_type"}
            bad = set(filters) - allowed
            if bad:
                raise CommandError(422, f"unknown filter(s) {', '.join(sorted(bad))}; "
                                        f"use {', '.join(sorted(allowed))}", "filter")
            if not filters:
                raise CommandError(422, "an empty filter would select every unit; name the units", "filter")
            if not hasattr(self.storage, "registry_query"):
                raise CommandError(422, "this server has no registry: give an SN list", "filter")
            _total, rows = await self.storage.registry_query(filters, limit=1_000_000)
            sns = [r["sn"] for r in rows]
        else:
            raise CommandError(422, "give sn, sns or filter", "sn")
        for s in sns:
            if not topics.valid_sn(s):
                raise CommandError(422, f"{s!r} is not a terminal SN", "sns")
        if not sns:
            raise CommandError(422, "the filter selects no unit", "filter")
        return sns

    def _check_params(self, ctype: str, params: dict[str, Any]) -> dict[str, Any]:
        from wire.commands import PACE_RANGE, PARAMS

        if ctype == "software_update":
            allowed = {"package", "allow_downgrade", "health_timeout_s", "pace_bytes_per_s"}
            if "package" not in params:
                raise CommandError(422, "params.package: required (the id of an uploaded package)", "params.package")
            pace = params.get("pace_bytes_per_s")
            if pace is not None and (isinstance(pace, bool) or not isinstance(pace, int | float)
                                     or not PACE_RANGE[0] <= pace <= PACE_RANGE[1]):
                raise CommandError(422, f"params.pace_bytes_per_s: bytes a second, {PACE_RANGE[0]}..{PACE_RANGE[1]}",
                                   "params.pace_bytes_per_s")
        else:
            allowed = set(PARAMS[ctype])
        unknown = set(params) - allowed
        if unknown:
            raise CommandError(422, f"params: unknown parameter(s) {', '.join(sorted(unknown))} for {ctype}",
                               "params")
        if ctype == "set_config" and not isinstance(params.get("changes"), dict):
            raise CommandError(422, "params.changes: required, a table of dotted keys to values", "params.changes")
        return params

    async def create(self, who: str, role: str, client: str, req: Request) -> dict[str, Any]:
        if req.type not in TYPES:
            raise CommandError(422, f"unknown command type {req.type!r} (known: {', '.join(sorted(TYPES))})", "type")
        if role != "admin" and req.type not in DIAGNOSTIC:
            raise CommandError(403, f"{req.type} needs role admin (you are {role}); engineers may send "
                                    f"{', '.join(sorted(DIAGNOSTIC))}")
        if role not in ("admin", "engineer"):
            raise CommandError(403, f"role {role} may not send commands")
        if self.key is None:
            self.load_key()
            if self.key is None:
                raise CommandError(503, f"the server cannot sign commands: {self.key_error}")
        params = self._check_params(req.type, dict(req.params))
        expires_s = req.expires_s or self.cs.default_expiry_s
        if not 10 <= expires_s <= self.cs.max_expiry_s:
            raise CommandError(422, f"expires_s: must be 10..{self.cs.max_expiry_s}", "expires_s")
        sns = await self.resolve_targets(req)
        if len(sns) > self.cs.large_fanout and not req.confirm:
            raise CommandError(409, f"{len(sns)} units is more than {self.cs.large_fanout}: "
                                    "send again with \"confirm\": true", "confirm")
        package = None
        if req.type == "software_update":
            package = await self.get_package(str(params["package"]))
            if package is None:
                raise CommandError(404, f"no package {params['package']!r}", "params.package")
        as_job = req.job or len(sns) > 1 or req.off_hours
        async with self._lock:
            busy = await self._pending_counts(sns)
            full = [s for s in sns if busy.get(s, 0) >= self.cs.max_pending_per_unit]
            if full:
                raise CommandError(409, f"{len(full)} unit(s) already have {self.cs.max_pending_per_unit} pending "
                                        f"commands: {', '.join(full[:10])}", "sns")
            now = self.clock.now()
            if req.type in DESTRUCTIVE:
                await self._check_reboot_budget(sns, now)
            issued = int(now)
            expires = issued + expires_s
            job_id = _new_id("j") if as_job else None
            waves = self._waves(len(sns), req.canary, req.wave_size)
            shown = {k: v for k, v in params.items()}
            rows = []
            for i, sn in enumerate(sns):
                cid = _new_id("c")
                agent_params = dict(params)
                token = None
                if package is not None:
                    token = secrets.token_urlsafe(24)
                    agent_params = self._update_params(package, token, params)
                cmd = Command(id=cid, sn=sn, type=req.type, issued=issued, expires=expires,
                              nonce=secrets.token_urlsafe(16), params=agent_params)
                body = encode_command(cmd)
                payload = encode(SignedCommand(body=body, sig=self.key.sign(body), endorsement=self.key.endorsement))
                released = 0 if as_job else 1
                rows.append((cid, job_id, waves[i], sn, req.type, json.dumps(shown, default=str), who, now, issued,
                             expires, payload, released, "queued", token, package["id"] if package else None))
            async with self.storage.write() as db:
                if job_id:
                    await db.execute(
                        "INSERT INTO cmd_jobs(id, type, params, created_by, created, total, rate_per_min, abort_pct, "
                        "min_executed, off_hours, canary, wave_size, state, started_mono) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (job_id, req.type, json.dumps(shown, default=str), who, now, len(sns), req.rate_per_min,
                         req.abort_pct, req.min_executed or min(10, len(sns)), int(req.off_hours), req.canary,
                         req.wave_size, "running", time.time()))
                await db.executemany(
                    "INSERT INTO cmd_commands(id, job, wave, sn, type, params, created_by, created, issued, expires, "
                    "payload, released, state, token, package) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        if self.audit is not None:
            await self.audit.record(who, "job.create" if job_id else "command.create", job_id or sns[0], role=role,
                                    client=client, detail={
                                        "type": req.type, "params": sorted(params), "targets": sns[:1000],
                                        "count": len(sns), "expires": expires, "commands": [r[0] for r in rows][:1000],
                                        "rate_per_min": req.rate_per_min, "abort_pct": req.abort_pct,
                                        "off_hours": req.off_hours, "canary": req.canary, "wave_size": req.wave_size})
        log.info("%s sent %s to %d unit(s)%s", who, req.type, len(sns), f" as job {job_id}" if job_id else "")
        self._wake.set()
        if job_id:
            return {"job": await self.get_job(job_id)}
        return {"command": await self.get_command(rows[0][0])}

    @staticmethod
    def _waves(n: int, canary: int, wave_size: int) -> list[int]:
        out = []
        for i in range(n):
            if canary and i < canary:
                out.append(0)
            else:
                rest = i - (canary if canary else 0)
                base = 1 if canary else 0
                out.append(base + (rest // wave_size if wave_size else 0))
        return out

    def _update_params(self, package: dict[str, Any], token: str, params: dict[str, Any]) -> dict[str, Any]:
        import msgspec

        from wire.commands import Endorsement

        endo = msgspec.msgpack.decode(package["endorsement"], type=Endorsement)
        base = self.cs.package_base_url or f"http://{self.settings.http.host}:{self.settings.http.port}"
        return {
            "component": package["component"], "version": package["version"],
            "url": f"{base.rstrip('/')}/api/v1/packages/{package['id']}/download?t={token}",
            "sha256": package["sha256"], "size": int(package["size"]), "signature": bytes(package["signature"]),
            "endorsement": {"body": endo.body, "sig": endo.sig}, "models": json.loads(package["models"]),
            "allow_downgrade": bool(params.get("allow_downgrade", False)),
            "health_timeout_s": params.get("health_timeout_s", 300),
            # only when asked for: agents from before this parameter refuse parameters they do not know
            **({"pace_bytes_per_s": params["pace_bytes_per_s"]} if params.get("pace_bytes_per_s") is not None else {}),
        }

    @property
    def reboots_per_hour(self) -> int:
        """``[commands] reboots_per_hour`` when the settings have it, else the default of 3."""
        return int(getattr(self.cs, "reboots_per_hour", REBOOTS_PER_HOUR))

    async def _check_reboot_budget(self, sns: list[str], now: float) -> None:
        """Refuse (429, reason ``rate_limited``) reboots/shutdowns for units that already had their budget in the
        last hour: counted are those created, whatever their state, except the ones that never ran (rejected by
        the terminal, expired before delivery)."""
        limit = self.reboots_per_hour
        used: dict[str, int] = {}
        for i in range(0, len(sns), 500):
            chunk = sns[i:i + 500]
            cur = await self.db.execute(
                f"SELECT sn, count(*) FROM cmd_commands WHERE sn IN ({','.join('?' * len(chunk))}) "
                f"AND type IN ({','.join('?' * len(DESTRUCTIVE))}) AND created > ? "
                "AND state NOT IN ('rejected','expired') GROUP BY sn", [*chunk, *DESTRUCTIVE, now - 3600])
            used.update({r[0]: r[1] for r in await cur.fetchall()})
        over = [s for s in sns if used.get(s, 0) >= limit]
        if over:
            raise CommandError(429, f"rate_limited: {len(over)} unit(s) already had {limit} reboot/shutdown "
                                    f"command(s) in the last hour (at most {limit} an hour per unit): "
                                    f"{', '.join(over[:10])}", "sns" if len(sns) > 1 else "sn", reason="rate_limited")

    async def _pending_counts(self, sns: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(0, len(sns), 500):
            chunk = sns[i:i + 500]
            cur = await self.db.execute(
                f"SELECT sn, count(*) FROM cmd_commands WHERE sn IN ({','.join('?' * len(chunk))}) "
                "AND state IN ('queued','sent','delivered','running') GROUP BY sn", chunk)
            out.update({r[0]: r[1] for r in await cur.fetchall()})
        return out

    # reading ----------------------------------------------------------------------------------
    async def get_command(self, cid: str) -> dict[str, Any] | None:
        row = await (await self.db.execute("SELECT * FROM cmd_commands WHERE id=?", (cid,))).fetchone()
        return command_dict(row) if row else None

    @staticmethod
    def _command_filter(sn: str | None, state: str | None, job: str | None, ctype: str | None
                        ) -> tuple[str, list[Any]]:
        where, args = [], []
        for col, v in (("sn", sn), ("state", state), ("job", job), ("type", ctype)):
            if v:
                where.append(f"{col} = ?")
                args.append(v)
        return (f"WHERE {' AND '.join(where)}" if where else ""), args

    async def list_commands(self, sn: str | None = None, state: str | None = None, job: str | None = None,
                            ctype: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        clause, args = self._command_filter(sn, state, job, ctype)
        cur = await self.db.execute(f"SELECT * FROM cmd_commands {clause} ORDER BY created DESC, id LIMIT ? OFFSET ?",
                                    [*args, limit, offset])
        return [command_dict(r) for r in await cur.fetchall()]

    async def count_commands(self, sn: str | None = None, state: str | None = None, job: str | None = None,
                             ctype: str | None = None) -> int:
        clause, args = self._command_filter(sn, state, job, ctype)
        row = await (await self.db.execute(f"SELECT count(*) FROM cmd_commands {clause}", args)).fetchone()
        return int(row[0])

    async def count_jobs(self) -> int:
        row = await (await self.db.execute("SELECT count(*) FROM cmd_jobs")).fetchone()
        return int(row[0])

    async def get_job(self, job_id: str, units: bool = False) -> dict[str, Any] | None:
        row = await (await self.db.execute("SELECT * FROM cmd_jobs WHERE id=?", (job_id,))).fetchone()
        if row is None:
            return None
        d = job_dict(row)
        cur = await self.db.execute("SELECT state, count(*) FROM cmd_commands WHERE job=? GROUP BY state", (job_id,))
        d["progress"] = {r[0]: r[1] for r in await cur.fetchall()}
        if units:
            cur = await self.db.execute(
                "SELECT id, sn, wave, state, reason, released, sends, sent, started, finished, code, output "
                "FROM cmd_commands WHERE job=? ORDER BY rowid", (job_id,))
            d["units"] = [dict(r) for r in await cur.fetchall()]
        return d

    async def jobs_page(self, limit: int = 50, offset: int = 0, within: Any = None) -> tuple[int, list[dict[str, Any]]]:
        """(total, page) of the jobs, newest first; ``within`` (a scoped caller's ``Scope.within()``): the jobs
        whose every unit lies in it, through the storage's scope filter (decision 031)."""
        if within is None:
            return await self.count_jobs(), await self.list_jobs(limit, offset)
        total, rows = await self.storage.jobs_within(within, limit, offset)
        return total, [job_dict(r) for r in rows]

    async def list_jobs(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        cur = await self.db.execute("SELECT * FROM cmd_jobs ORDER BY created DESC, id LIMIT ? OFFSET ?", (limit, offset))
        return [job_dict(r) for r in await cur.fetchall()]

    async def abort_job(self, job_id: str, who: str, role: str, client: str, reason: str = "") -> dict[str, Any]:
        job = await self.get_job(job_id)
        if job is None:
            raise CommandError(404, f"no job {job_id}")
        if job["state"] != "running":
            raise CommandError(409, f"job {job_id} is {job['state']}")
        await self._abort(job_id, f"aborted by {who}" + (f": {reason}" if reason else ""))
        if self.audit is not None:
            await self.audit.record(who, "job.abort", job_id, role=role, client=client, detail={"reason": reason})
        return await self.get_job(job_id) or {}

    async def _abort(self, job_id: str, reason: str) -> None:
        now = self.clock.now()
        async with self.storage.write() as db:
            cur = await db.execute("SELECT id, sn FROM cmd_commands WHERE job=? AND state='queued'", (job_id,))
            stopped = [(r[0], r[1]) for r in await cur.fetchall()]
            await db.execute("UPDATE cmd_jobs SET state='aborted', reason=?, finished=? WHERE id=?", (reason, now, job_id))
            await db.execute("UPDATE cmd_commands SET state='expired', reason=?, finished=? WHERE job=? AND state='queued'",
                             (f"job {reason}", now, job_id))
        log.warning("job %s %s; %d unit(s) not sent", job_id, reason, len(stopped))
        if self.audit is not None:
            await self.audit.record_many([("server", "job.aborted", job_id, {"reason": reason, "not_sent": len(stopped)})]
                                         + [("server", "command.state", sn, {"id": cid, "job": job_id, "from": "queued",
                                                                             "to": "expired", "reason": "job aborted"})
                                            for cid, sn in stopped])

    # packages ----------------------------------------------------------------------------------
    async def get_package(self, pid: str) -> dict[str, Any] | None:
        row = await (await self.db.execute("SELECT * FROM cmd_packages WHERE id=?", (pid,))).fetchone()
        return dict(row) if row else None

    async def list_packages(self) -> list[dict[str, Any]]:
        cur = await self.db.execute("SELECT id, component, version, models, sha256, size, created_by, created "
                                    "FROM cmd_packages ORDER BY created DESC")
        return [dict(r, models=json.loads(r["models"])) for r in await cur.fetchall()]

    async def add_package(self, data: bytes, signature: bytes, endorsement_raw: bytes, who: str, role: str,
                          client: str) -> dict[str, Any]:
        """Verify and keep an update package (signed by an endorsed "update" key)."""
        import hashlib

        import msgspec

        from wire.commands import Endorsement
        from wire.package import PackageError, read_manifest, statement
        from wire.signing import SignatureError, ca_public_key, check_endorsement, verify_ed25519

        try:
            endo = msgspec.msgpack.decode(endorsement_raw, type=Endorsement)
        except msgspec.DecodeError as err:
            raise CommandError(422, f"endorsement: unreadable: {err}", "endorsement") from err
        digest = hashlib.sha256(data).hexdigest()
        folder = self.settings.path(self.cs.packages_dir)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".upload-{secrets.token_hex(4)}.tar.gz"
        tmp.write_bytes(data)
        try:
            try:
                manifest = read_manifest(tmp)
            except PackageError as err:
                raise CommandError(422, f"package: {err}", "package") from err
            try:
                key = check_endorsement(ca_public_key(self.settings.path(self.settings.mqtt.ca_file)), endo, "update")
                verify_ed25519(key.public_key, statement(manifest.component, manifest.version, digest), signature)
            except SignatureError as err:
                raise CommandError(422, f"signature: {err}", "signature") from err
            pid = f"{manifest.component}-{manifest.version}-{digest[:8]}"
            path = folder / f"{pid}.tar.gz"
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        async with self.storage.write() as db:
            await db.execute(
                "INSERT INTO cmd_packages(id, component, version, models, sha256, size, signature, endorsement, "
                "path, created_by, created) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                "component=excluded.component, version=excluded.version, models=excluded.models, "
                "sha256=excluded.sha256, size=excluded.size, signature=excluded.signature, "
                "endorsement=excluded.endorsement, path=excluded.path, created_by=excluded.created_by, "
                "created=excluded.created",
                (pid, manifest.component, manifest.version, json.dumps(manifest.models), digest, len(data), signature,
                 endorsement_raw, str(path), who, self.clock.now()))
        if self.audit is not None:
            await self.audit.record(who, "package.add", pid, role=role, client=client,
                                    detail={"sha256": digest, "size": len(data), "key": key.key_id})
        return {"id": pid, "component": manifest.component, "version": manifest.version, "models": manifest.models,
                "sha256": digest, "size": len(data)}

    async def package_for_token(self, pid: str, token: str) -> Path | None:
        """The package file if ``token`` belongs to a live software_update command for it."""
        row = await (await self.db.execute(
            "SELECT c.state, c.expires, p.path FROM cmd_commands c JOIN cmd_packages p ON p.id = c.package "
            "WHERE c.token=? AND c.package=?", (token, pid))).fetchone()
        if row is None or row[0] in FINAL or row[1] < self.clock.now():
            return None
        return Path(row[2])

    # dispatching ---------------------------------------------------------------------------------
    async def _dispatcher(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.cs.dispatch_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                async with self._lock:
                    await self.dispatch_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("command dispatch pass failed")

    async def dispatch_once(self) -> None:
        self.passes += 1
        await self._expire()
        await self._jobs()
        await self._send()

    async def _expire(self) -> None:
        now = self.clock.now()
        cur = await self.db.execute("SELECT id, sn, state, job FROM cmd_commands WHERE state IN ('queued','sent') "
                                    "AND expires < ?", (now,))
        rows = list(await cur.fetchall())
        if not rows:
            return
        async with self.storage.write() as db:
            await db.executemany(
                "UPDATE cmd_commands SET state='expired', finished=?, reason=? WHERE id=? AND state IN ('queued','sent')",
                [(now, "expired before the unit answered" if r[2] == "sent" else "expired before it could be sent", r[0])
                 for r in rows])
        if self.audit is not None:
            await self.audit.record_many([("server", "command.state", r[1], {"id": r[0], "job": r[3], "from": r[2],
                                                                              "to": "expired"}) for r in rows])

    async def _jobs(self) -> None:
        cur = await self.db.execute("SELECT * FROM cmd_jobs WHERE state='running'")
        for job in list(await cur.fetchall()):
            await self._job_pass(job)

    async def _job_pass(self, job: Any) -> None:
        jid = job["id"]
        db = self.db
        cur = await db.execute(
            "SELECT wave, count(*), sum(released), sum(state IN ('succeeded','failed','rejected','expired')), "
            "sum(state IN ('failed','rejected','expired')) FROM cmd_commands WHERE job=? GROUP BY wave ORDER BY wave",
            (jid,))
        waves = [tuple(r) for r in await cur.fetchall()]
        finished = sum(w[3] for w in waves)
        failed = sum(w[4] for w in waves)
        total = sum(w[1] for w in waves)
        pct = job["abort_pct"]
        if pct is not None and finished >= max(1, job["min_executed"]) and failed * 100.0 >= pct * finished \
                and finished < total:
            await self._abort(jid, f"aborted: {failed} of {finished} executed units failed (threshold {pct:g} %)")
            return
        if finished >= total:
            async with self.storage.write() as wdb:
                await wdb.execute("UPDATE cmd_jobs SET state='finished', finished=? WHERE id=?", (self.clock.now(), jid))
            if self.audit is not None:
                await self.audit.record("server", "job.finished", jid, detail={"failed": failed, "total": total})
            return
        # the wave to release from: the first one not fully released, once every earlier wave is done
        wave = None
        for w, count, released, done, _f in waves:
            if released < count:
                wave = w
                break
            if done < count:
                return  # an earlier wave is still running
        if wave is None:
            return
        budget = total
        if job["rate_per_min"]:
            elapsed = max(0.0, time.time() - float(job["started_mono"]))
            budget = int(math.floor(job["rate_per_min"] * elapsed / 60.0)) + 1 - int(job["released"])
        if budget <= 0:
            return
        cur = await db.execute("SELECT id, sn FROM cmd_commands WHERE job=? AND wave=? AND released=0 "
                               "AND state='queued' ORDER BY rowid", (jid, wave))
        candidates = [(r[0], r[1]) for r in await cur.fetchall()]
        if job["off_hours"]:
            candidates = await self._outside_hours(candidates)
        chosen = candidates[:budget]
        if not chosen:
            return
        async with self.storage.write() as wdb:
            await wdb.executemany("UPDATE cmd_commands SET released=1 WHERE id=?", [(c,) for c, _ in chosen])
            await wdb.execute("UPDATE cmd_jobs SET released=released+? WHERE id=?", (len(chosen), jid))

    async def _outside_hours(self, candidates: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if self.registry is None:
            return candidates
        index = await self.registry.index()
        when = datetime.fromtimestamp(self.clock.now(), UTC)
        out = []
        for cid, sn in candidates:
            info = index.get(sn)
            hours = info.hours if info is not None else self.registry.hours(None)
            if not hours.contains(when):
                out.append((cid, sn))
        return out

    async def _send(self) -> None:
        mono = time.time()
        db = self.db
        cur = await db.execute(
            "SELECT c.id, c.sn, c.payload, c.state FROM cmd_commands c JOIN units u ON u.sn = c.sn AND u.online = 1 "
            "WHERE c.released = 1 AND (c.state = 'queued' OR (c.state IN ('sent','delivered','running') "
            "AND c.last_sent_mono < ? AND c.sends < ?)) ORDER BY c.created, c.rowid LIMIT 1000",
            (mono - self.cs.resend_after_s, self.cs.max_sends))
        rows = list(await cur.fetchall())
        if not rows:
            return
        now = self.clock.now()
        sent, first = [], []
        for cid, sn, payload, state in rows:
            if not self.ingest.publish(topics.topic(sn, topics.COMMAND), bytes(payload), 1):
                break  # not connected to the broker: next pass
            sent.append((now, mono, cid))
            if state == "queued":
                first.append((cid, sn))
        async with self.storage.write() as wdb:  # after the publishes: the lock is not held across network I/O
            await wdb.executemany("UPDATE cmd_commands SET state=CASE WHEN state='queued' THEN 'sent' ELSE state END, "
                                  "sent=coalesce(sent, ?), last_sent_mono=?, sends=sends+1 WHERE id=?", sent)
        if sent:
            log.info("sent %d command(s) (%d first time)", len(sent), len(first))
        if self.audit is not None and first:
            await self.audit.record_many([("server", "command.state", sn, {"id": cid, "from": "queued", "to": "sent"})
                                          for cid, sn in first])

    # results ---------------------------------------------------------------------------------------
    async def _result_loop(self) -> None:
        while True:
            events = await self._results.get()
            try:
                async with self._lock:
                    await self.apply_results(events)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not apply %d command result(s)", len(events))
            self._wake.set()  # a job may release its next units

    async def apply_results(self, events: list[Any]) -> None:
        audit_rows: list[tuple[str, str, str, dict[str, Any]]] = []
        async with self.storage.write() as db:
            for e in events:
                data = e.data if isinstance(e.data, dict) else {}
                cid, state = str(data.get("id", "?")), str(data.get("state", ""))
                row = await (await db.execute("SELECT sn, state, job FROM cmd_commands WHERE id=?", (cid,))).fetchone()
                if row is None or row[0] != e.sn:
                    # not a command this server sent to this unit: someone else's, forged or replayed; keep the trace
                    audit_rows.append((e.sn, "command.unmatched_result", e.sn, {
                        "id": cid[:64], "type": str(data.get("type", ""))[:32], "state": state[:16],
                        "output": str(data.get("output", ""))[:500]}))
                    continue
                cur_state = row[1]
                if state not in AGENT_STATES or cur_state in ("succeeded", "failed", "rejected"):
                    continue
                if cur_state != "expired" and RANK[state] <= RANK[cur_state]:
                    continue
                output = str(data.get("output") or "")[:MAX_OUTPUT]
                code = data.get("code")
                received = data.get("received")
                started = data.get("started") or received
                if state in ("delivered", "running"):
                    await db.execute("UPDATE cmd_commands SET state=?, delivered=coalesce(delivered, ?), "
                                     "started=coalesce(started, ?) WHERE id=?", (state, received, started, cid))
                else:
                    reason = output[:500] if state == "rejected" else ""
                    await db.execute(
                        "UPDATE cmd_commands SET state=?, delivered=coalesce(delivered, ?), started=coalesce(started, ?), "
                        "finished=?, code=?, output=?, reason=? WHERE id=?",
                        (state, received, started, data.get("finished") or self.clock.now(),
                         code if isinstance(code, int) else None, output, reason, cid))
                audit_rows.append((e.sn, "command.state", e.sn, {"id": cid, "job": row[2], "from": cur_state, "to": state,
                                                                 "code": code}))
        if self.audit is not None:
            await self.audit.record_many(audit_rows)
