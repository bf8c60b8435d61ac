"""PostgreSQL backend through asyncpg: the same queries as SQLite (``SqlStore``), on an engine of its own.

``[storage] url = "postgresql://user@host:port/db"`` (libpq's URL: a password, ``?sslmode=...`` and so on as
asyncpg reads them). Why asyncpg and one set of queries: docs/decisions/024-postgresql-backend.md.

* The queries are written once with ``?`` parameters; :func:`translate` turns each into PostgreSQL's (``$n``
  parameters, ``IN (?,?,...)`` lists into ``= ANY($n)`` with one array, so a statement stays one prepared
  statement whatever the list's length and never meets the 32,767-parameter limit; SQLite's case-insensitive
  ``LIKE`` as ``ILIKE``; the ``interval`` column quoted; SQLite's ``CROSS JOIN ... ON`` join-order hint as a plain
  ``JOIN``). A connection wrapper (:class:`PgConn`) answers as aiosqlite does (``execute`` returns a cursor with
  ``fetchone``, ``fetchall`` and ``rowcount``), so every store's queries run on it unchanged.
* One writer connection whose transactions run one at a time in this process (the same re-entrant
  ``write()`` as SQLite's, so the domains' assumptions hold), a pool of readers; other processes write beside it
  (row locks, ``ON CONFLICT``: a sample stored by two processes is stored once, its key claimed in ``sample_keys``).
* ``samples`` is partitioned by day of ``ts`` (UTC): a day's partition is created before the first insert that
  needs it, and retention drops whole partitions (and deletes the keys of what it dropped). Ingest inserts with
  one ``INSERT ... SELECT FROM unnest(...)`` per batch (one statement, one round trip, whatever the number of rows;
  for samples it first claims their keys in ``sample_keys``, in the same statement).
* Schema versions in ``posfleet_schema``; migrations run at start under an advisory lock (two processes starting
  together migrate once); a database written by a newer server is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from .accounts import AccountStore
from .engine import Engine
from .schema import PG_MIGRATIONS, SCHEMA_VERSION, SchemaTooNew, newer_sentence
from .sqlite import SqlStore

log = logging.getLogger(__name__)

_MIGRATE_LOCK = 0x706F73_0001  # advisory lock keys ("pos" + n)
_PARTITION_LOCK = 0x706F73_0002
_LEADER_LOCK = 0x706F73_0003
_RECOUNT_LOCK = 0x706F73_0004
_QUEUE_LOCK = 0x706F73_0005
DAY = 86400

# column types of the tables bulk-inserted with unnest (insert_ignore)
_BULK_TYPES = {
    "samples": ("text", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "text", "text",
                "double precision"),
    "events": ("text", "bigint", "bigint", "bigint", "text", "text", "double precision"),
}
_BULK_COLS = {
    "samples": ("sn", "epoch", "seq", "ts", '"interval"', "clock", "connected", "rtt_ms", "checks", "body",
                "received_at"),
    "events": ("sn", "epoch", "seq", "ts", "kind", "data", "received_at"),
}

_SAMPLES_INSERT = (  # claim the keys, then insert the samples whose key this statement claimed
    "WITH u AS (SELECT * FROM unnest(" + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_BULK_TYPES["samples"]))
    + ") AS u(" + ", ".join(_BULK_COLS["samples"]) + ")), "
    "k AS (INSERT INTO sample_keys (sn, epoch, seq, ts) SELECT sn, epoch, seq, ts FROM u "
    "ON CONFLICT DO NOTHING RETURNING sn, epoch, seq) "
    f"INSERT INTO samples ({', '.join(_BULK_COLS['samples'])}) "
    f"SELECT {', '.join('u.' + c for c in _BULK_COLS['samples'])} FROM u JOIN k USING (sn, epoch, seq)")

_TOKEN = re.compile(r"""'(?:[^']|'')*'|"[^"]*"|\bIN\s*\(\s*\?(?:\s*,\s*\?)*\s*\)|\?|\bLIKE\b|\binterval\b|\bCROSS JOIN\b""",
                    re.I)


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> tuple[str, tuple[int, ...]]:
    """``sql`` in PostgreSQL's dialect, and how to regroup the arguments: for each ``$n``, 0 (one argument) or
    the length of the ``IN`` list it stands for (that many arguments as one array)."""
    out: list[str] = []
    groups: list[int] = []
    pos = 0
    for m in _TOKEN.finditer(sql):
        out.append(sql[pos:m.start()])
        tok = m.group(0)
        up = tok.upper()
        if tok[0] in "'\"":
            out.append(tok)
        elif tok == "?":
            groups.append(0)
            out.append(f"${len(groups)}")
        elif up == "INTERVAL":
            out.append('"interval"')
        elif up.startswith("IN"):
            groups.append(tok.count("?"))
            out.append(f"= ANY(${len(groups)})")
        elif up == "LIKE":
            out.append("ILIKE")
        else:  # CROSS JOIN (SQLite's join-order hint, with an ON clause PostgreSQL refuses)
            out.append("JOIN")
        pos = m.end()
    out.append(sql[pos:])
    return "".join(out), tuple(groups)


