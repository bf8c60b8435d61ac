"""The commands' store: commands to units (``cmd_commands``), the jobs that pace them (``cmd_jobs``) and the signed
update packages (``cmd_packages``).

One domain store of the storage (issue 15's split), on whichever engine the storage has, in the SQL both SQLite and
PostgreSQL run; ``SqlStore`` inherits it. It reads and writes only: which states a command moves through, when a
job aborts, which wave is released, what counts as expired or as pending are the command service's
(``server/commands/service.py``), which names the states it wants and the state it expects a command to be in.

Rows: what the store hands out is a ``TypedDict`` (a plain dict, as the API answers it: ``params`` and ``models``
decoded, ``off_hours`` a bool, never a command's payload or download token unless asked for); what it is handed is a
frozen dataclass. A state change names the state it moves from and happens only if the command is still in it
(compare and set), so a change read before another process's write cannot undo that write.

Reads made inside a transaction of this task (``async with storage.write():``) see the transaction's own writes:
they run on the writer connection, the others on the read pool.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from .accounts import Within, jobs_within_sql

_CHUNK = 500  # SNs per IN list (SQLite's parameter limit; PostgreSQL gets one array whatever the length)

COMMAND_COLUMNS = ("id", "job", "wave", "sn", "type", "params", "created_by", "created", "issued", "expires",
                   "state", "reason", "sends", "sent", "delivered", "started", "finished", "code", "output",
                   "package")
JOB_COLUMNS = ("id", "type", "params", "created_by", "created", "total", "rate_per_min", "abort_pct",
               "min_executed", "off_hours", "canary", "wave_size", "state", "reason", "released", "finished")
JOB_UNIT_COLUMNS = ("id", "sn", "wave", "state", "reason", "released", "sends", "sent", "started", "finished", "code",
                    "output")
PACKAGE_COLUMNS = ("id", "component", "version", "models", "sha256", "size", "created_by", "created")
# what a state change may set besides the state (see move_command)
COMMAND_FIELDS = frozenset({"reason", "delivered", "started", "finished", "code", "output"})


# rows handed out -----------------------------------------------------------------------------------------------
class CommandRow(TypedDict):
    """One command to one unit, as the API shows it."""

    id: str
    job: str | None
    wave: int
    sn: str
    type: str
    params: dict[str, Any]
    created_by: str
    created: float
    issued: int
    expires: int
    state: str
    reason: str
    sends: int
    sent: float | None
    delivered: float | None
    started: float | None
    finished: float | None
    code: int | None
    output: str
    package: str | None


class JobRow(TypedDict):
    """A command to many units, as the API shows it (``released``: units released so far)."""

    id: str
    type: str
    params: dict[str, Any]
    created_by: str
    created: float
    total: int
    rate_per_min: float | None
    abort_pct: float | None
    min_executed: int
    off_hours: bool
    canary: int
    wave_size: int
    state: str
    reason: str
    released: int
    finished: float | None


class RunningJob(JobRow):
    """A job as the dispatcher paces it: also the wall-clock time its pacing started from."""

    started_mono: float | None


class JobUnit(TypedDict):
    """One unit of a job, in creation order."""

    id: str
    sn: str
    wave: int
    state: str
    reason: str
    released: int
    sends: int
    sent: float | None
    started: float | None
    finished: float | None
    code: int | None
    output: str


class WaveCount(TypedDict):
    """A job's wave: its commands (``total``), how many are released, and how many are in each state."""

    wave: int
    total: int
    released: int
    states: dict[str, int]


class CommandRef(TypedDict):
    """A command named by id, with its unit, state and job."""

    id: str
    sn: str
    state: str
    job: str | None


class Outgoing(TypedDict):
    """A command due to be (re)sent: the signed bytes as they were first made."""

    id: str
    sn: str
    payload: bytes
    state: str
    sent: float | None


class PackageRow(TypedDict):
    """An update package as listed (``models``: the unit models it is for)."""

    id: str
    component: str
    version: str
    models: list[str]
    sha256: str
    size: int
    created_by: str
    created: float


class PackageFile(PackageRow):
    """A package with what a software_update command carries: its signature, endorsement and file."""

    signature: bytes
    endorsement: bytes
    path: str


