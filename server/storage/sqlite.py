"""SQLite backend through aiosqlite: WAL, one writer connection and a small pool of read-only connections.

Every write goes through the single writer connection, inside ``async with storage.write() as db:``: one
``asyncio.Lock`` makes each write transaction run alone on it, committed at the end of the block and rolled back
if the block raises (cancellation included). The ``sqlite3`` module keeps ONE implicit transaction per
connection, shared by every coroutine using it, so without the lock a writer that rolled back (after
``SQLITE_BUSY``, an error or a cancelled request) while ingest awaited between its statements silently undid
ingest's inserted samples, which were then acknowledged to the agent and lost; and a commit could publish another
writer's half-done transaction. Never write on ``self.db`` outside ``write()``. Every
standalone read (a query that does not need to see an uncommitted write of the same transaction) takes a
connection from the read pool: in WAL mode readers run beside the writer and beside each other, and the
``sqlite3`` module releases the GIL while a statement runs, so a long scan on one connection no longer makes
every other request queue behind it (aiosqlite runs each connection's statements on that connection's own
thread, one at a time). A reader sees everything committed before its statement starts.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from .base import INGEST_STATS_KEY, PENDING_KEY, EventRow, SampleRow, UnitQuery

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    sn TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    online INTEGER NOT NULL DEFAULT 0,
    state_ts REAL,
    state_reason TEXT NOT NULL DEFAULT '',
    agent_version TEXT NOT NULL DEFAULT '',
    latest_ts INTEGER,
    latest TEXT,
    inventory TEXT,
    identity TEXT
);
CREATE TABLE IF NOT EXISTS samples (
    sn TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    interval INTEGER NOT NULL,
    clock INTEGER NOT NULL,
    connected INTEGER NOT NULL,
    rtt_ms INTEGER,
    checks TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (sn, epoch, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS samples_sn_ts ON samples(sn, ts);
CREATE INDEX IF NOT EXISTS samples_ts ON samples(ts);
CREATE INDEX IF NOT EXISTS units_last_seen ON units(last_seen, sn);
CREATE TABLE IF NOT EXISTS events (
    sn TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (sn, epoch, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_sn_ts ON events(sn, ts);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0  -- 0: in force; else when it was revoked (epoch seconds)
);
"""

# Registry, roll-ups, outages and alerts (issue 4).
_FLEET_SCHEMA = """
CREATE TABLE IF NOT EXISTS institutions (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    county TEXT NOT NULL DEFAULT '',
    region TEXT NOT NULL DEFAULT '',
    type TEXT NOT NULL DEFAULT '',
    hours TEXT NOT NULL DEFAULT '',
    contact TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS institutions_county ON institutions(county);
CREATE TABLE IF NOT EXISTS registry (
    sn TEXT PRIMARY KEY,
    insurance_sn TEXT NOT NULL DEFAULT '',
    terminal_type TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    vendor TEXT NOT NULL DEFAULT '',
    institution TEXT,
    stock_type TEXT NOT NULL DEFAULT 'deployed',
    status TEXT NOT NULL DEFAULT 'in_service',
    link_type TEXT NOT NULL DEFAULT '4g_vpdn',
    note TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT 'admin',
    registered_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS registry_institution ON registry(institution);
CREATE INDEX IF NOT EXISTS registry_filter ON registry(institution, status, link_type, stock_type, sn);
CREATE INDEX IF NOT EXISTS registry_insurance_sn ON registry(insurance_sn);
CREATE TABLE IF NOT EXISTS status_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sn TEXT NOT NULL,
    from_ts INTEGER NOT NULL,
    status TEXT NOT NULL,
    by TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS status_history_sn ON status_history(sn, from_ts);
CREATE TABLE IF NOT EXISTS rollup_day (
    day INTEGER NOT NULL,
    sn TEXT NOT NULL,
    service INTEGER NOT NULL,
    intact INTEGER NOT NULL,
    netok INTEGER NOT NULL,
    nodata INTEGER NOT NULL,
    hours BLOB NOT NULL,
    PRIMARY KEY (day, sn)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollup_day_sn ON rollup_day(sn, day);
CREATE TABLE IF NOT EXISTS rollup_month (
    month INTEGER NOT NULL,
    sn TEXT NOT NULL,
    service INTEGER NOT NULL,
    intact INTEGER NOT NULL,
    netok INTEGER NOT NULL,
    nodata INTEGER NOT NULL,
    PRIMARY KEY (month, sn)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outages (
    county TEXT NOT NULL,
    minute INTEGER NOT NULL,
    units INTEGER NOT NULL,
    sns TEXT NOT NULL,
    PRIMARY KEY (county, minute)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outages_minute ON outages(minute);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    sn TEXT,
    county TEXT,
    opened_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    closed_ts INTEGER,
    message TEXT NOT NULL,
    data TEXT NOT NULL,
    acked_by TEXT,
    acked_ts REAL,
    webhook TEXT NOT NULL DEFAULT 'none',
    webhook_attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts(closed_ts, kind);
CREATE TABLE IF NOT EXISTS data_day (
    sn TEXT NOT NULL,
    day INTEGER NOT NULL,
    within INTEGER NOT NULL,
    carry INTEGER NOT NULL,
    resets INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    first_ts INTEGER NOT NULL,
    first_bytes INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    last_bytes INTEGER NOT NULL,
    PRIMARY KEY (sn, day)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS data_day_day ON data_day(day);
CREATE TABLE IF NOT EXISTS cell_outages (
    tac INTEGER NOT NULL,
    cell INTEGER NOT NULL,
    minute INTEGER NOT NULL,
    county TEXT NOT NULL,
    units INTEGER NOT NULL,
    sns TEXT NOT NULL,
    PRIMARY KEY (tac, cell, minute)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cell_outages_minute ON cell_outages(minute);
CREATE TABLE IF NOT EXISTS slot_hour (
    day INTEGER NOT NULL,
    sn TEXT NOT NULL,
    hour INTEGER NOT NULL,
    codes BLOB NOT NULL,
    reasons TEXT,
    samples INTEGER NOT NULL,
    PRIMARY KEY (day, sn, hour)
) WITHOUT ROWID;
"""