def _args(groups: tuple[int, ...], args: Any) -> list[Any]:
    args = list(args or ())
    if not any(groups):
        if len(args) != len(groups):
            raise ValueError(f"{len(groups)} parameters, {len(args)} arguments")
        return args
    out, k = [], 0
    for g in groups:
        if g:
            out.append(args[k: k + g])
            k += g
        else:
            out.append(args[k])
            k += 1
    return out


def _returns_rows(q: str) -> bool:
    head = q.lstrip()[:6].upper()
    return head in ("SELECT", "WITH R", "VALUES") or head.startswith("WITH") or " RETURNING " in q.upper()


class PgCursor:
    """What a statement gave, as aiosqlite's cursor gives it."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    async def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    async def fetchall(self) -> list[Any]:
        return self._rows

    def __aiter__(self) -> Any:
        async def gen() -> AsyncIterator[Any]:
            for r in self._rows:
                yield r
        return gen()


class PgConn:
    """A connection (or, with ``pool``, a connection borrowed per statement) with aiosqlite's calls."""

    def __init__(self, conn: Any = None, pool: Any = None) -> None:
        self._conn = conn
        self._pool = pool

    @contextlib.asynccontextmanager
    async def _c(self) -> AsyncIterator[Any]:
        if self._conn is not None:
            yield self._conn
        else:
            async with self._pool.acquire() as c:
                yield c

    async def execute(self, sql: str, args: Any = ()) -> PgCursor:
        q, groups = translate(sql)
        a = _args(groups, args)
        async with self._c() as c:
            if _returns_rows(q):
                rows = await c.fetch(q, *a)
                return PgCursor(rows, len(rows))
            status = await c.execute(q, *a)
        tail = status.rsplit(" ", 1)[-1]
        return PgCursor([], int(tail) if tail.isdigit() else -1)

    async def execute_fetchall(self, sql: str, args: Any = ()) -> list[Any]:
        q, groups = translate(sql)
        async with self._c() as c:
            return list(await c.fetch(q, *_args(groups, args)))

    async def executemany(self, sql: str, seq: Any) -> None:
        q, groups = translate(sql)
        rows = [_args(groups, a) for a in seq]
        if rows:
            async with self._c() as c:
                await c.executemany(q, rows)

    async def executescript(self, script: str) -> None:
        async with self._c() as c:
            await c.execute(script)


def _numeric(text: str) -> int | float:
    """sum() and avg() of integers are NUMERIC in PostgreSQL: as int when whole (SQLite's answer), else float."""
    return int(text) if text.lstrip("-").isdigit() else float(text)


async def _setup(conn: Any) -> None:
    await conn.set_type_codec("numeric", encoder=str, decoder=_numeric, schema="pg_catalog", format="text")


async def _keep_session(conn: Any) -> None:
    """The pool's reset of a connection given back: nothing beyond asyncpg's own (an open transaction rolled back,
    listeners dropped). asyncpg's default also sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``,
    a round trip more after every pooled statement: 11 % of an API process's CPU in a PostgreSQL unit list (issue
    15). Pooled connections keep no session state: nothing here SETs, LISTENs or holds a cursor past its
    transaction, and the one session-level lock taken on a pooled connection (:meth:`PgEngine.recount_lock`)
    closes its connection when it cannot be sure it was released."""


