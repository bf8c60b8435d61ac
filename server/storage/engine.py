"""The storage engine: connections, the one writer, the read pool, schema versions and migrations.

The domain stores (``registry.py``, ``samples.py``, ``outages.py``, ``rollups.py``, ``alerts.py``, ``meta.py``, ...,
together :class:`~server.storage.sqlite.SqlStore`) are written against this small surface and nothing else, in
SQL that both backends run (``?`` parameters; ``ON CONFLICT`` upserts; ``RETURNING``):

* ``async with engine.write() as db:`` one write transaction, alone in this process; ``db.execute(sql, args)``
  returns a cursor (``fetchone``, ``fetchall``, ``rowcount``), ``db.executemany``, ``db.execute_fetchall``;
* ``_all`` / ``_one`` (a pooled reader), ``_quick`` / ``_quick_one`` (short index reads), ``reader()``;
* a few dialect hooks: :meth:`json_ints` (numbers out of a JSON text column), :meth:`insert_ignore` (bulk insert
  that skips duplicates and says how many were new), :meth:`purge_samples` (SQLite deletes, PostgreSQL drops
  whole partitions), :attr:`units_grown_sql`, :attr:`json_fns` and :attr:`hex_fn` (a JSON array, its aggregate
  and a blob's hexadecimal text: several rows read beside others in one statement).

Backends: :class:`SqliteEngine` here (aiosqlite: WAL, one writer connection, read-only connections beside it),
:class:`server.storage.postgres.PgEngine` (asyncpg).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from .base import INGEST_STATS_KEY, PENDING_KEY
from .schema import MIGRATIONS, SCHEMA_VERSION, SchemaTooNew, newer_sentence

log = logging.getLogger(__name__)

# Versions in ``meta`` that every writer bumps in the same transaction as its write, so that every process (the
# primary and the API-only workers) can tell when its caches are stale: the registry index and counts
# (``registry_version``), the figures and drill-down caches (``rollup_version``, ``rolled_to``).
VERSION_KEYS = ("registry_version", "rollup_version", "rolled_to", INGEST_STATS_KEY, PENDING_KEY)
VERSION_TTL_S = 1.0  # another process's write is noticed within this long (this process's own at once)


class Engine:
    """What both backends share: version rows in ``meta`` and the short-read helpers built on ``_all``."""

    dialect = ""
    units_grown_sql = ""  # a number that grows whenever a unit is first heard (a cache key)

    async def units_new(self, db: Any, sns: Sequence[str]) -> bool:
        """Inside a write about to insert ``sns`` into ``units``: whether it must move what ``units_grown_sql``
        reads (call :meth:`units_grew` at the end of the transaction). SQLite: never (the rowid grows by itself)."""
        return False

    async def units_grew(self, db: Any) -> None:
        """Move what ``units_grown_sql`` reads, inside the caller's transaction (see :meth:`units_new`)."""

    def __init__(self) -> None:
        self._versions: dict[str, str] = {}
        self._versions_at = float("-inf")
        self._together: dict[str, _Together] = {}  # read_together: each kind's batch not sent yet
        self.together_asked = 0  # read_together's keys asked for, and the statements that answered them
        self.together_sent = 0

    # the backend provides: open, close, write, reader, _all, _quick, meta_set_apart, insert_ignore, json_ints
    async def _all(self, sql: str, args: Any = ()) -> list[Any]:
        """Every row of ``sql``: each backend's own (SQLite below, PostgreSQL in postgres.py); an abstract hook."""
        raise NotImplementedError(f"{type(self).__name__} is a storage backend without _all")

    async def _quick(self, sql: str, args: Any = ()) -> list[Any]:
        return await self._all(sql, args)

    async def _quick_one(self, sql: str, args: Any = ()) -> Any:
        rows = await self._quick(sql, args)
        return rows[0] if rows else None

    async def _one(self, sql: str, args: Any = ()) -> Any:
        """The first row, or None. For statements that return at most a few rows (all are fetched)."""
        rows = await self._all(sql, args)
        return rows[0] if rows else None

    @staticmethod
    def in_set_sql(column: str, values: Sequence[str], lookup: bool = False) -> tuple[str, list[Any]]:
        """A condition true when ``column`` is one of ``values`` (any number of them), and its arguments: one
        ``IN`` list here (PostgreSQL's ``translate`` makes it one array, ``= ANY($n)``); SQLite's below.
        ``lookup``: the set may be looked up in an index on ``column`` (SQLite: see there; here the planner's)."""
        if not values:
            return "1 = 0", []
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    @staticmethod
    def indexed_by(index: str) -> str:
        """A hint after a table's name that the statement reads it through ``index``: SQLite's below; none here
        (PostgreSQL's planner chooses)."""
        return ""

    @staticmethod
    async def _bump(db: Any, key: str) -> None:
        """Bump a version row (inside the caller's transaction): other processes drop their caches."""
        await db.execute("INSERT INTO meta(key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE SET "
                         "value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT)", (key,))

    async def versions(self) -> dict[str, str]:
        """``registry_version``, ``rollup_version``, ``rolled_to`` and the ingest figures from ``meta`` (missing
        keys: ``""``), read at most every ``VERSION_TTL_S`` (one indexed read), and at once after a write by this
        process."""
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

    async def read_together(self, kind: str, key: str, statement: Callable[[list[str]], tuple[str, list[Any]]]
                            ) -> list[Any]:
        """Every row of ``statement(keys)`` (the caller picks its own by ``key``): one statement for the ``key`` of
        every caller that asks for the same ``kind`` before that statement is sent (decision 042). Each request
        checks its token or session this way: fifty requests at once in a process waited for a pooled
        connection each to send the same short look-up, and now share one.

        Not a cache: a caller joins only a statement that is not sent yet (it waits for a pooled connection), so
        what it reads was committed at the latest when the statement ran, after the caller asked. A revocation
        committed by any process before a request arrived is seen by that request (decision 010)."""
        batch = self._together.get(kind)
        if batch is None:
            batch = self._together[kind] = _Together()
            batch.task = asyncio.ensure_future(self._send_together(kind, batch, statement))
            batch.task.add_done_callback(_seen)
        batch.keys.add(key)
        self.together_asked += 1
        return await asyncio.shield(batch.task)  # type: ignore[arg-type]  # (set above, before any await)

    async def _send_together(self, kind: str, batch: _Together,
                             statement: Callable[[list[str]], tuple[str, list[Any]]]) -> list[Any]:
        async with self.reader() as db:  # type: ignore[attr-defined]  # (each backend's)
            if self._together.get(kind) is batch:  # closed: whoever asks from now on waits for the next one
                del self._together[kind]
            sql, args = statement(sorted(batch.keys))
            self.together_sent += 1
            return list(await db.execute_fetchall(sql, args))


