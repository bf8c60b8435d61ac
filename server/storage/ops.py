"""An operator's database work: status, upgrade, backup, restore, and a one-shot copy between backends.

Behind ``posfleet server db status|upgrade|backup|restore|copy`` (docs/deployment-large.md says when to use
each). SQLite backups use SQLite's online backup API (a consistent copy while the server runs); PostgreSQL's use
``pg_dump --format=custom`` and ``pg_restore`` of the installed PostgreSQL (the same major version or newer than
the server's).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from . import open_storage
from .schema import MIGRATIONS, SCHEMA_VERSION

# every table of the schema, in the order the migrations create them; the copy and the counts go through these
_CREATED = [(m.group(1), "AUTOINCREMENT" in part)
            for _n, _w, scripts in MIGRATIONS for s in scripts for part in s.split("CREATE ")
            for m in [re.match(r"TABLE IF NOT EXISTS (\w+)", part)] if m]
TABLES = tuple(dict.fromkeys(t for t, _ in _CREATED))
_IDENTITY = tuple(t for t, auto in _CREATED if auto)  # their id sequences follow the copied ids


def sqlite_file(url: str, base_dir: str = "") -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    p = Path(url[len("sqlite:///"):])
    return Path(base_dir) / p if base_dir and not p.is_absolute() else p


def pg_tool(name: str) -> str:
    """``pg_dump`` / ``pg_restore`` of the newest installed PostgreSQL (Debian keeps them per major version)."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    tool = str(found[-1]) if found else shutil.which(name)
    if not tool:
        raise RuntimeError(f"{name} is not installed (Debian: apt-get install postgresql-client)")
    return tool


async def counts(st: Any) -> dict[str, int]:
    return {t: int((await st._one(f"SELECT count(*) FROM {t}"))[0]) for t in TABLES}


async def status(url: str, base_dir: str = "") -> dict[str, Any]:
    """Backend, schema version (this server's and the database's), rows per table; PostgreSQL: sample partitions."""
    st = open_storage(url, base_dir, readers=1)
    await st.open()  # (migrates: status of a database this server would open is after its upgrade)
    try:
        out: dict[str, Any] = {"backend": st.dialect, "schema": await st.schema_version(),
                               "server_schema": SCHEMA_VERSION, "rows": await counts(st)}
        if hasattr(st, "partitions"):
            out["sample_partitions"] = [day for _name, day in await st.partitions()]
        return out
    finally:
        await st.close()


async def schema_of(url: str, base_dir: str = "") -> int | None:
    """The database's schema version without changing it (None: no database yet)."""
    path = sqlite_file(url, base_dir)
    if path is not None:
        from .engine import schema_version

        return schema_version(path)
    from .postgres import connect
    from .postgres import schema_version as pg_version

    conn = await connect(url)
    try:
        return await pg_version(conn)
    finally:
        await conn.close()


async def upgrade(url: str, base_dir: str = "") -> tuple[int | None, int]:
    """Migrate to this server's schema (what ``server run`` does at start); (before, after)."""
    before = await schema_of(url, base_dir)
    st = open_storage(url, base_dir, readers=1)
    await st.open()
    try:
        return before, await st.schema_version()
    finally:
        await st.close()


def backup(url: str, out: Path, base_dir: str = "") -> None:
    """A consistent copy of the database while the server may be running: SQLite's online backup into a new
    file, or ``pg_dump --format=custom``; once complete, recorded in the database (the server's self-inspection
    says when the last backup was made: ``selfcheck.record_backup``)."""
    _copy(url, out, base_dir)
    from .selfcheck import record_backup

    record_backup(url, out, base_dir)