async def connect(url: str) -> Any:
    conn = await asyncpg.connect(url)
    await _setup(conn)
    return conn


async def schema_version(conn: Any) -> int:
    exists = await conn.fetchval("SELECT to_regclass('posfleet_schema') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM posfleet_schema"))


async def migrate(conn: Any, label: str = "") -> int:
    """Bring the database to :data:`SCHEMA_VERSION` (each step one transaction, under an advisory lock); refuse a
    newer one. The version it had."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS posfleet_schema (version BIGINT NOT NULL, "
                           "what TEXT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now())")
        v = await schema_version(conn)
        if v > SCHEMA_VERSION:
            raise SchemaTooNew(f"{label}: {newer_sentence(v)}")
        for n, what, ddl in PG_MIGRATIONS:
            if n <= v:
                continue
            if ddl.strip():  # (a step may change what the code does, not the tables: the version alone)
                await conn.execute(ddl)
            await conn.execute("INSERT INTO posfleet_schema(version, what) VALUES ($1, $2)", n, what)
            log.info("database %s: schema %d -> %d (%s)", label, v, n, what)
            v = n
    return v


def check_database(url: str, timeout: float = 10) -> tuple[str, str] | None:
    """Before the server starts: (the URL without its password, what is wrong) when the database cannot be reached
    or was written by a newer server, else None. Runs in a thread of its own (callers may be inside a loop)."""
    import concurrent.futures

    async def probe() -> int:
        conn = await asyncpg.connect(url, timeout=timeout)
        try:
            return await schema_version(conn)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            v = pool.submit(asyncio.run, probe()).result(timeout + 5)
        except Exception as err:  # noqa: BLE001 - refused, unknown database, bad password: say which
            return redact(url), f"cannot reach the database: {type(err).__name__}: {redact(str(err))}"
    return (redact(url), newer_sentence(v)) if v > SCHEMA_VERSION else None


def redact(url: str) -> str:
    """The URL without its password (for logs and messages)."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