# Ingest's dead letters: a message that passed the boundary but could not be stored even alone. Kept (bounded)
# with its reason and its validated rows, so nothing is lost and an administrator can see and replay it.
_DEAD_LETTER_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    sn TEXT NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
"""
DEAD_LETTERS_KEPT = 10_000

# Schema versions (SQLite's PRAGMA user_version). A database is brought up to SCHEMA_VERSION when the server opens
# it, one step at a time, each step idempotent (CREATE ... IF NOT EXISTS, so a step cut short by a crash is simply
# run again); a database written by a newer server is refused before anything starts. A database from before
# versions existed is version 0: every table it has is kept as it is.
SCHEMA_VERSION = 2
_MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "the schema of issues 2-11 (units, samples, events, registry, roll-ups, alerts, ...)", ("_SCHEMA", "_FLEET_SCHEMA")),
    (2, "issue 12: ingest dead letters, events by time (retention)", ("_DEAD_LETTER_SCHEMA",)),
]


class SchemaTooNew(RuntimeError):
    """The database was written by a newer server: refused, never downgraded."""


def schema_version(path: Path) -> int | None:
    """The schema version of the database at ``path`` (None when there is no database yet), read-only."""
    if not path.exists():
        return None
    con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("PRAGMA user_version").fetchone()[0])
    finally:
        con.close()


def too_new(path: Path) -> str:
    """A sentence when the database at ``path`` is newer than this server, else ""."""
    v = schema_version(path)
    if v is not None and v > SCHEMA_VERSION:
        return (f"database schema version {v} is newer than this server's {SCHEMA_VERSION} (written by a newer "
                "posfleet): upgrade the server, or restore the backup taken before the upgrade")
    return ""

_DATA_COLS = ("day", "within", "carry", "resets", "samples", "first_ts", "first_bytes", "last_ts", "last_bytes")

_REGISTRY_FIELDS = ("insurance_sn", "terminal_type", "model", "vendor", "institution", "stock_type", "status",
                    "link_type", "note")
_INSTITUTION_FIELDS = ("name", "county", "region", "type", "hours", "contact")
_REGISTRY_SORTS = {"sn": "r.sn", "institution": "r.institution", "county": "i.county", "status": "r.status",
                   "last_seen": "u.last_seen", "online": "u.online"}

_UNIT_SORTS = {"sn": "sn", "last_seen": "last_seen", "first_seen": "first_seen", "online": "online"}


def _unit(row: aiosqlite.Row) -> dict[str, Any]:
    d = dict(row)
    for key in ("latest", "inventory", "identity"):
        d[key] = json.loads(d[key]) if d.get(key) else None
    d["online"] = bool(d["online"])
    return d


_json_decode = msgspec.json.decode  # the same values as json.loads, faster

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}  # SQLite's LIKE folds ASCII letters only
_CONTAINS_MAX = 2000  # more matches than this: page them with LIKE instead of a list of SNs

_COUNT_CACHE_S = 3600.0  # a registry count is reused this long at most (keyed by registry_version, which every
# registry or institution write bumps, so another process's write is seen within VERSION_TTL_S anyway)
# Versions in ``meta`` that every writer bumps in the same transaction as its write, so that every process (the
# primary and the API-only workers) can tell when its caches are stale: the registry index and counts
# (``registry_version``), the figures and drill-down caches (``rollup_version``, ``rolled_to``).
VERSION_KEYS = ("registry_version", "rollup_version", "rolled_to", INGEST_STATS_KEY, PENDING_KEY)
VERSION_TTL_S = 1.0  # another process's write is noticed within this long (this process's own at once)


def prefix_range(prefix: str) -> tuple[str, str]:
    """``[low, high)`` such that ``low <= x < high`` exactly when ``x`` starts with ``prefix`` (index-friendly)."""
    return prefix, prefix + "\U0010ffff"


def private_database(path: Path) -> None:
    """The database holds contacts' phone numbers: made 0600 (SQLite gives its -wal and -shm files the database's
    mode), and an existing one readable by every user on the host loses the 'other' bits (logged)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)
        return
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = p.stat().st_mode & 0o777
            if mode & 0o007:
                os.chmod(p, mode & ~0o007)
                log.warning("%s was readable by every user on this host (mode %04o): now %04o", p, mode, mode & ~0o007)
        except FileNotFoundError:
            continue
        except OSError as err:
            log.warning("%s is readable by every user on this host and cannot be changed: %s", p, err.strerror)


