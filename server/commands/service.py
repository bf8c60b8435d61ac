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
from ..storage.commands import (
    CommandRow,
    JobRow,
    Move,
    NewCommand,
    NewJob,
    NewPackage,
    PackageRow,
    RunningJob,
    Sent,
)
from ..tasks import cancel
from .keys import SigningKey, SigningKeyError, load_key

log = logging.getLogger(__name__)

RANK = {"queued": 0, "sent": 1, "delivered": 2, "running": 3, "succeeded": 4, "failed": 4, "rejected": 4,
        "expired": 4}
AGENT_STATES = frozenset({"delivered", "running", "succeeded", "failed", "rejected"})
FAILED = ("failed", "rejected", "expired")
DONE = ("succeeded", *FAILED)  # a unit of a job that has executed (or never will)
PENDING = ("queued", "sent", "delivered", "running")  # counted against [commands] max_pending_per_unit
EXPIRABLE = ("queued", "sent")  # past its expiry in these, a command is expired; beyond, the agent has it
RESEND = ("sent", "delivered", "running")  # sent again after resend_after_s, up to max_sends times
NEVER_RAN = ("rejected", "expired")  # not counted against the reboot budget
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
            rows: list[NewCommand] = []
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
                rows.append(NewCommand(cid, job_id, waves[i], sn, req.type, shown, who, now, issued, expires, payload,
                                       released=not as_job,  # a job's units wait for their wave (_job_pass)
                                       state="queued", token=token, package=package["id"] if package else None))
            job = None if job_id is None else NewJob(
                job_id, req.type, shown, who, now, len(sns), req.rate_per_min, req.abort_pct,
                req.min_executed or min(10, len(sns)), req.off_hours, req.canary, req.wave_size, "running", time.time())
            await self.storage.add_commands(job, rows)
        if self.audit is not None:
            await self.audit.record(who, "job.create" if job_id else "command.create", job_id or sns[0], role=role,
                                    client=client, detail={
                                        "type": req.type, "params": sorted(params), "targets": sns[:1000],
                                        "count": len(sns), "expires": expires, "commands": [r.id for r in rows][:1000],
                                        "rate_per_min": req.rate_per_min, "abort_pct": req.abort_pct,
                                        "off_hours": req.off_hours, "canary": req.canary, "wave_size": req.wave_size})
        log.info("%s sent %s to %d unit(s)%s", who, req.type, len(sns), f" as job {job_id}" if job_id else "")
        self._wake.set()
        if job_id:
            return {"job": await self.get_job(job_id)}
        return {"command": await self.get_command(rows[0].id)}

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

    def _update_params(self, package: Any, token: str, params: dict[str, Any]) -> dict[str, Any]:
        import msgspec

        from wire.commands import Endorsement

        endo = msgspec.msgpack.decode(package["endorsement"], type=Endorsement)
        base = self.cs.package_base_url or f"http://{self.settings.http.host}:{self.settings.http.port}"
        return {
            "component": package["component"], "version": package["version"],
            "url": f"{base.rstrip('/')}/api/v1/packages/{package['id']}/download?t={token}",
            "sha256": package["sha256"], "size": int(package["size"]), "signature": bytes(package["signature"]),
            "endorsement": {"body": endo.body, "sig": endo.sig}, "models": list(package["models"]),
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
        used = await self.storage.commands_per_unit(sns, [st for st in RANK if st not in NEVER_RAN],
                                                    types=DESTRUCTIVE, created_after=now - 3600)
        over = [s for s in sns if used.get(s, 0) >= limit]
        if over:
            raise CommandError(429, f"rate_limited: {len(over)} unit(s) already had {limit} reboot/shutdown "
                                    f"command(s) in the last hour (at most {limit} an hour per unit): "
                                    f"{', '.join(over[:10])}", "sns" if len(sns) > 1 else "sn", reason="rate_limited")

    async def _pending_counts(self, sns: list[str]) -> dict[str, int]:
        return await self.storage.commands_per_unit(sns, PENDING)  # type: ignore[no-any-return]

    # reading ----------------------------------------------------------------------------------
    async def get_command(self, cid: str) -> CommandRow | None:
        return await self.storage.get_command(cid)  # type: ignore[no-any-return]

    async def list_commands(self, sn: str | None = None, state: str | None = None, job: str | None = None,
                            ctype: str | None = None, limit: int = 100, offset: int = 0) -> list[CommandRow]:
        return await self.storage.list_commands(sn, state, job, ctype, limit, offset)  # type: ignore[no-any-return]

    async def count_commands(self, sn: str | None = None, state: str | None = None, job: str | None = None,
                             ctype: str | None = None) -> int:
        return await self.storage.count_commands(sn, state, job, ctype)  # type: ignore[no-any-return]

    async def get_job(self, job_id: str, units: bool = False) -> dict[str, Any] | None:
        """The job with its commands counted by state (``progress``) and, with ``units``, each of them."""
        job = await self.storage.get_job(job_id)
        if job is None:
            return None
        d: dict[str, Any] = dict(job, progress=await self.storage.job_progress(job_id))
        if units:
            d["units"] = await self.storage.job_units(job_id)
        return d

    async def jobs_page(self, limit: int = 50, offset: int = 0, within: Any = None) -> tuple[int, list[JobRow]]:
        """(total, page) of the jobs, newest first; ``within`` (a scoped caller's ``Scope.within()``): the jobs
        whose every unit lies in it, through the storage's scope filter (decision 031)."""
        return await self.storage.jobs_within(within, limit, offset)  # type: ignore[no-any-return]

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
        """Stop a job: its units not sent yet (queued, released or not) are expired; those sent run to their end."""
        now = self.clock.now()
        async with self.storage.write():
            unsent = await self.storage.commands_in_states(("queued",), job=job_id)
            await self.storage.end_job(job_id, "aborted", reason, now)
            await self.storage.move_commands([Move(c["id"], "queued", "expired", f"job {reason}", now) for c in unsent])
        stopped = [(c["id"], c["sn"]) for c in unsent]
        log.warning("job %s %s; %d unit(s) not sent", job_id, reason, len(stopped))
        if self.audit is not None:
            await self.audit.record_many([("server", "job.aborted", job_id, {"reason": reason, "not_sent": len(stopped)})]
                                         + [("server", "command.state", sn, {"id": cid, "job": job_id, "from": "queued",
                                                                             "to": "expired", "reason": "job aborted"})
                                            for cid, sn in stopped])

    # packages ----------------------------------------------------------------------------------
    async def get_package(self, pid: str) -> Any:
        return await self.storage.get_package(pid)

    async def list_packages(self) -> list[PackageRow]:
        return await self.storage.list_packages()  # type: ignore[no-any-return]

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
        await self.storage.put_package(NewPackage(pid, manifest.component, manifest.version, list(manifest.models), digest,
                                                  len(data), signature, endorsement_raw, str(path), who,
                                                  self.clock.now()))
        if self.audit is not None:
            await self.audit.record(who, "package.add", pid, role=role, client=client,
                                    detail={"sha256": digest, "size": len(data), "key": key.key_id})
        return {"id": pid, "component": manifest.component, "version": manifest.version, "models": manifest.models,
                "sha256": digest, "size": len(data)}

    async def package_for_token(self, pid: str, token: str) -> Path | None:
        """The package file if ``token`` belongs to a live software_update command for it (not ended, not past its
        expiry)."""
        got = await self.storage.package_by_token(pid, token)
        if got is None or got["state"] in FINAL or got["expires"] < self.clock.now():
            return None
        return Path(got["path"])

    # dispatching ---------------------------------------------------------------------------------
    async def _dispatcher(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.cs.dispatch_interval_s):  # not wait_for, which on 3.11 can swallow a cancel
                    await self._wake.wait()
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
        """A command still queued or sent (not yet delivered) past its expiry is expired."""
        now = self.clock.now()
        rows = await self.storage.commands_in_states(EXPIRABLE, expires_before=now)
        if not rows:
            return
        await self.storage.move_commands([
            Move(r["id"], r["state"], "expired",
                 "expired before the unit answered" if r["state"] == "sent" else "expired before it could be sent", now)
            for r in rows])
        if self.audit is not None:
            await self.audit.record_many([("server", "command.state", r["sn"], {"id": r["id"], "job": r["job"],
                                                                                 "from": r["state"], "to": "expired"})
                                          for r in rows])

    async def _jobs(self) -> None:
        for job in await self.storage.jobs_in_state("running"):
            await self._job_pass(job)

    async def _job_pass(self, job: RunningJob) -> None:
        """Finish the job when every unit is done, abort it past its failure threshold, else release the next units
        of the first wave not wholly released (once the waves before it are done), at its rate."""
        jid = job["id"]
        waves = await self.storage.job_waves(jid)
        finished = sum(w["states"].get(st, 0) for w in waves for st in DONE)
        failed = sum(w["states"].get(st, 0) for w in waves for st in FAILED)
        total = sum(w["total"] for w in waves)
        pct = job["abort_pct"]
        if pct is not None and finished >= max(1, job["min_executed"]) and failed * 100.0 >= pct * finished \
                and finished < total:
            await self._abort(jid, f"aborted: {failed} of {finished} executed units failed (threshold {pct:g} %)")
            return
        if finished >= total:
            await self.storage.end_job(jid, "finished", job["reason"], self.clock.now())
            if self.audit is not None:
                await self.audit.record("server", "job.finished", jid, detail={"failed": failed, "total": total})
            return
        # the wave to release from: the first one not fully released, once every earlier wave is done
        wave = None
        for w in waves:
            if w["released"] < w["total"]:
                wave = w["wave"]
                break
            if sum(w["states"].get(st, 0) for st in DONE) < w["total"]:
                return  # an earlier wave is still running
        if wave is None:
            return
        budget = total
        if job["rate_per_min"]:
            elapsed = max(0.0, time.time() - float(job["started_mono"] or 0.0))
            budget = int(math.floor(job["rate_per_min"] * elapsed / 60.0)) + 1 - int(job["released"])
        if budget <= 0:
            return
        candidates = [(c["id"], c["sn"]) for c in await self.storage.unreleased(jid, wave, "queued")]
        if job["off_hours"]:
            candidates = await self._outside_hours(candidates)
        chosen = candidates[:budget]
        if chosen:
            await self.storage.release(jid, [c for c, _ in chosen])

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
        """Publish the released commands due to the units online now: the queued ones (then sent), and those the
        unit has not finished, again after ``resend_after_s``, at most ``max_sends`` times."""
        mono = time.time()
        rows = await self.storage.due_commands(("queued",), RESEND, mono - self.cs.resend_after_s, self.cs.max_sends)
        if not rows:
            return
        now = self.clock.now()
        sent: list[Sent] = []
        first = []
        for r in rows:
            if not self.ingest.publish(topics.topic(r["sn"], topics.COMMAND), r["payload"], 1):
                break  # not connected to the broker: next pass
            sent.append(Sent(r["id"], r["state"], "sent" if r["state"] == "queued" else r["state"],
                             r["sent"] if r["sent"] is not None else now, mono))
            if r["state"] == "queued":
                first.append((r["id"], r["sn"]))
        await self.storage.mark_sent(sent)  # after the publishes: the write lock is not held across network I/O
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
        """The states the agents report, in one transaction: a state only moves forward (a final one is kept; a late
        report overrides ``expired``: the agent is the witness of what ran); the first delivery and start times
        are kept. A result for a command this server did not send to that unit is audited, not applied."""
        audit_rows: list[tuple[str, str, str, dict[str, Any]]] = []
        async with self.storage.write():
            for e in events:
                data = e.data if isinstance(e.data, dict) else {}
                cid, state = str(data.get("id", "?")), str(data.get("state", ""))
                cmd = await self.storage.get_command(cid)  # inside the transaction: sees this batch's own changes
                if cmd is None or cmd["sn"] != e.sn:
                    # not a command this server sent to this unit: someone else's, forged or replayed; keep the trace
                    audit_rows.append((e.sn, "command.unmatched_result", e.sn, {
                        "id": cid[:64], "type": str(data.get("type", ""))[:32], "state": state[:16],
                        "output": str(data.get("output", ""))[:500]}))
                    continue
                cur_state = cmd["state"]
                if state not in AGENT_STATES or cur_state in ("succeeded", "failed", "rejected"):
                    continue
                if cur_state != "expired" and RANK[state] <= RANK[cur_state]:
                    continue
                output = str(data.get("output") or "")[:MAX_OUTPUT]
                code = data.get("code")
                received = data.get("received")
                started = data.get("started") or received
                times = {"delivered": cmd["delivered"] if cmd["delivered"] is not None else received,
                         "started": cmd["started"] if cmd["started"] is not None else started}
                if state in ("delivered", "running"):
                    moved = await self.storage.move_command(cid, cur_state, state, **times)
                else:
                    moved = await self.storage.move_command(
                        cid, cur_state, state, **times, finished=data.get("finished") or self.clock.now(),
                        code=code if isinstance(code, int) else None, output=output,
                        reason=output[:500] if state == "rejected" else "")
                if moved:
                    audit_rows.append((e.sn, "command.state", e.sn, {"id": cid, "job": cmd["job"], "from": cur_state,
                                                                     "to": state, "code": code}))
        if self.audit is not None:
            await self.audit.record_many(audit_rows)