class TokenPackage(TypedDict):
    """The package a download token was made for, with its command's state and expiry."""

    state: str
    expires: int
    path: str


# rows handed in ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewJob:
    id: str
    type: str
    params: dict[str, Any]
    created_by: str
    created: float
    total: int
    rate_per_min: float | None
    abort_pct: float | None
    min_executed: int
    off_hours: bool
    canary: int
    wave_size: int
    state: str
    started_mono: float


@dataclass(frozen=True)
class NewCommand:
    id: str
    job: str | None
    wave: int
    sn: str
    type: str
    params: dict[str, Any]
    created_by: str
    created: float
    issued: int
    expires: int
    payload: bytes
    released: bool
    state: str
    token: str | None = None
    package: str | None = None


@dataclass(frozen=True)
class Move:
    """Command ``id`` from state ``was`` to ``state``, ending with ``reason`` at ``finished``."""

    id: str
    was: str
    state: str
    reason: str
    finished: float


@dataclass(frozen=True)
class Sent:
    """Command ``id`` published once more: from state ``was`` to ``state``; ``first``: the time of its first send
    (kept), ``mono``: this send's wall-clock time (the re-send timer)."""

    id: str
    was: str
    state: str
    first: float
    mono: float


@dataclass(frozen=True)
class NewPackage:
    id: str
    component: str
    version: str
    models: list[str]
    sha256: str
    size: int
    signature: bytes
    endorsement: bytes
    path: str
    created_by: str
    created: float


def _command(row: Any) -> CommandRow:
    d: dict[str, Any] = {k: row[k] for k in COMMAND_COLUMNS}
    d["params"] = json.loads(d["params"])
    return d  # type: ignore[return-value]


def _job(row: Any, *more: str) -> Any:
    d: dict[str, Any] = {k: row[k] for k in (*JOB_COLUMNS, *more)}
    d["params"] = json.loads(d["params"])
    d["off_hours"] = bool(d["off_hours"])
    return d


def _where(sn: str | None, state: str | None, job: str | None, ctype: str | None) -> tuple[str, list[Any]]:
    where, args = [], []
    for col, v in (("sn", sn), ("state", state), ("job", job), ("type", ctype)):
        if v:
            where.append(f"{col} = ?")
            args.append(v)
    return (f"WHERE {' AND '.join(where)}" if where else ""), args


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