class SqliteStorage:
    def __init__(self, path: Path, readers: int = 4) -> None:
        self.path = path
        self.readers = max(0, readers)
        self._db: aiosqlite.Connection | None = None
        self._read_conns: list[aiosqlite.Connection] = []
        self._pool: asyncio.Queue[aiosqlite.Connection] | None = None
        self._registry_gen = 0  # bumped by every registry / institution write of this process
        self._counts: dict[tuple[Any, ...], tuple[float, int]] = {}
        self._versions: dict[str, str] = {}
        self._haystack: tuple[str, int, str, list[int], list[str]] | None = None  # see _sn_contains
        self._side: aiosqlite.Connection | None = None  # see meta_set_apart
        self._inline: sqlite3.Connection | None = None  # see _quick
        self._versions_at = float("-inf")
        self._write_lock = asyncio.Lock()  # see write()
        self._write_owner: asyncio.Task[Any] | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("storage is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        private_database(self.path)
        self._db = await aiosqlite.connect(str(self.path))
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._migrate()
        if self.readers:
            self._pool = asyncio.Queue()
            uri = self.path.resolve().as_uri() + "?mode=ro"
            for _ in range(self.readers):
                conn = await aiosqlite.connect(uri, uri=True)
                conn.row_factory = aiosqlite.Row
                await conn.execute("PRAGMA busy_timeout=5000")
                await conn.execute("PRAGMA query_only=1")
                await conn.execute("PRAGMA cache_size=-32768")  # 32 MB a reader
                self._read_conns.append(conn)
                self._pool.put_nowait(conn)
            self._inline = sqlite3.connect(uri, uri=True, isolation_level=None)
            self._inline.row_factory = sqlite3.Row
            self._inline.execute("PRAGMA query_only=1")
            self._inline.execute("PRAGMA busy_timeout=50")  # never hold the event loop long: the pool waits instead
            self._inline.execute("PRAGMA cache_size=-32768")

    async def _migrate(self) -> None:
        db = self.db
        v = int((await (await db.execute("PRAGMA user_version")).fetchone())[0])
        if v > SCHEMA_VERSION:
            await db.close()
            self._db = None
            raise SchemaTooNew(f"{self.path}: {too_new(self.path)}")
        scripts = {"_SCHEMA": _SCHEMA, "_FLEET_SCHEMA": _FLEET_SCHEMA, "_DEAD_LETTER_SCHEMA": _DEAD_LETTER_SCHEMA}
        for n, what, names in _MIGRATIONS:
            if n <= v:
                continue
            for name in names:
                await db.executescript(scripts[name])
            await db.execute(f"PRAGMA user_version = {n}")
            await db.commit()
            log.info("database %s: schema %d -> %d (%s)", self.path, n - 1, n, what)

    async def close(self) -> None:
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        if self._side is not None:
            await self._side.close()
            self._side = None
        for conn in self._read_conns:
            await conn.close()
        self._read_conns = []
        self._pool = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction on the writer connection, alone: commit when the block ends, roll back (and
        re-raise) when it raises, ``CancelledError`` included; then let the next writer in.

        Re-entrant per task: a block opened inside another block of the same task joins the outer transaction
        (no commit, no rollback of its own; the outer block decides). A block must not wait for another task
        that itself opens ``write()`` (deadlock), and must not hold the lock across network I/O.
        aiosqlite runs a connection's calls in order on one thread, so a rollback or commit issued here is
        done before the next writer's first statement even if this task is cancelled while awaiting it.
        """
        db = self.db
        task = asyncio.current_task()
        if task is not None and self._write_owner is task:
            yield db
            return
        async with self._write_lock:
            self._write_owner = task
            try:
                try:
                    yield db
                    await db.commit()
                except BaseException:
                    await db.rollback()
                    raise
            finally:
                self._write_owner = None

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[aiosqlite.Connection]:
        """A read-only connection from the pool (the writer when there is no pool), returned after use."""
        pool = self._pool
        if pool is None:
            yield self.db
            return
        conn = await pool.get()
        try:
            yield conn
        finally:
            pool.put_nowait(conn)

    async def _all(self, sql: str, args: Any = ()) -> list[Any]:
        async with self.reader() as db:  # one trip to the connection's thread (execute, fetch and close: three)
            return list(await db.execute_fetchall(sql, args))

    async def _quick(self, sql: str, args: Any = ()) -> list[Any]:
        """A short read (index look-ups, a page of rows: well under a millisecond) on the event loop's own read-only
        connection. Handing such a query to a connection thread costs more CPU than the query (a queue, a future,
        two thread wake-ups and the GIL changing hands), and under load its result waits for the GIL behind the
        loop. Long reads (scans, whole-fleet sums) go to the pool with :meth:`_all`, so the loop keeps serving
        others meanwhile; so does a short read that finds the database busy."""
        conn = self._inline
        if conn is not None:
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err):
                    raise
        return await self._all(sql, args)

    async def _quick_one(self, sql: str, args: Any = ()) -> Any:
        rows = await self._quick(sql, args)
        return rows[0] if rows else None

    async def _one(self, sql: str, args: Any = ()) -> Any:
        """The first row, or None. For statements that return at most a few rows (all are fetched)."""
        rows = await self._all(sql, args)
        return rows[0] if rows else None

    def _registry_written(self) -> None:
        self._registry_gen += 1
        self._counts.clear()
        self._versions_at = float("-inf")

    @staticmethod
    async def _bump(db: aiosqlite.Connection, key: str) -> None:
        """Bump a version row (inside the caller's transaction): other processes drop their caches."""
        await db.execute("INSERT INTO meta(key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE SET "
                         "value = CAST(value AS INTEGER) + 1", (key,))

    async def versions(self) -> dict[str, str]:
        """``registry_version``, ``rollup_version``, ``rolled_to`` and the ingest figures from ``meta`` (missing
        keys: ``""``), read at
        most every ``VERSION_TTL_S`` (one indexed read), and at once after a write by this process."""
        now = time.monotonic()
        if now - self._versions_at < VERSION_TTL_S:
            return self._versions
        rows = await self._quick(f"SELECT key, value FROM meta WHERE key IN ({','.join('?' * len(VERSION_KEYS))})",
                                 VERSION_KEYS)
        got = {str(r[0]): str(r[1]) for r in rows}
        self._versions = {k: got.get(k, "") for k in VERSION_KEYS}
        self._versions_at = now
        return self._versions

    def _rollups_written(self) -> None:
        self._versions_at = float("-inf")

    # ingest --------------------------------------------------------------------
    async def store_telemetry(self, samples: list[SampleRow], events: list[EventRow]) -> int:
        now = time.time()
        stored = 0
        async with self.write() as db:
            if samples:
                before = db.total_changes
                await db.executemany(
                    "INSERT OR IGNORE INTO samples VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (s.sn, s.epoch, s.seq, s.ts, s.interval, s.clock, int(s.connected), s.rtt_ms,
                         json.dumps(s.checks, ensure_ascii=False, separators=(",", ":")),
                         json.dumps(s.body, ensure_ascii=False, separators=(",", ":")), s.received_at)
                        for s in samples
                    ],
                )
                stored += db.total_changes - before
            if events:
                before = db.total_changes
                await db.executemany(
                    "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?)",
                    [(e.sn, e.epoch, e.seq, e.ts, e.kind, json.dumps(e.data, ensure_ascii=False), e.received_at)
                     for e in events],
                )
                stored += db.total_changes - before
            # registry: first/last seen, newest sample, inventory
            latest: dict[str, SampleRow] = {}
            for s in samples:
                if s.sn not in latest or s.ts > latest[s.sn].ts:
                    latest[s.sn] = s
            sns = {s.sn for s in samples} | {e.sn for e in events}
            for sn in sns:
                await db.execute(
                    "INSERT INTO units(sn, first_seen, last_seen) VALUES (?,?,?) "
                    "ON CONFLICT(sn) DO UPDATE SET last_seen=excluded.last_seen",
                    (sn, now, now),
                )
            for sn, s in latest.items():
                await db.execute(
                    "UPDATE units SET latest_ts=?, latest=? WHERE sn=? AND (latest_ts IS NULL OR latest_ts <= ?)",
                    (s.ts, json.dumps(s.body, ensure_ascii=False), sn, s.ts),
                )
            for e in events:
                if e.kind == "inventory":
                    await db.execute("UPDATE units SET inventory=? WHERE sn=?", (json.dumps(e.data, ensure_ascii=False), e.sn))
                if e.kind in ("inventory", "identity", "sim_changed"):
                    ident = {k: e.data.get(k) for k in ("iccid", "imsi", "imei", "carrier", "mcc_mnc",
                                                          "modem_model", "modem_firmware") if e.data.get(k)}
                    if ident:
                        await db.execute("UPDATE units SET identity=? WHERE sn=?", (json.dumps(ident), e.sn))
        return stored

    async def set_state(self, sn: str, online: bool, ts: float, reason: str, version: str) -> None:
        now = time.time()
        async with self.write() as db:
            await db.execute(
                "INSERT INTO units(sn, first_seen, last_seen, online, state_ts, state_reason, agent_version) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT(sn) DO UPDATE SET online=excluded.online, state_ts=excluded.state_ts, "
                "state_reason=excluded.state_reason, last_seen=max(units.last_seen, excluded.last_seen), "
                "agent_version=CASE WHEN excluded.agent_version<>'' THEN excluded.agent_version ELSE units.agent_version END",
                (sn, now, now, int(online), ts, reason, version),
            )

    # registry ----------------------------------------------------------------------
    async def list_units(self, query: UnitQuery) -> tuple[int, list[dict[str, Any]]]:
        where, args = [], []
        if query.q:
            where.append("sn LIKE ?")
            args.append(f"%{query.q}%")
        if query.online is not None:
            where.append("online = ?")
            args.append(int(query.online))
        if query.sns:
            where.append(f"sn IN ({','.join('?' * len(query.sns))})")
            args.extend(query.sns)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = _UNIT_SORTS.get(query.sort, "sn")
        total = (await self._one(f"SELECT count(*) FROM units {clause}", args))[0]
        rows = await self._all(
            f"SELECT * FROM units {clause} ORDER BY {order} {'DESC' if query.descending else 'ASC'}, sn LIMIT ? OFFSET ?",
            [*args, query.limit, query.offset],
        )
        return int(total), [_unit(r) for r in rows]

    async def get_unit(self, sn: str) -> dict[str, Any] | None:
        row = await self._one("SELECT * FROM units WHERE sn=?", (sn,))
        return _unit(row) if row else None

    async def recent_samples(self, sn: str, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        if before is None:
            rows = await self._all("SELECT body FROM samples WHERE sn=? ORDER BY ts DESC LIMIT ?", (sn, limit))
        else:
            rows = await self._all(
                "SELECT body FROM samples WHERE sn=? AND ts < ? ORDER BY ts DESC LIMIT ?", (sn, before, limit))
        return [json.loads(r[0]) for r in rows]

    async def samples_between(self, sns: list[str] | None, start: int, end: int) -> list[SampleRow]:
        sql = "SELECT sn, epoch, seq, ts, interval, clock, connected, rtt_ms, checks, received_at FROM samples WHERE ts < ? AND ts + interval > ?"
        args: list[Any] = [end, start]
        if sns is not None:
            sql += f" AND sn IN ({','.join('?' * len(sns))})"
            args.extend(sns)
        return [
            SampleRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], json.loads(r[8]), {}, r[9])
            for r in await self._all(sql + " ORDER BY sn, ts", args)
        ]

    async def count_samples(self) -> int:
        return int((await self._one("SELECT count(*) FROM samples"))[0])

    async def purge_samples(self, before_ts: int) -> int:
        async with self.write() as db:
            cur = await db.execute("DELETE FROM samples WHERE ts < ?", (before_ts,))
        return cur.rowcount

    async def purge_events(self, before_ts: int) -> int:
        async with self.write() as db:
            cur = await db.execute("DELETE FROM events WHERE ts < ?", (before_ts,))
        return cur.rowcount

    # dead letters --------------------------------------------------------------------
    async def add_dead_letter(self, received_at: float, sn: str, topic: str, reason: str, size: int, sha256: str,
                              body: str) -> None:
        """Keep one message ingest could not store; only the newest :data:`DEAD_LETTERS_KEPT` are kept."""
        async with self.write() as db:
            cur = await db.execute(
                "INSERT INTO dead_letters(received_at, sn, topic, reason, size, sha256, body) VALUES (?,?,?,?,?,?,?)",
                (received_at, sn, topic, reason[:500], size, sha256, body))
            if cur.lastrowid and cur.lastrowid % 100 == 0:
                await db.execute("DELETE FROM dead_letters WHERE id <= ?", (cur.lastrowid - DEAD_LETTERS_KEPT,))

    async def dead_letters(self, limit: int = 100, sn: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        where, args = ("WHERE sn = ?", [sn]) if sn else ("", [])
        total = int((await self._one(f"SELECT count(*) FROM dead_letters {where}", args))[0])
        rows = await self._all(f"SELECT id, received_at, sn, topic, reason, size, sha256, body FROM dead_letters {where} "
                               "ORDER BY id DESC LIMIT ?", [*args, limit])
        return total, [dict(r) for r in rows]

    # tokens --------------------------------------------------------------------------
    async def add_token(self, name: str, role: str, token_hash: str, created: float) -> None:
        async with self.write() as db:
            await db.execute("INSERT INTO tokens(hash, name, role, created) VALUES (?,?,?,?)",
                             (token_hash, name, role, created))

    async def find_token(self, token_hash: str) -> dict[str, Any] | None:
        """Read on every request, never cached: a revocation committed by any process (``posfleet server token
        revoke``) is refused by the next request in every server process."""
        row = await self._quick_one("SELECT name, role, revoked FROM tokens WHERE hash=?", (token_hash,))
        return dict(row) if row and not row["revoked"] else None

    async def list_tokens(self) -> list[dict[str, Any]]:
        rows = await self._all("SELECT name, role, created, revoked FROM tokens ORDER BY created, rowid")
        return [{"name": r["name"], "role": r["role"], "created": r["created"],
                 "revoked_at": float(r["revoked"]) if r["revoked"] else None} for r in rows]

    async def revoke_tokens(self, name: str, ts: float) -> tuple[int, int]:
        """``revoked`` holds the revocation time (whole epoch seconds, at least 1); 0 is a token in force."""
        async with self.write() as db:
            cur = await db.execute("UPDATE tokens SET revoked=? WHERE name=? AND revoked=0", (max(1, int(ts)), name))
            done = cur.rowcount
            rows = list(await db.execute_fetchall("SELECT count(*) FROM tokens WHERE name=? AND revoked<>0", (name,)))
        return done, int(rows[0][0]) - done

    # registry (issue 4) ------------------------------------------------------------------
    async def upsert_institutions(self, rows: list[dict[str, Any]]) -> None:
        """Insert or update institutions by code, all in one transaction."""
        self._registry_written()
        now = time.time()
        async with self.write() as db:
            await db.executemany(
                "INSERT INTO institutions(code, name, county, region, type, hours, contact, updated) "
                "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(code) DO UPDATE SET name=excluded.name, county=excluded.county, "
                "region=excluded.region, type=excluded.type, hours=excluded.hours, contact=excluded.contact, "
                "updated=excluded.updated",
                [(r["code"], *(r.get(f) or "" for f in _INSTITUTION_FIELDS), now) for r in rows],
            )
            await self._bump(db, "registry_version")
        self._registry_written()

    async def list_institutions(self, county: str | None = None) -> list[dict[str, Any]]:
        if county:
            rows = await self._all("SELECT * FROM institutions WHERE county=? ORDER BY code", (county,))
        else:
            rows = await self._all("SELECT * FROM institutions ORDER BY code")
        return [dict(r) for r in rows]

    async def get_institution(self, code: str) -> dict[str, Any] | None:
        row = await self._one("SELECT * FROM institutions WHERE code=?", (code,))
        return dict(row) if row else None

    async def upsert_registry_units(self, rows: list[dict[str, Any]], ts: int, by: str) -> None:
        """Register or update units in one transaction; a new unit or a changed status adds a history row."""
        self._registry_written()
        async with self.write() as db:
            for r in rows:
                old = await (await db.execute("SELECT status, source FROM registry WHERE sn=?", (r["sn"],))).fetchone()
                values = {f: r.get(f) for f in _REGISTRY_FIELDS if f in r}
                if old is None:
                    values.setdefault("status", "in_service")
                    cols = ["sn", *values, "source", "registered_at"]
                    await db.execute(
                        f"INSERT INTO registry({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                        [r["sn"], *values.values(), "admin", time.time()],
                    )
                    await db.execute("INSERT INTO status_history(sn, from_ts, status, by, note) VALUES (?,?,?,?,?)",
                                     (r["sn"], ts, values["status"], by, "registered"))
                    continue
                if values:
                    sets = ", ".join(f"{k}=?" for k in values)
                    await db.execute(f"UPDATE registry SET {sets}, source='admin' WHERE sn=?", [*values.values(), r["sn"]])
                if "status" in values and values["status"] != old["status"]:
                    await db.execute("INSERT INTO status_history(sn, from_ts, status, by, note) VALUES (?,?,?,?,?)",
                                     (r["sn"], ts, values["status"], by, r.get("status_note") or "updated"))
            await self._bump(db, "registry_version")
        self._registry_written()

    async def ensure_registered(self, first_ts: dict[str, int]) -> list[str]:
        """Units seen by ingest join the registry (in service, no institution) from their earliest sample.

        A later-arriving older sample moves that automatic start earlier. Returns the SNs added.
        """
        self._registry_written()
        added: list[str] = []
        async with self.write() as db:
            for sn, ts in first_ts.items():
                cur = await db.execute(
                    "INSERT OR IGNORE INTO registry(sn, status, source, registered_at) VALUES (?,?,?,?)",
                    (sn, "in_service", "ingest", time.time()))
                if cur.rowcount:
                    added.append(sn)
                    await db.execute("INSERT INTO status_history(sn, from_ts, status, by, note) VALUES (?,?,?,?,?)",
                                     (sn, ts, "in_service", "ingest", "first seen"))
                else:
                    await db.execute(
                        "UPDATE status_history SET from_ts=? WHERE sn=? AND by='ingest' AND from_ts>? "
                        "AND (SELECT count(*) FROM status_history WHERE sn=?)=1", (ts, sn, ts, sn))
            await self._bump(db, "registry_version")
        self._registry_written()
        return added

    async def change_status(self, changes: list[tuple[str, int, str, str, str]],
                            updates: dict[str, dict[str, Any]] | None = None) -> None:
        """Status changes ``(sn, from_ts, status, by, note)`` and field updates, all in one transaction."""
        self._registry_written()
        async with self.write() as db:
            for sn, ts, status, by, note in changes:
                cur = await db.execute("UPDATE registry SET status=? WHERE sn=?", (status, sn))
                if not cur.rowcount:
                    raise KeyError(sn)
                await db.execute("INSERT INTO status_history(sn, from_ts, status, by, note) VALUES (?,?,?,?,?)",
                                 (sn, ts, status, by, note))
            for sn, fields in (updates or {}).items():
                fields = {k: v for k, v in fields.items() if k in _REGISTRY_FIELDS}
                if fields:
                    await db.execute(f"UPDATE registry SET {', '.join(f'{k}=?' for k in fields)} WHERE sn=?",
                                     [*fields.values(), sn])
            await self._bump(db, "registry_version")
        self._registry_written()

    async def registry_query(self, filters: dict[str, Any], sort: str = "sn", descending: bool = False,
                             limit: int = 50, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """Registered units joined with their institution and live state, filtered, sorted and paged.

        ``filters["q"]`` matches the start of the SN or the insurance SN through their indexes
        (``filters["match"] == "contains"``: anywhere in them, which reads every row). Filters work on the
        registry alone (county and region through the institutions' index; ``registry_filter`` covers the common
        filters), and the page's keys are found before the joins, so a page of 50 out of 50,000 reads 50 joined
        rows. The total is not counted when the page shows it (a short page), and a count is otherwise reused until
        the registry changes (at most ``_COUNT_CACHE_S``)."""
        where, args = [], []
        if filters.get("q"):
            q = str(filters["q"])
            found = await self._sn_contains(q) if filters.get("match") == "contains" else None
            if found is not None:  # the SNs holding q, from this process's in-memory text of every SN
                where.append(f"r.sn IN ({','.join('?' * len(found))})" if found else "0")
                args += found
            elif filters.get("match") == "contains":
                where.append("(r.sn LIKE ? ESCAPE '\\' OR r.insurance_sn LIKE ? ESCAPE '\\')")
                pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                args += [pattern] * 2
            else:
                lo, hi = prefix_range(q)
                where.append("((r.sn >= ? AND r.sn < ?) OR (r.insurance_sn >= ? AND r.insurance_sn < ?))")
                args += [lo, hi, lo, hi]
        for key, col in (("institution", "r.institution"), ("status", "r.status"), ("link_type", "r.link_type"),
                         ("stock_type", "r.stock_type"), ("vendor", "r.vendor"), ("model", "r.model"),
                         ("terminal_type", "r.terminal_type")):
            if filters.get(key):
                where.append(f"{col} = ?")
                args.append(filters[key])
        for key in ("county", "region"):
            if filters.get(key):
                where.append(f"r.institution IN (SELECT code FROM institutions WHERE {key} = ?)")
                args.append(filters[key])
        if filters.get("sns") is not None:
            sns = list(filters["sns"]) or [""]
            where.append(f"r.sn IN ({','.join('?' * len(sns))})")
            args += sns
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        direction = "DESC" if descending else "ASC"
        cols = ("SELECT r.*, i.name AS institution_name, i.county, i.region, i.type AS institution_type, "
                "u.first_seen, u.last_seen, u.online AS broker_session, u.agent_version, u.identity, u.inventory ")
        joins = "LEFT JOIN institutions i ON i.code = r.institution LEFT JOIN units u ON u.sn = r.sn "
        if sort == "last_seen" and descending:
            rows = await self._by_last_seen_desc(cols, joins, clause, args, limit, offset)
        elif sort == "last_seen":
            rows = await self._by_last_seen_asc(cols, joins, clause, args, limit, offset)
        else:  # the page's keys (by SN: from the indexes alone, mostly), then the joined rows of those 50
            by_sn = sort == "sn" or sort not in _REGISTRY_SORTS
            order = f"r.sn {direction}" if by_sn else f"{_REGISTRY_SORTS[sort]} {direction}, r.sn"
            quick = by_sn and "LIKE" not in clause  # by SN: an index walk; others sort (or LIKE-scan) every row
            keys = await (self._quick if quick else self._all)(
                f"SELECT r.sn FROM registry r {'' if by_sn else joins} {clause} ORDER BY {order} LIMIT ? OFFSET ?",
                [*args, limit, offset])
            rows = await self._page([k[0] for k in keys], cols, joins)
        if len(rows) < limit and (rows or offset == 0):
            total = offset + len(rows)  # the page ends the list: no count needed
        else:
            total = await self._registry_count(clause, args)
        out = []
        for row in rows:
            d = dict(row)
            for key in ("identity", "inventory"):
                d[key] = _json_decode(d[key]) if d.get(key) else None
            d["broker_session"] = bool(d["broker_session"])
            out.append(d)
        return int(total), out

    async def _sn_contains(self, q: str) -> list[str] | None:
        """SNs whose SN or insurance SN holds ``q`` (ASCII letters in any case, as SQLite's LIKE), found with
        ``str.find`` in one text of every registered SN, kept per ``registry_version``: ~1 ms instead of a LIKE
        over every row (twice, with the count). None when the text cannot answer (q with a separator, or more
        than ``_CONTAINS_MAX`` matches: then the LIKE scan pages them)."""
        if not q or "\n" in q or "\t" in q:
            return None
        _v, _g, text, starts, sns = await self._sn_text()
        needle = q.translate(_ASCII_LOWER)
        found: list[str] = []
        i = text.find(needle)
        while i >= 0:
            k = bisect.bisect_right(starts, i) - 1
            found.append(sns[k])
            if len(found) > _CONTAINS_MAX:
                return None
            nxt = starts[k + 1] if k + 1 < len(starts) else len(text)
            i = text.find(needle, nxt)  # next line: one hit per unit
        return found

    async def warm(self) -> None:
        """Build this process's in-memory indexes before the first request needs them (the text of every SN
        for substring search: ~0.1 s at 50,000 units, paid by a request otherwise)."""
        await self._sn_text()

    async def _sn_text(self) -> tuple[str, int, str, list[int], list[str]]:
        version = (await self.versions())["registry_version"]
        hay = self._haystack
        if hay is None or hay[0] != version or hay[1] != self._registry_gen:
            gen = self._registry_gen
            rows = await self._all("SELECT sn, insurance_sn FROM registry ORDER BY sn")
            sns = [r[0] for r in rows]
            lines = [f"{r[0]}\t{r[1]}".translate(_ASCII_LOWER) for r in rows]
            starts, pos = [], 0
            for line in lines:
                starts.append(pos)
                pos += len(line) + 1
            hay = (version, gen, "\n".join(lines), starts, sns)
            self._haystack = hay
        return hay

    async def _by_last_seen_desc(self, cols: str, joins: str, clause: str, args: list[Any], limit: int,
                                 offset: int) -> list[Any]:
        """Most recently heard first: walk ``units(last_seen)`` backwards and keep the registry's matches (a page
        reads about page / share-matching rows, not the whole filtered set sorted); units never heard from come
        last, by SN. Ties in ``last_seen`` go by SN descending."""
        seen_clause = f"{clause} AND" if clause else "WHERE"
        keys = await self._all(
            f"SELECT u.sn FROM units u CROSS JOIN registry r ON r.sn = u.sn {clause} "  # CROSS: units first
            "ORDER BY u.last_seen DESC, u.sn DESC LIMIT ? OFFSET ?", [*args, limit, offset])
        sns = [k[0] for k in keys]
        if len(sns) < limit:
            n_seen = offset + len(sns) if sns else int((await self._one(
                f"SELECT count(*) FROM units u JOIN registry r ON r.sn = u.sn {clause}", args))[0])
            rest = await self._all(
                f"SELECT r.sn FROM registry r {seen_clause} NOT EXISTS (SELECT 1 FROM units u WHERE u.sn = r.sn) "
                "ORDER BY r.sn LIMIT ? OFFSET ?", [*args, limit - len(sns), max(0, offset - n_seen)])
            sns += [k[0] for k in rest]
        return await self._page(sns, cols, joins)

    async def _by_last_seen_asc(self, cols: str, joins: str, clause: str, args: list[Any], limit: int,
                                offset: int) -> list[Any]:
        """Oldest report first: units never heard from first (by SN), then a walk up ``units(last_seen)``
        keeping the registry's matches; ties go by SN. How many matching units were never heard from is kept
        until the registry changes or a unit is first heard (``units`` grows): a scan of the registry, ~8 ms
        at 50,000 units, instead of sorting every match (~15 ms)."""
        seen_clause = f"{clause} AND" if clause else "WHERE"
        never = f"{seen_clause} NOT EXISTS (SELECT 1 FROM units u WHERE u.sn = r.sn)"
        grown = (await self._quick_one("SELECT max(rowid) FROM units"))[0]
        walk = self._quick if offset < 1000 else self._all  # a first page reads about page / share rows
        key = ("never_heard", (await self.versions())["registry_version"], self._registry_gen, grown, clause, *args)
        hit = self._counts.get(key)
        if hit is not None and time.monotonic() - hit[0] < _COUNT_CACHE_S:
            n_never = hit[1]
        else:
            n_never = int((await self._one(f"SELECT count(*) FROM registry r {never}", args))[0])
            self._keep_count(key, n_never)
        sns: list[str] = []
        if offset < n_never:
            sns = [k[0] for k in await self._all(f"SELECT r.sn FROM registry r {never} ORDER BY r.sn LIMIT ? OFFSET ?",
                                                 [*args, limit, offset])]
        if len(sns) < limit:
            keys = await walk(
                f"SELECT u.sn FROM units u CROSS JOIN registry r ON r.sn = u.sn {clause} "  # CROSS: units first
                "ORDER BY u.last_seen ASC, u.sn ASC LIMIT ? OFFSET ?",
                [*args, limit - len(sns), max(0, offset - n_never)])
            sns += [k[0] for k in keys]
        return await self._page(sns, cols, joins)

    async def _page(self, sns: list[str], cols: str, joins: str) -> list[Any]:
        """The joined rows of ``sns``, in that order."""
        if not sns:
            return []
        rows = await self._quick(f"{cols} FROM registry r {joins} WHERE r.sn IN ({','.join('?' * len(sns))})", sns)
        pos = {sn: k for k, sn in enumerate(sns)}
        return sorted(rows, key=lambda r: pos[r["sn"]])

    async def _registry_count(self, clause: str, args: list[Any]) -> int:
        key = ((await self.versions())["registry_version"], clause, *args)  # another process's write: a new key
        now = time.monotonic()
        hit = self._counts.get(key)
        if hit is not None and now - hit[0] < _COUNT_CACHE_S:
            return hit[1]
        gen = self._registry_gen
        # at most a scan of one covering index (~3 ms at 50,000 units): inline, unless a LIKE reads every row
        count = self._all if "LIKE" in clause else self._quick
        total = int((await count(f"SELECT count(*) FROM registry r {clause}", args))[0][0])
        if gen == self._registry_gen:  # no registry write meanwhile
            self._keep_count(key, total)
        return total

    def _keep_count(self, key: tuple[Any, ...], n: int) -> None:
        """Remember a count, dropping the oldest beyond 1,024 (a search's one-off counts must not push out the
        counts every page of a county asks for)."""
        self._counts.pop(key, None)
        self._counts[key] = (time.monotonic(), n)
        while len(self._counts) > 1024:
            self._counts.pop(next(iter(self._counts)))

    async def status_histories(self, sns: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        if sns is None:
            rows = await self._all("SELECT sn, from_ts, status, by, note FROM status_history ORDER BY sn, from_ts, id")
        else:
            sns = list(sns) or [""]
            rows = await (self._quick if len(sns) <= 50 else self._all)(
                f"SELECT sn, from_ts, status, by, note FROM status_history WHERE sn IN ({','.join('?' * len(sns))}) "
                "ORDER BY sn, from_ts, id", sns)
        out: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r[0], []).append({"from_ts": r[1], "status": r[2], "by": r[3], "note": r[4]})
        return out

    async def status_changes_between(self, start: int, end: int) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT sn, from_ts, status, by, note FROM status_history WHERE from_ts >= ? AND from_ts < ? "
            "ORDER BY from_ts, id", (start, end))
        return [dict(r) for r in rows]

    async def registry_index(self) -> list[dict[str, Any]]:
        """Every registered unit with the institution fields the counting and grouping need."""
        rows = await self._all(
            "SELECT r.sn, r.institution, r.status, r.link_type, r.stock_type, r.terminal_type, r.model, r.vendor, "
            "i.name AS institution_name, i.county, i.region, i.type AS institution_type, i.hours "
            "FROM registry r LEFT JOIN institutions i ON i.code = r.institution")
        return [dict(r) for r in rows]

    async def live_index(self) -> list[dict[str, Any]]:
        """Live state of every unit known to ingest: session, last message, identity, inventory, newest sample."""
        rows = await self._all(
            "SELECT sn, online, state_ts, last_seen, first_seen, agent_version, identity, inventory, latest FROM units")
        out = []
        for r in rows:
            d = dict(r)
            for key in ("identity", "inventory", "latest"):
                d[key] = json.loads(d[key]) if d.get(key) else None
            out.append(d)
        return out

    # roll-ups ---------------------------------------------------------------------------
    async def meta_get(self, key: str) -> str | None:
        row = await self._one("SELECT value FROM meta WHERE key=?", (key,))
        return None if row is None else str(row[0])

    async def meta_set_apart(self, key: str, value: str) -> None:
        """``meta_set`` on a connection of its own: a periodic write from a background task must not commit in the
        middle of another coroutine's transaction on the shared writer (e.g. ingest's)."""
        if self._side is None:
            self._side = await aiosqlite.connect(str(self.path))
            await self._side.execute("PRAGMA busy_timeout=5000")
        await self._side.execute("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET "
                                 "value=excluded.value", (key, value))
        await self._side.commit()

    async def meta_set(self, key: str, value: str) -> None:
        async with self.write() as db:
            await db.execute("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                             (key, value))
        self._rollups_written()

    async def write_hour_counts(self, items: list[tuple[str, int, int, int, tuple[int, int, int, int]]],
                                strips: list[tuple[str, int, int, bytes, str | None, int]] | None = None) -> None:
        """Store hour counts ``(sn, day ordinal, hour index, hours in that day, counts)`` in one transaction.

        Each day row keeps its totals and the packed hours; month rows are kept as sums of their days.
        ``strips``: the same hours' per-slot codes ``(sn, day, hour index, codes, reasons JSON or None, number of
        samples dated in that hour)``, which the minute drill-down reads instead of recounting raw samples.
        """
        from datetime import date

        by_day: dict[tuple[str, int], list[tuple[int, int, tuple[int, int, int, int]]]] = {}
        for sn, day, idx, nh, counts in items:
            by_day.setdefault((sn, day), []).append((idx, nh, counts))
        async with self.write() as db:
            for (sn, day), hours in by_day.items():
                row = await (await db.execute(
                    "SELECT service, intact, netok, nodata, hours FROM rollup_day WHERE day=? AND sn=?", (day, sn))).fetchone()
                nh = hours[0][1]
                old_tot = (0, 0, 0, 0) if row is None else tuple(row[:4])
                buf = bytearray((b"" if row is None else bytes(row[4]))[: 4 * nh].ljust(4 * nh, b"\0"))
                for idx, _nh, counts in hours:
                    buf[4 * idx: 4 * idx + 4] = bytes(counts)
                tot = (sum(buf[0::4]), sum(buf[1::4]), sum(buf[2::4]), sum(buf[3::4]))
                await db.execute("INSERT OR REPLACE INTO rollup_day VALUES (?,?,?,?,?,?,?)", (day, sn, *tot, bytes(buf)))
                delta = [a - b for a, b in zip(tot, old_tot, strict=True)]
                if any(delta):
                    d = date.fromordinal(day)
                    month = d.year * 12 + d.month - 1
                    await db.execute(
                        "INSERT INTO rollup_month VALUES (?,?,?,?,?,?) ON CONFLICT(month, sn) DO UPDATE SET "
                        "service=service+excluded.service, intact=intact+excluded.intact, "
                        "netok=netok+excluded.netok, nodata=nodata+excluded.nodata", (month, sn, *delta))
            if strips:
                await db.executemany("INSERT OR REPLACE INTO slot_hour VALUES (?,?,?,?,?,?)",
                                     [(day, sn, idx, codes, reasons, n) for sn, day, idx, codes, reasons, n in strips])
            await self._bump(db, "rollup_version")
        self._rollups_written()

    async def rollup_sums(self, months: list[int], days: list[int], parts: list[tuple[int, int, int]],
                          sns: list[str] | None = None) -> dict[str, list[int]]:
        """Per-unit sums of whole months, whole days and hour slices ``(day, first hour, end hour)``."""
        out: dict[str, list[int]] = {}
        filt, fargs = "", []
        if sns is not None:
            chosen = list(sns) or [""]
            filt = f" AND sn IN ({','.join('?' * len(chosen))})"
            fargs = chosen

        def add(sn: str, s: int, i: int, o: int, d: int) -> None:
            acc = out.get(sn)
            if acc is None:
                out[sn] = [s, i, o, d]
            else:
                acc[0] += s
                acc[1] += i
                acc[2] += o
                acc[3] += d

        selects, args = [], []
        if months:
            selects.append(f"SELECT sn, service, intact, netok, nodata FROM rollup_month "
                           f"WHERE month IN ({','.join('?' * len(months))}){filt}")
            args += [*months, *fargs]
        if days:
            selects.append(f"SELECT sn, service, intact, netok, nodata FROM rollup_day "
                           f"WHERE day IN ({','.join('?' * len(days))}){filt}")
            args += [*days, *fargs]
        if selects:
            sql = ("SELECT sn, sum(service), sum(intact), sum(netok), sum(nodata) FROM ("
                   + " UNION ALL ".join(selects) + ") GROUP BY sn")
            for r in await self._all(sql, args):
                add(r[0], r[1], r[2], r[3], r[4])
        for day, a, b in parts:
            for sn, blob in await self._all(f"SELECT sn, hours FROM rollup_day WHERE day=?{filt}", [day, *fargs]):
                part = bytes(blob)[4 * a: 4 * b]
                add(sn, sum(part[0::4]), sum(part[1::4]), sum(part[2::4]), sum(part[3::4]))
        return out

    async def rollup_days(self, sn: str, first_day: int, last_day: int) -> list[tuple[int, int, int, int, int, bytes]]:
        rows = await self._quick(
            "SELECT day, service, intact, netok, nodata, hours FROM rollup_day WHERE sn=? AND day BETWEEN ? AND ? ORDER BY day",
            (sn, first_day, last_day))
        return [(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows]

    async def slot_hours(self, sn: str, day: int) -> list[tuple[int, bytes, str | None, int]]:
        """The stored per-slot codes of one unit's local day: ``(hour index, codes, reasons JSON, samples)``."""
        rows = await self._quick("SELECT hour, codes, reasons, samples FROM slot_hour WHERE day=? AND sn=? ORDER BY hour",
                                 (day, sn))
        return [(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    async def purge_slot_hours(self, before_day: int) -> int:
        async with self.write() as db:
            cur = await db.execute("DELETE FROM slot_hour WHERE day < ?", (before_day,))
        return cur.rowcount

    async def purge_rollups(self, before_day: int) -> int:
        from datetime import date

        d = date.fromordinal(before_day)
        async with self.write() as db:
            cur = await db.execute("DELETE FROM rollup_day WHERE day < ?", (before_day,))
            n = cur.rowcount
            await db.execute("DELETE FROM rollup_month WHERE month < ?", (d.year * 12 + d.month - 1,))
            await self._bump(db, "rollup_version")
        self._rollups_written()
        return n

    async def sample_facts(self, sns: list[str], start: int, end: int) -> list[tuple[str, int, int, int, int | None, str]]:
        """What counting needs of the samples touching ``[start, end)``: (sn, ts, interval, connected, rtt_ms,
        checks as stored JSON text), unparsed (the caller memoises the parse: most samples say the same)."""
        chosen = list(sns) or [""]
        return await self._all(
            f"SELECT sn, ts, interval, connected, rtt_ms, checks FROM samples WHERE sn IN ({','.join('?' * len(chosen))}) "
            "AND ts < ? AND ts >= ? - 3600 AND ts + interval > ?", [*chosen, end, start, start])

    async def count_samples_touching(self, sn: str, start: int, end: int) -> tuple[int, int]:
        """How many samples of one unit :meth:`sample_facts` may read for ``[start, end)``, and how many of them
        are dated in it (index only): a late sample or a purge changes them, so they key the drill-down cache."""
        row = await self._quick_one("SELECT count(*), count(*) FILTER (WHERE ts >= ?) FROM samples "
                                    "WHERE sn = ? AND ts < ? AND ts >= ? - 3600", (start, sn, end, start))
        return int(row[0]), int(row[1])

    async def link_down_samples(self, start: int, end: int) -> list[tuple[str, int, int]]:
        """(sn, ts, interval) of samples taken with the link down that touch ``[start, end)``."""
        rows = await self._all(
            "SELECT sn, ts, interval FROM samples WHERE ts < ? AND ts >= ? - 3600 AND ts + interval > ? AND connected = 0",
            (end, start, start))
        return [(r[0], r[1], r[2]) for r in rows]

    async def replace_outages(self, start: int, end: int, rows: list[tuple[str, int, int, list[str]]]) -> None:
        """Correlated link-down minutes ``(county, minute start, units, sns)`` for ``[start, end)``."""
        async with self.write() as db:
            await db.execute("DELETE FROM outages WHERE minute >= ? AND minute < ?", (start, end))
            await db.executemany("INSERT OR REPLACE INTO outages VALUES (?,?,?,?)",
                                 [(c, m, n, json.dumps(sorted(s))) for c, m, n, s in rows])
            await self._bump(db, "rollup_version")
        self._rollups_written()

    async def outages_between(self, start: int, end: int, county: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT county, minute, units, sns FROM outages WHERE minute >= ? AND minute < ?"
        args: list[Any] = [start, end]
        if county is not None:
            sql += " AND county = ?"
            args.append(county)
        short = county is not None and end - start <= 86400 * 2  # one county's day: an index range
        rows = await (self._quick if short else self._all)(sql + " ORDER BY county, minute", args)
        return [{"county": r[0], "minute": r[1], "units": r[2], "sns": json.loads(r[3])} for r in rows]

    async def events_between(self, start: int, end: int, kinds: list[str] | None = None,
                             sns: list[str] | None = None) -> list[dict[str, Any]]:
        sql = "SELECT sn, ts, kind, data FROM events WHERE ts >= ? AND ts < ?"
        args: list[Any] = [start, end]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += kinds
        if sns is not None:
            chosen = list(sns) or [""]
            sql += f" AND sn IN ({','.join('?' * len(chosen))})"
            args += chosen
        rows = await self._all(sql + " ORDER BY ts", args)
        return [{"sn": r[0], "ts": r[1], "kind": r[2], "data": json.loads(r[3])} for r in rows]

    async def unit_events(self, sn: str, kinds: list[str] | None, limit: int, before: int | None = None
                          ) -> list[dict[str, Any]]:
        """One unit's events, newest first (``before``: dated before that second)."""
        sql, args = "SELECT ts, kind, data, received_at FROM events WHERE sn = ?", [sn]
        if before is not None:
            sql += " AND ts < ?"
            args.append(before)
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += kinds
        rows = await self._all(sql + " ORDER BY ts DESC, epoch DESC, seq DESC LIMIT ?", [*args, limit])
        return [{"ts": r[0], "kind": r[1], "data": json.loads(r[2]), "received_at": r[3]} for r in rows]

    async def unit_samples_window(self, sn: str, start: int, end: int) -> list[dict[str, Any]]:
        """Full sample bodies of one unit in ``[start, end)``, oldest first."""
        rows = await self._all("SELECT body FROM samples WHERE sn=? AND ts >= ? AND ts < ? ORDER BY ts", (sn, start, end))
        return [json.loads(r[0]) for r in rows]

    # cell sites -----------------------------------------------------------------------------
    async def link_down_cells(self, start: int, end: int, lookback: int = 6 * 3600
                              ) -> list[tuple[str, int, int, int | None, int | None]]:
        """(sn, ts, interval, tac, cell_id) of link-down samples touching ``[start, end)``, each attributed to
        the serving cell of the unit's last *connected* sample before it (within ``lookback`` s), else to the
        cell the down sample itself reports (a modem that lost its cell often reports none, or a neighbour)."""
        down = await self._all(
            "SELECT sn, ts, interval, json_extract(body, '$.tac'), json_extract(body, '$.cell_id') FROM samples "
            "WHERE ts < ? AND ts >= ? - 3600 AND ts + interval > ? AND connected = 0 ORDER BY sn, ts",
            (end, start, start))
        if not down:
            return []
        sns = sorted({r[0] for r in down})
        up: dict[str, list[tuple[int, int, int]]] = {}
        for i in range(0, len(sns), 500):
            chunk = sns[i: i + 500]
            rows = await self._all(
                f"SELECT sn, ts, json_extract(body, '$.tac'), json_extract(body, '$.cell_id') FROM samples "
                f"WHERE sn IN ({','.join('?' * len(chunk))}) AND ts >= ? AND ts < ? AND connected = 1 "
                "AND json_extract(body, '$.cell_id') IS NOT NULL ORDER BY sn, ts",
                [*chunk, start - lookback, end])
            for sn, ts, tac, cell in rows:
                up.setdefault(sn, []).append((ts, tac, cell))
        import bisect

        out = []
        for sn, ts, iv, tac, cell in down:
            seen = up.get(sn, [])
            k = bisect.bisect_left(seen, (ts,)) - 1
            if k >= 0 and seen[k][0] >= ts - lookback:
                tac, cell = seen[k][1], seen[k][2]
            out.append((sn, ts, iv, tac, cell))
        return out

    async def replace_cell_outages(self, start: int, end: int,
                                   rows: list[tuple[int, int, int, str, list[str]]]) -> None:
        """Link-down minutes shared by several units of one cell ``(tac, cell, minute, county, sns)``."""
        async with self.write() as db:
            await db.execute("DELETE FROM cell_outages WHERE minute >= ? AND minute < ?", (start, end))
            await db.executemany("INSERT OR REPLACE INTO cell_outages VALUES (?,?,?,?,?,?)",
                                 [(t, c, m, county, len(sns), json.dumps(sorted(sns)))
                                  for t, c, m, county, sns in rows])
            await self._bump(db, "rollup_version")
        self._rollups_written()

    async def cell_outages_between(self, start: int, end: int, county: str | None = None,
                                   sn: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT tac, cell, minute, county, units, sns FROM cell_outages WHERE minute >= ? AND minute < ?"
        args: list[Any] = [start, end]
        if county is not None:
            sql += " AND county = ?"
            args.append(county)
        if sn is not None:
            sql += " AND sns LIKE ?"
            args.append(f'%"{sn}"%')
        rows = await self._all(sql + " ORDER BY tac, cell, minute", args)
        return [{"tac": r[0], "cell": r[1], "minute": r[2], "county": r[3], "units": r[4], "sns": json.loads(r[5])}
                for r in rows]

    # SIM data use ------------------------------------------------------------------------------
    async def data_points(self, sn: str, start: int, end: int) -> list[tuple[int, int]]:
        """(ts, data_bytes) of one unit's samples in ``[start, end)`` that carry the counter, oldest first."""
        rows = await self._all(
            "SELECT ts, json_extract(body, '$.data_bytes') AS b FROM samples WHERE sn=? AND ts >= ? AND ts < ? "
            "AND b IS NOT NULL ORDER BY ts, epoch, seq", (sn, start, end))
        return [(int(r[0]), int(r[1])) for r in rows]

    async def data_day_around(self, sn: str, day: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None,
                                                                 dict[str, Any] | None]:
        """The unit's data-use rows: nearest before ``day``, of ``day``, nearest after."""
        cols = ", ".join(_DATA_COLS)
        rows = await self._all(
            f"SELECT * FROM (SELECT {cols} FROM data_day WHERE sn=? AND day<? ORDER BY day DESC LIMIT 1) "
            f"UNION ALL SELECT {cols} FROM data_day WHERE sn=? AND day=? "
            f"UNION ALL SELECT * FROM (SELECT {cols} FROM data_day WHERE sn=? AND day>? ORDER BY day LIMIT 1)",
            (sn, day, sn, day, sn, day))
        prev = this = nxt = None
        for r in rows:
            d = dict(zip(_DATA_COLS, r, strict=True))
            if d["day"] < day:
                prev = d
            elif d["day"] == day:
                this = d
            else:
                nxt = d
        return prev, this, nxt

    async def put_data_days(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        """Store data-use day rows ``(sn, row)`` in one transaction."""
        async with self.write() as db:
            await db.executemany(
                f"INSERT OR REPLACE INTO data_day(sn, {', '.join(_DATA_COLS)}) VALUES ({','.join('?' * 10)})",
                [(sn, *(r[c] for c in _DATA_COLS)) for sn, r in rows])

    async def data_use(self, first_day: int, last_day: int, sns: list[str] | None = None) -> dict[str, dict[str, int]]:
        """Per unit over the days ``[first_day, last_day]``: bytes used, counter resets, samples, newest sample."""
        sql = ("SELECT sn, sum(within + carry), sum(resets), sum(samples), max(last_ts) FROM data_day "
               "WHERE day BETWEEN ? AND ?")
        args: list[Any] = [first_day, last_day]
        if sns is not None:
            chosen = list(sns) or [""]
            sql += f" AND sn IN ({','.join('?' * len(chosen))})"
            args += chosen
        return {r[0]: {"bytes": int(r[1]), "resets": int(r[2]), "samples": int(r[3]), "last_ts": int(r[4])}
                for r in await self._all(sql + " GROUP BY sn", args)}

    async def data_days(self, sn: str, first_day: int, last_day: int) -> list[dict[str, Any]]:
        rows = await self._all(f"SELECT {', '.join(_DATA_COLS)} FROM data_day WHERE sn=? AND day BETWEEN ? AND ? "
                               "ORDER BY day", (sn, first_day, last_day))
        return [dict(zip(_DATA_COLS, r, strict=True)) for r in rows]

    async def purge_data_days(self, before_day: int) -> int:
        async with self.write() as db:
            cur = await db.execute("DELETE FROM data_day WHERE day < ?", (before_day,))
        return cur.rowcount

    # alerts -------------------------------------------------------------------------------
    async def raise_alert(self, key: str, kind: str, sn: str | None, county: str | None, ts: int, message: str,
                          data: dict[str, Any], webhook: bool) -> bool:
        """Open an alert (or refresh the open one with this key). Returns True when newly opened."""
        payload = json.dumps(data, ensure_ascii=False)
        async with self.write() as db:
            row = await (await db.execute("SELECT id, closed_ts FROM alerts WHERE key=?", (key,))).fetchone()
            if row is not None and row[1] is None:
                await db.execute("UPDATE alerts SET last_ts=?, message=?, data=? WHERE id=?", (ts, message, payload, row[0]))
                return False
            if row is not None:  # closed before: reopen as a new occurrence, keeping its id
                await db.execute(
                    "UPDATE alerts SET opened_ts=?, last_ts=?, closed_ts=NULL, message=?, data=?, acked_by=NULL, acked_ts=NULL, "
                    "webhook=?, webhook_attempts=0 WHERE id=?", (ts, ts, message, payload, "pending" if webhook else "none", row[0]))
            else:
                await db.execute(
                    "INSERT INTO alerts(key, kind, sn, county, opened_ts, last_ts, message, data, webhook) VALUES (?,?,?,?,?,?,?,?,?)",
                    (key, kind, sn, county, ts, ts, message, payload, "pending" if webhook else "none"))
        return True

    async def close_alerts(self, kind: str, keep_keys: set[str], ts: int) -> int:
        async with self.write() as db:
            cur = await db.execute("SELECT key FROM alerts WHERE kind=? AND closed_ts IS NULL", (kind,))
            gone = [r[0] for r in await cur.fetchall() if r[0] not in keep_keys]
            await db.executemany("UPDATE alerts SET closed_ts=? WHERE key=?", [(ts, k) for k in gone])
        return len(gone)

    async def list_alerts(self, open_only: bool = True, kind: str | None = None, sn: str | None = None,
                          limit: int = 100, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        where, args = [], []
        if open_only:
            where.append("closed_ts IS NULL")
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if sn:
            where.append("sn = ?")
            args.append(sn)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        total = (await self._one(f"SELECT count(*) FROM alerts {clause}", args))[0]
        rows = await self._all(f"SELECT * FROM alerts {clause} ORDER BY last_ts DESC, id DESC LIMIT ? OFFSET ?",
                               [*args, limit, offset])
        out = []
        for r in rows:
            d = dict(r)
            d["data"] = json.loads(d["data"])
            out.append(d)
        return int(total), out

    async def ack_alert(self, alert_id: int, by: str, ts: float) -> bool:
        async with self.write() as db:
            cur = await db.execute("UPDATE alerts SET acked_by=?, acked_ts=? WHERE id=?", (by, ts, alert_id))
        return bool(cur.rowcount)

    async def pending_webhooks(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self._all("SELECT * FROM alerts WHERE webhook='pending' ORDER BY id LIMIT ?", (limit,))
        out = []
        for r in rows:
            d = dict(r)
            d["data"] = json.loads(d["data"])
            out.append(d)
        return out

    async def mark_webhook(self, alert_id: int, state: str, attempts: int) -> None:
        async with self.write() as db:
            await db.execute("UPDATE alerts SET webhook=?, webhook_attempts=? WHERE id=?", (state, attempts, alert_id))