def _copy(url: str, out: Path, base_dir: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    path = sqlite_file(url, base_dir)
    if path is not None:
        src = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(out)
        try:
            src.backup(dst, pages=4096, sleep=0.005)  # in steps: the server's writer is held up for one step only
        finally:
            dst.close()
            src.close()
        out.chmod(0o600)
        return
    subprocess.run([pg_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={out}", f"--dbname={url}"],
                   check=True, capture_output=True)
    out.chmod(0o600)


def restore(url: str, backup_file: Path, base_dir: str = "") -> None:
    """Put a backup back (the server stopped): the SQLite file replaced by the backup (the old one kept beside it
    as ``.before-restore``), or ``pg_restore --clean`` into the database."""
    path = sqlite_file(url, base_dir)
    if path is not None:
        if path.exists():
            shutil.copy2(path, path.with_name(path.name + ".before-restore"))
        for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            extra.unlink(missing_ok=True)
        shutil.copy2(backup_file, path)
        path.chmod(0o600)
        return
    subprocess.run([pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction",
                    f"--dbname={url}", str(backup_file)], check=True, capture_output=True)


async def availability_basis(st: Any) -> dict[str, Any]:
    """What every availability answer is summed from: per unit and month, the month roll-up; per unit and day,
    the day's totals and hours; the slot codes. Two databases with the same basis give the same answers."""
    months = sorted(int(r[0]) for r in await st._all("SELECT DISTINCT month FROM rollup_month"))
    days = sorted(int(r[0]) for r in await st._all("SELECT DISTINCT day FROM rollup_day"))
    by_month = {m: await st.rollup_sums([m], [], []) for m in months}
    by_day = {d: await st.rollup_sums([], [d], []) for d in days}
    hours = {(r[0], r[1]): bytes(r[2]) for r in await st._all("SELECT sn, day, hours FROM rollup_day")}
    slots = {(r[0], r[1], r[2]): (bytes(r[3]), r[4], r[5])
             for r in await st._all("SELECT sn, day, hour, codes, reasons, samples FROM slot_hour")}
    return {"months": by_month, "days": by_day, "hours": hours, "slots": slots}


async def copy(src_url: str, dst_url: str, base_dir: str = "", chunk: int = 20_000,
               say: Callable[[str], None] = print) -> dict[str, int]:
    """Copy every table of one database into another, empty one (its schema made by this server), then check:
    the same rows in every table and the same availability basis. Rows per table. Raises on a mismatch or a
    non-empty target."""
    src = open_storage(src_url, base_dir, readers=1)
    dst = open_storage(dst_url, base_dir, readers=1)
    await src.open()
    await dst.open()
    try:
        have = await counts(dst)
        busy = {t: n for t, n in have.items() if n}
        if busy:
            raise RuntimeError(f"the target database is not empty ({busy}): copy only into a new database")
        want = await counts(src)
        for table in TABLES:
            cols = [c for c in await _columns(src, table) if c != "rowid"]
            t = time.monotonic()
            n = 0
            async for rows in _rows(src, table, cols, chunk):
                await _put(dst, table, cols, rows)
                n += len(rows)
            if n:
                say(f"{table}: {n:,} rows ({time.monotonic() - t:.1f} s)")
        if dst.dialect == "postgresql":
            for table in _IDENTITY:
                async with dst.write() as db:
                    await db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)")
        got = await counts(dst)
        if got != want:
            raise RuntimeError(f"row counts differ after the copy: source {want}, target {got}")
        if await availability_basis(src) != await availability_basis(dst):
            raise RuntimeError("the availability roll-ups differ after the copy")
        return got
    finally:
        await src.close()
        await dst.close()


async def _columns(st: Any, table: str) -> list[str]:
    if st.dialect == "sqlite":
        return [str(r[1]) for r in await st._all(f"PRAGMA table_info({table})")]
    return [str(r[0]) for r in await st._all("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                                           "AND table_schema = current_schema() ORDER BY ordinal_position", (table,))]


async def _rows(st: Any, table: str, cols: list[str], chunk: int) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Every row of ``table`` in chunks, in one scan (one read transaction: a consistent table)."""
    select = f"SELECT {', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)} FROM {table}"
    if st.dialect == "sqlite":
        async with st.reader() as db:
            cur = await db.execute(select)
            while rows := await cur.fetchmany(chunk):
                yield [tuple(r) for r in rows]
        return
    async with st._pool.acquire() as c, c.transaction(isolation="repeatable_read", readonly=True):
        cur = await c.cursor(select)
        while rows := await cur.fetch(chunk):
            yield [tuple(r) for r in rows]


async def _put(dst: Any, table: str, cols: list[str], rows: list[tuple[Any, ...]]) -> None:
    if dst.dialect == "postgresql":
        if table == "samples":
            await dst._ensure_partitions({int(r[cols.index("ts")]) // 86400 for r in rows})
        async with dst.write() as db:
            await db._conn.copy_records_to_table(table, records=rows, columns=cols)
            if table == "samples":  # each sample's identity, so that a resend re-dated later is not stored again
                at = [cols.index(c) for c in ("sn", "epoch", "seq", "ts")]
                await db._conn.copy_records_to_table("sample_keys", records=[tuple(r[i] for i in at) for r in rows],
                                                     columns=["sn", "epoch", "seq", "ts"])
        return
    quoted = ", ".join(f'"{c}"' for c in cols)
    async with dst.write() as db:
        await db.executemany(f"INSERT INTO {table} ({quoted}) VALUES ({','.join('?' * len(cols))})", rows)