class _Together:
    """The keys asked for while their statement waits for a connection (:meth:`Engine.read_together`)."""

    __slots__ = ("keys", "task")

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.task: asyncio.Future[list[Any]] | None = None


def _seen(task: asyncio.Future[Any]) -> None:
    """A shared read's failure is its callers' (each awaited it); taken here too, so that one whose callers all
    went away is not logged as never retrieved."""
    if not task.cancelled():
        task.exception()


def schema_version(path: Path) -> int | None:
    """The schema version of the SQLite database at ``path`` (None when there is no database yet), read-only."""
    if not path.exists():
        return None
    con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("PRAGMA user_version").fetchone()[0])
    finally:
        con.close()


def too_new(path: Path) -> str:
    """A sentence when the SQLite database at ``path`` is newer than this server, else ""."""
    v = schema_version(path)
    return newer_sentence(v) if v is not None and v > SCHEMA_VERSION else ""


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


class SqliteEngine(Engine):
    """SQLite through aiosqlite: WAL, one writer connection and a small pool of read-only connections.

    Every write goes through the single writer connection, inside ``async with storage.write() as db:``: one
    ``asyncio.Lock`` makes each write transaction run alone on it, committed at the end of the block and rolled
    back if the block raises (cancellation included). The ``sqlite3`` module keeps ONE implicit transaction per
    connection, shared by every coroutine using it, so without the lock a writer that rolled back (after
    ``SQLITE_BUSY``, an error or a cancelled request) while ingest awaited between its statements silently undid
    ingest's inserted samples, which were then acknowledged to the agent and lost; and a commit could publish
    another writer's half-done transaction. Never write on ``self.db`` outside ``write()``. Every standalone read
    (a query that does not need to see an uncommitted write of the same transaction) takes a connection from the
    read pool: in WAL mode readers run beside the writer and beside each other, and the ``sqlite3`` module
    releases the GIL while a statement runs, so a long scan on one connection no longer makes every other request
    queue behind it (aiosqlite runs each connection's statements on that connection's own thread, one at a
    time). A reader sees everything committed before its statement starts.
    """

    dialect = "sqlite"
    units_grown_sql = "SELECT max(rowid) FROM units"
    json_fns = ("json_array", "json_group_array")  # (a JSON array of values, the aggregate of them): one JSON text
    hex_fn = "hex({})"  # a blob as hexadecimal text

    def __init__(self, path: Path, readers: int = 4) -> None:
        super().__init__()
        self.path = path
        self.readers = max(0, readers)
        self._db: aiosqlite.Connection | None = None
        self._read_conns: list[aiosqlite.Connection] = []
        self._pool: asyncio.Queue[aiosqlite.Connection] | None = None
        self._side: aiosqlite.Connection | None = None  # see meta_set_apart
        self._inline: sqlite3.Connection | None = None  # see _quick
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

    async def schema_version(self) -> int:
        return int((await (await self.db.execute("PRAGMA user_version")).fetchone())[0])

    async def _migrate(self) -> None:
        db = self.db
        v = await self.schema_version()
        if v > SCHEMA_VERSION:
            await db.close()
            self._db = None
            raise SchemaTooNew(f"{self.path}: {newer_sentence(v)}")
        for n, what, scripts in MIGRATIONS:
            if n <= v:
                continue
            # the step and its version in one transaction: done whole or not at all (a step that adds a column,
            # which SQLite cannot write idempotently, is never half done by a crash and run again)
            try:
                await db.executescript("BEGIN;\n" + "\n".join(scripts) + f"\nPRAGMA user_version = {n};\nCOMMIT;")
            except BaseException:
                if db.in_transaction:
                    await db.rollback()
                raise
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

    async def meta_set_apart(self, key: str, value: str) -> None:
        """``meta_set`` on a connection of its own: a periodic write from a background task must not commit in the
        middle of another coroutine's transaction on the shared writer (e.g. ingest's)."""
        if self._side is None:
            self._side = await aiosqlite.connect(str(self.path))
            await self._side.execute("PRAGMA busy_timeout=5000")
        await self._side.execute("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET "
                                 "value=excluded.value", (key, value))
        await self._side.commit()

    # dialect hooks -------------------------------------------------------------------------------------------
    @staticmethod
    def json_ints(column: str, keys: tuple[str, ...]) -> tuple[str, list[str]]:
        """The numbers at ``keys`` of the JSON text in ``column`` (NULL when absent): SQL to put after the table in
        FROM (nothing here) and an expression for each key. PostgreSQL parses each row's text once for all keys
        (:meth:`PgEngine.json_ints`); SQLite's ``json_extract`` is cheap enough per key."""
        return "", [f"json_extract({column}, '$.{key}')" for key in keys]

    @staticmethod
    def in_set_sql(column: str, values: Sequence[str], lookup: bool = False) -> tuple[str, list[Any]]:
        """As :meth:`Engine.in_set_sql`, as one JSON argument (binding thousands of parameters costs more than
        the query) and with ``+column``: SQLite then walks the index that gives the order (``units_last_seen``)
        and tests each row against the set, instead of reading every row of the set by its key and sorting.
        ``lookup``: without the ``+``, so that SQLite may look each value up in an index on ``column`` (a small
        scope's units in ``units_sn_last_seen``, a scope's rows in ``audit_target``) and sort what it found."""
        return (f"{'' if lookup else '+'}{column} IN (SELECT value FROM json_each(?))",
                [json.dumps(list(values), ensure_ascii=False)])

    @staticmethod
    def indexed_by(index: str) -> str:
        """``INDEXED BY index``: where SQLite's planner takes another index (``units_sn_last_seen`` covers a
        unit's ``last_seen``, but SQLite prefers the unique key on ``sn`` and reads each unit's row)."""
        return f"INDEXED BY {index}"

    async def insert_ignore(self, db: aiosqlite.Connection, table: str, rows: Sequence[Sequence[Any]]) -> int:
        """Insert ``rows`` (every column, in order) inside ``db``'s transaction, skipping those whose key is
        already stored; how many were new."""
        if not rows:
            return 0
        before = db.total_changes
        await db.executemany(f"INSERT INTO {table} VALUES ({','.join('?' * len(rows[0]))}) ON CONFLICT DO NOTHING",
                             rows)
        return db.total_changes - before

    async def queue_in_commit_order(self, db: aiosqlite.Connection) -> None:
        """Make ``recount_queue`` ids become visible in id order (the leader reads past the last id it took). SQLite
        has one writer at a time, processes included, so its ids commit in order already."""

    async def purge_samples(self, before_ts: int) -> int:
        async with self.write() as db:
            cur = await db.execute("DELETE FROM samples WHERE ts < ?", (before_ts,))
        return cur.rowcount

    # several processes ---------------------------------------------------------------------------------------
    async def lead(self) -> bool:
        """Whether this process runs the fleet's background work: on SQLite (one host, one primary) always."""
        return True

    @contextlib.asynccontextmanager
    async def recount_lock(self) -> AsyncIterator[None]:
        """Held while roll-ups are recounted from raw samples (one primary on SQLite: nothing to exclude)."""
        yield