class PgEngine(Engine):
    dialect = "postgresql"
    json_fns = ("json_build_array", "json_agg")  # as SQLite's json_array, json_group_array (engine.py)
    hex_fn = "encode({}, 'hex')"  # bytea as hexadecimal text
    # moved in the transaction that first stores a unit (units_new / units_grew); a count of the units, as before
    # schema 15, cost 135 ms at 210,527 units with ingest's updates in the table, at every list by last seen and
    # every kept-list check (issue 15, decision 037)
    units_grown_sql = "SELECT value FROM meta WHERE key = 'units_heard'"

    async def units_new(self, db: Any, sns: Sequence[str]) -> bool:
        if not sns:
            return False
        row = await (await db.execute(f"SELECT count(*) FROM units WHERE sn IN ({','.join('?' * len(sns))})",
                                      list(sns))).fetchone()
        return int(row[0]) < len(set(sns))

    async def units_grew(self, db: Any) -> None:
        await self._bump(db, "units_heard")  # last in the transaction: no lock held after it but the commit's

    def __init__(self, url: str, readers: int = 4) -> None:
        super().__init__()
        self.url = url
        self.label = redact(url)
        self.readers = max(1, readers)
        self._pool: Any = None
        self._writer: Any = None
        self._write_lock = asyncio.Lock()
        self._write_owner: asyncio.Task[Any] | None = None
        self._days: set[int] = set()  # sample partitions known to exist
        self._lead: Any = None  # the connection holding the leader's advisory lock
        self._lead_lock = asyncio.Lock()  # one question at a time on that connection (asyncpg refuses two)

    async def open(self) -> None:
        conn = await connect(self.url)
        try:
            await migrate(conn, self.label)
        finally:
            await conn.close()
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.readers, init=_setup,
                                               reset=_keep_session)
        self._writer = await connect(self.url)
        await self._load_partitions()

    async def close(self) -> None:
        if self._lead is not None:
            self._lead.terminate()  # releases the leadership at once (a clean stop: the next process takes over)
            self._lead = None
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def db(self) -> PgConn:
        """Statements outside ``write()`` (reads), each on a pooled connection."""
        if self._pool is None:
            raise RuntimeError("storage is not open")
        return PgConn(pool=self._pool)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[PgConn]:
        """One transaction on the writer connection, alone in this process, re-entrant per task (as SQLite's)."""
        task = asyncio.current_task()
        if task is not None and self._write_owner is task:
            yield PgConn(self._writer)
            return
        async with self._write_lock:
            if self._writer is None or self._writer.is_closed():  # the server restarted or the link broke
                self._writer = await connect(self.url)
            self._write_owner = task
            tr = self._writer.transaction()
            await tr.start()
            try:
                try:
                    yield PgConn(self._writer)
                except BaseException:
                    if not self._writer.is_closed():
                        await tr.rollback()
                    raise
                await tr.commit()
            finally:
                self._write_owner = None

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[PgConn]:
        if self._pool is None:
            raise RuntimeError("storage is not open")
        async with self._pool.acquire() as c:
            yield PgConn(c)

    async def _all(self, sql: str, args: Any = ()) -> list[Any]:
        q, groups = translate(sql)
        async with self._pool.acquire() as c:
            return list(await c.fetch(q, *_args(groups, args)))

    async def meta_set_apart(self, key: str, value: str) -> None:
        async with self._pool.acquire() as c:
            await c.execute("INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET "
                            "value=excluded.value", key, value)

    async def schema_version(self) -> int:
        async with self._pool.acquire() as c:
            return await schema_version(c)

    # dialect hooks -------------------------------------------------------------------------------------------
    @staticmethod
    def json_ints(column: str, keys: tuple[str, ...]) -> tuple[str, list[str]]:
        """One ``json_to_record`` a row for all keys: ``(body)::jsonb->>'key'`` built the whole jsonb value again
        for each key, 18-21 µs a row for three keys against 4-6 µs (200,000 sample bodies of 335 bytes); the
        recount's service levels and serving cells read every sample of a day that way."""
        cols = ", ".join(f"{key} bigint" for key in keys)
        # (a comma join: translate() turns CROSS JOIN, SQLite's join-order hint, into JOIN)
        return f", LATERAL json_to_record(({column})::json) AS jb({cols})", [f"jb.{key}" for key in keys]

    async def queue_in_commit_order(self, db: PgConn) -> None:
        """Held from before this transaction's ``recount_queue`` ids are drawn until it commits, so that ids become
        visible in id order across processes. Without it, process A draws id 100, process B draws 101 and commits
        first, the leader takes 101 and reads only ids above it from then on: A's hours were never recounted (a
        late sample stored but not counted). The lock is the transaction's last step, so it is held for the insert
        and the commit only."""
        await db._conn.execute("SELECT pg_advisory_xact_lock($1)", _QUEUE_LOCK)

    async def insert_ignore(self, db: PgConn, table: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        if table == "samples":
            return await self._insert_samples(db, rows)
        types, cols = _BULK_TYPES[table], _BULK_COLS[table]
        q = (f"INSERT INTO {table} ({', '.join(cols)}) SELECT * FROM unnest("
             + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types)) + ") ON CONFLICT DO NOTHING")
        columns = [list(c) for c in zip(*rows, strict=True)]
        status = await db._conn.execute(q, *columns)
        return int(status.rsplit(" ", 1)[-1])

    async def _insert_samples(self, db: PgConn, rows: Sequence[Sequence[Any]]) -> int:
        """Samples are unique by (sn, epoch, seq), as in SQLite, whatever their ts: the partitioned table's own key
        must hold ts, so the unpartitioned ``sample_keys`` holds the sample's identity. One statement claims the
        keys (``ON CONFLICT DO NOTHING RETURNING``: a key another process is inserting waits for its commit, then
        is skipped, or taken if that process rolled back) and inserts only the claimed samples. Rows go in key
        order, the first of a key kept, so two processes' overlapping batches lock keys in one order (no
        deadlock) and a batch holding a sample twice stores it once (docs/decisions/024-postgresql-backend.md)."""
        first: dict[tuple[Any, Any, Any], Sequence[Any]] = {}
        for r in rows:
            first.setdefault((r[0], r[1], r[2]), r)
        ordered = [first[k] for k in sorted(first)]
        await self._ensure_partitions({int(r[3]) // DAY for r in ordered})
        columns = [list(c) for c in zip(*ordered, strict=True)]
        status = await db._conn.execute(_SAMPLES_INSERT, *columns)
        return int(status.rsplit(" ", 1)[-1])

    # several processes -------------------------------------------------------------------------------------
    async def lead(self) -> bool:
        """Try to be (or stay) the leader: a session-level advisory lock on a connection of its own. PostgreSQL
        releases it when that connection ends, so a leader that dies (SIGKILL, its host gone: once TCP keepalive
        or the server notices) is replaced at the next try of another process. False when another holds it or
        this process's lock connection broke (then it is no longer the leader)."""
        async with self._lead_lock:
            return await self._lead_once()

    async def _lead_once(self) -> bool:
        try:
            if self._lead is not None and not self._lead.is_closed():
                await self._lead.fetchval("SELECT 1", timeout=10)  # still connected: still holding it
                return True
            self._lead = None
            conn = await connect(self.url)
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK):
                self._lead = conn
                return True
            await conn.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as err:
            log.warning("leadership check failed: %s", err)
            if self._lead is not None:
                self._lead.terminate()
                self._lead = None
        return False

    @contextlib.asynccontextmanager
    async def recount_lock(self) -> AsyncIterator[None]:
        """Roll-ups are recounted by one process at a time across the fleet's processes: a recount reads the raw
        samples committed so far and then writes the hour's counts, so two of them interleaved could leave the
        older reading; one at a time, the last one to run read everything committed before it."""
        async with self._pool.acquire() as c:
            released = False
            try:
                await c.execute("SELECT pg_advisory_lock($1)", _RECOUNT_LOCK)
                try:
                    yield
                finally:
                    released = await c.fetchval("SELECT pg_advisory_unlock($1)", _RECOUNT_LOCK)
            finally:
                if not released:  # cancelled or broken while it may hold the lock: the session ends, and its locks
                    c.terminate()  # (the pool no longer resets a connection given back: see _keep_session)

    # partitions of samples -----------------------------------------------------------------------------------
    async def _load_partitions(self) -> None:
        rows = await self._pool.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'samples'")
        self._days = {int(r[0][len("samples_d"):]) for r in rows if r[0].startswith("samples_d")}

    async def _ensure_partitions(self, days: set[int]) -> None:
        """Create the day partitions ``days`` (days since 1970-01-01 UTC) that do not exist yet: on a connection
        of its own (DDL must not wait inside the writer's transaction), under an advisory lock so that two
        processes do not race to create the same one."""
        missing = sorted(d for d in days if d not in self._days)
        if not missing:
            return
        async with self._pool.acquire() as c, c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
            for d in missing:
                await c.execute(f"CREATE TABLE IF NOT EXISTS samples_d{d} PARTITION OF samples "
                                f"FOR VALUES FROM ({d * DAY}) TO ({(d + 1) * DAY})")
        self._days.update(missing)

    async def partitions(self) -> list[tuple[str, str]]:
        """(partition name, its first UTC day) of ``samples``, oldest first."""
        await self._load_partitions()
        return [(f"samples_d{d}", datetime.fromtimestamp(d * DAY, UTC).date().isoformat()) for d in sorted(self._days)]

    async def purge_samples(self, before_ts: int) -> int:
        """Drop every day partition wholly before ``before_ts`` (no row-by-row delete, no bloat), then delete
        the older rows of the partition it falls in; the keys of the samples that went (``sample_keys``: the
        same ts, so the same rule), in the same transaction. How many samples went."""
        await self._load_partitions()
        whole = [d for d in sorted(self._days) if (d + 1) * DAY <= before_ts]
        n = 0
        async with self.write() as db:
            for d in whole:
                n += int((await (await db.execute(f"SELECT count(*) FROM samples_d{d}")).fetchone())[0])
                await db.execute(f"DROP TABLE samples_d{d}")
            cur = await db.execute("DELETE FROM samples WHERE ts < ?", (before_ts,))
            n += max(0, cur.rowcount)
            await db.execute("DELETE FROM sample_keys WHERE ts < ?", (before_ts,))
        self._days.difference_update(whole)
        return n


class PostgresStorage(PgEngine, AccountStore, SqlStore):
    def __init__(self, url: str, readers: int = 4) -> None:
        PgEngine.__init__(self, url, readers)
        SqlStore.__init__(self)