class CommandStore:
    async def _rows(self, sql: str, args: Any = ()) -> list[Any]:
        """Rows of ``sql``: inside this task's write transaction on the writer (its own writes seen), else pooled."""
        owner = getattr(self, "_write_owner", None)
        if owner is not None and owner is asyncio.current_task():
            async with self.write() as db:  # type: ignore[attr-defined]  # joins the transaction
                return list(await (await db.execute(sql, args)).fetchall())
        return list(await self._all(sql, args))  # type: ignore[attr-defined]

    # writing -----------------------------------------------------------------------------------------------
    async def add_commands(self, job: NewJob | None, commands: list[NewCommand]) -> None:
        """A job (or none) and its commands, in one transaction."""
        async with self.write() as db:  # type: ignore[attr-defined]
            if job is not None:
                await db.execute(
                    "INSERT INTO cmd_jobs(id, type, params, created_by, created, total, rate_per_min, abort_pct, "
                    "min_executed, off_hours, canary, wave_size, state, started_mono) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (job.id, job.type, json.dumps(job.params, default=str), job.created_by, job.created, job.total,
                     job.rate_per_min, job.abort_pct, job.min_executed, int(job.off_hours), job.canary, job.wave_size,
                     job.state, job.started_mono))
            await db.executemany(
                "INSERT INTO cmd_commands(id, job, wave, sn, type, params, created_by, created, issued, expires, "
                "payload, released, state, token, package) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(c.id, c.job, c.wave, c.sn, c.type, json.dumps(c.params, default=str), c.created_by, c.created,
                  c.issued, c.expires, c.payload, int(c.released), c.state, c.token, c.package) for c in commands])

    async def move_command(self, cid: str, was: str, state: str, **fields: Any) -> bool:
        """Move command ``cid`` from state ``was`` to ``state``, setting ``fields`` (of :data:`COMMAND_FIELDS`)
        with it; False (nothing written) when it is no longer in ``was``."""
        bad = set(fields) - COMMAND_FIELDS
        if bad:
            raise ValueError(f"move_command: not a command field: {', '.join(sorted(bad))}")
        cols = ["state", *fields]
        async with self.write() as db:  # type: ignore[attr-defined]
            cur = await db.execute(f"UPDATE cmd_commands SET {', '.join(f'{c}=?' for c in cols)} WHERE id=? AND state=?",
                                   (state, *fields.values(), cid, was))
        return bool(cur.rowcount == 1)

    async def move_commands(self, moves: list[Move]) -> None:
        """Many commands each from its state to another, ending (expired, aborted) with a reason; each only if it is
        still in the state it moves from."""
        if not moves:
            return
        async with self.write() as db:  # type: ignore[attr-defined]
            await db.executemany("UPDATE cmd_commands SET state=?, reason=?, finished=? WHERE id=? AND state=?",
                                 [(m.state, m.reason, m.finished, m.id, m.was) for m in moves])

    async def mark_sent(self, sends: list[Sent]) -> None:
        """Commands published: one more send each, its time; the new state only if still in the one it left."""
        if not sends:
            return
        async with self.write() as db:  # type: ignore[attr-defined]
            await db.executemany(
                "UPDATE cmd_commands SET state=CASE WHEN state=? THEN ? ELSE state END, sent=?, last_sent_mono=?, "
                "sends=sends+1 WHERE id=?", [(s.was, s.state, s.first, s.mono, s.id) for s in sends])

    async def release(self, job_id: str, cids: list[str]) -> None:
        """Release commands of a job to the dispatcher, and count them on the job."""
        if not cids:
            return
        async with self.write() as db:  # type: ignore[attr-defined]
            await db.executemany("UPDATE cmd_commands SET released=1 WHERE id=?", [(c,) for c in cids])
            await db.execute("UPDATE cmd_jobs SET released=released+? WHERE id=?", (len(cids), job_id))

    async def end_job(self, job_id: str, state: str, reason: str, finished: float) -> None:
        async with self.write() as db:  # type: ignore[attr-defined]
            await db.execute("UPDATE cmd_jobs SET state=?, reason=?, finished=? WHERE id=?",
                             (state, reason, finished, job_id))

    # reading commands --------------------------------------------------------------------------------------
    async def get_command(self, cid: str) -> CommandRow | None:
        rows = await self._rows(f"SELECT {', '.join(COMMAND_COLUMNS)} FROM cmd_commands WHERE id=?", (cid,))
        return _command(rows[0]) if rows else None

    async def list_commands(self, sn: str | None = None, state: str | None = None, job: str | None = None,
                            ctype: str | None = None, limit: int = 100, offset: int = 0) -> list[CommandRow]:
        """Commands, newest first, those filters set matching exactly."""
        clause, args = _where(sn, state, job, ctype)
        rows = await self._rows(f"SELECT {', '.join(COMMAND_COLUMNS)} FROM cmd_commands {clause} "
                                "ORDER BY created DESC, id LIMIT ? OFFSET ?", [*args, limit, offset])
        return [_command(r) for r in rows]

    async def count_commands(self, sn: str | None = None, state: str | None = None, job: str | None = None,
                             ctype: str | None = None) -> int:
        clause, args = _where(sn, state, job, ctype)
        return int((await self._rows(f"SELECT count(*) FROM cmd_commands {clause}", args))[0][0])

    async def commands_per_unit(self, sns: list[str], states: Sequence[str], types: Sequence[str] | None = None,
                                created_after: float | None = None) -> dict[str, int]:
        """{sn: how many of its commands are in ``states``} (of ``types``, created after ``created_after``, when
        given); units with none are left out."""
        more, extra = "", []
        if types is not None:
            more += f" AND type IN ({_marks(types)})"
            extra += list(types)
        if created_after is not None:
            more += " AND created > ?"
            extra.append(created_after)
        out: dict[str, int] = {}
        for i in range(0, len(sns), _CHUNK):
            chunk = sns[i:i + _CHUNK]
            rows = await self._rows(f"SELECT sn, count(*) FROM cmd_commands WHERE sn IN ({_marks(chunk)}) "
                                    f"AND state IN ({_marks(states)}){more} GROUP BY sn", [*chunk, *states, *extra])
            out.update({str(r[0]): int(r[1]) for r in rows})
        return out

    async def commands_in_states(self, states: Sequence[str], expires_before: float | None = None,
                                 job: str | None = None) -> list[CommandRef]:
        """The commands in ``states`` (of ``job``; expiring before ``expires_before``), oldest first."""
        sql = f"SELECT id, sn, state, job FROM cmd_commands WHERE state IN ({_marks(states)})"
        args: list[Any] = list(states)
        if expires_before is not None:
            sql += " AND expires < ?"
            args.append(expires_before)
        if job is not None:
            sql += " AND job = ?"
            args.append(job)
        rows = await self._rows(sql + " ORDER BY created, rowid", args)
        return [{"id": r[0], "sn": r[1], "state": r[2], "job": r[3]} for r in rows]

    async def due_commands(self, new: Sequence[str], again: Sequence[str], sent_before: float, max_sends: int,
                           limit: int = 1000) -> list[Outgoing]:
        """Released commands to the units online now, oldest first: those in states ``new``, and those in states
        ``again`` last sent before ``sent_before`` and sent fewer than ``max_sends`` times."""
        rows = await self._rows(
            "SELECT c.id, c.sn, c.payload, c.state, c.sent FROM cmd_commands c JOIN units u ON u.sn = c.sn "
            f"AND u.online = 1 WHERE c.released = 1 AND (c.state IN ({_marks(new)}) OR (c.state IN ({_marks(again)}) "
            "AND c.last_sent_mono < ? AND c.sends < ?)) ORDER BY c.created, c.rowid LIMIT ?",
            [*new, *again, sent_before, max_sends, limit])
        return [{"id": r[0], "sn": r[1], "payload": bytes(r[2]), "state": r[3], "sent": r[4]} for r in rows]

    async def last_commands(self, kind: str) -> dict[str, dict[str, Any]]:
        """The newest finished command of type ``kind`` per unit: {sn: {finished, state, code}} (the report's
        "last test page")."""
        rows = await self._rows("SELECT sn, finished, state, code FROM cmd_commands WHERE type=? "
                                "AND finished IS NOT NULL ORDER BY sn, finished", (kind,))
        return {r[0]: {"finished": r[1], "state": r[2], "code": r[3]} for r in rows}

    # reading jobs ------------------------------------------------------------------------------------------
    async def get_job(self, job_id: str) -> JobRow | None:
        rows = await self._rows(f"SELECT {', '.join(JOB_COLUMNS)} FROM cmd_jobs WHERE id=?", (job_id,))
        return _job(rows[0]) if rows else None  # type: ignore[no-any-return]

    async def jobs_within(self, within: Within, limit: int = 50, offset: int = 0,
                          job_id: str | None = None) -> tuple[int, list[JobRow]]:
        """(total, page of jobs, newest first) in ``within`` (:func:`~server.storage.accounts.jobs_within_sql`; None:
        every job); ``job_id``: that job alone, when it is."""
        cond, args = jobs_within_sql(within)
        if job_id is not None:
            cond, args = f"cmd_jobs.id = ? AND {cond}", [job_id, *args]
        total = await self._quick_one(f"SELECT count(*) FROM cmd_jobs WHERE {cond}", args)  # type: ignore[attr-defined]
        rows = await self._rows(f"SELECT {', '.join(JOB_COLUMNS)} FROM cmd_jobs WHERE {cond} "
                                "ORDER BY created DESC, id LIMIT ? OFFSET ?", [*args, limit, offset])
        return int(total[0]), [_job(r) for r in rows]

    async def jobs_in_state(self, state: str) -> list[RunningJob]:
        rows = await self._rows(f"SELECT {', '.join(JOB_COLUMNS)}, started_mono FROM cmd_jobs WHERE state=? "
                                "ORDER BY created, id", (state,))
        return [_job(r, "started_mono") for r in rows]

    async def job_progress(self, job_id: str) -> dict[str, int]:
        """{state: how many of the job's commands are in it}."""
        rows = await self._rows("SELECT state, count(*) FROM cmd_commands WHERE job=? GROUP BY state", (job_id,))
        return {str(r[0]): int(r[1]) for r in rows}

    async def job_units(self, job_id: str) -> list[JobUnit]:
        rows = await self._rows(f"SELECT {', '.join(JOB_UNIT_COLUMNS)} FROM cmd_commands WHERE job=? ORDER BY rowid",
                                (job_id,))
        return [dict(zip(JOB_UNIT_COLUMNS, r, strict=True)) for r in rows]  # type: ignore[misc]

    async def job_waves(self, job_id: str) -> list[WaveCount]:
        """The job's waves in order, each with its commands counted by state."""
        rows = await self._rows("SELECT wave, state, count(*), sum(released) FROM cmd_commands WHERE job=? "
                                "GROUP BY wave, state ORDER BY wave, state", (job_id,))
        waves: dict[int, WaveCount] = {}
        for wave, state, n, released in rows:
            w = waves.setdefault(int(wave), {"wave": int(wave), "total": 0, "released": 0, "states": {}})
            w["total"] += int(n)
            w["released"] += int(released or 0)
            w["states"][str(state)] = int(n)
        return list(waves.values())

    async def unreleased(self, job_id: str, wave: int, state: str) -> list[CommandRef]:
        """The commands of a job's wave not released yet and still in ``state``, in creation order."""
        rows = await self._rows("SELECT id, sn, state, job FROM cmd_commands WHERE job=? AND wave=? AND released=0 "
                                "AND state=? ORDER BY rowid", (job_id, wave, state))
        return [{"id": r[0], "sn": r[1], "state": r[2], "job": r[3]} for r in rows]

    # packages ----------------------------------------------------------------------------------------------
    async def put_package(self, p: NewPackage) -> None:
        """Keep a package (one uploaded again under the same id replaces it)."""
        async with self.write() as db:  # type: ignore[attr-defined]
            await db.execute(
                "INSERT INTO cmd_packages(id, component, version, models, sha256, size, signature, endorsement, "
                "path, created_by, created) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                "component=excluded.component, version=excluded.version, models=excluded.models, "
                "sha256=excluded.sha256, size=excluded.size, signature=excluded.signature, "
                "endorsement=excluded.endorsement, path=excluded.path, created_by=excluded.created_by, "
                "created=excluded.created",
                (p.id, p.component, p.version, json.dumps(p.models), p.sha256, p.size, p.signature, p.endorsement,
                 p.path, p.created_by, p.created))

    async def get_package(self, pid: str) -> PackageFile | None:
        rows = await self._rows(f"SELECT {', '.join(PACKAGE_COLUMNS)}, signature, endorsement, path FROM cmd_packages "
                                "WHERE id=?", (pid,))
        if not rows:
            return None
        d = dict(zip((*PACKAGE_COLUMNS, "signature", "endorsement", "path"), rows[0], strict=True))
        d.update(models=json.loads(d["models"]), signature=bytes(d["signature"]), endorsement=bytes(d["endorsement"]))
        return d  # type: ignore[return-value]

    async def list_packages(self) -> list[PackageRow]:
        """Every package, newest first."""
        rows = await self._rows(f"SELECT {', '.join(PACKAGE_COLUMNS)} FROM cmd_packages ORDER BY created DESC")
        out = []
        for r in rows:
            d = dict(zip(PACKAGE_COLUMNS, r, strict=True))
            d["models"] = json.loads(d["models"])
            out.append(d)
        return out  # type: ignore[return-value]

    async def package_by_token(self, pid: str, token: str) -> TokenPackage | None:
        """Package ``pid``'s file, if ``token`` is the download token of a command for it, with that command's state
        and expiry."""
        rows = await self._rows("SELECT c.state, c.expires, p.path FROM cmd_commands c JOIN cmd_packages p "
                                "ON p.id = c.package WHERE c.token=? AND c.package=?", (token, pid))
        return {"state": rows[0][0], "expires": int(rows[0][1]), "path": str(rows[0][2])} if rows else None
