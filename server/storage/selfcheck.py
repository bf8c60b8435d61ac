"""What the server's self-inspection reads from its database: its size, and the backups recorded in ``meta``.

``posfleet server db backup`` records every backup it completed (:func:`record_backup`, called by
:func:`server.storage.ops.backup`) in the database itself, so that every server process, on this host or another
(PostgreSQL), can say when the last one was made; the record is written after the copy is complete, so a backup
that failed half-way is never recorded.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

LAST_BACKUP_KEY = "last_backup"  # JSON: {"ts", "file", "bytes", "backend"}


async def database_bytes(storage: Any) -> int | None:
    """The database's size on disk (SQLite: the file with its WAL; PostgreSQL: ``pg_database_size``)."""
    if getattr(storage, "dialect", "") == "postgresql":
        row = await storage._one("SELECT pg_database_size(current_database())")
        return int(row[0]) if row else None
    path = getattr(storage, "path", None)
    if path is None:
        return None
    total = 0
    for p in (Path(path), Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total


async def last_backup(storage: Any) -> dict[str, Any] | None:
    text = await storage.meta_get(LAST_BACKUP_KEY)
    if not text:
        return None
    try:
        row = json.loads(text)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("ts"), int | float) else None


def record_backup(url: str, out: Path, base_dir: str = "", now: float | None = None) -> dict[str, Any]:
    """Record a completed backup of the database ``url`` names, in that database (see the module's text)."""
    from .ops import sqlite_file

    row = {"ts": time.time() if now is None else now, "file": str(out.resolve()), "bytes": out.stat().st_size,
           "backend": "sqlite" if url.startswith("sqlite:///") else "postgresql"}
    sql = ("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
    path = sqlite_file(url, base_dir)
    if path is not None:
        db = sqlite3.connect(path, timeout=30)
        try:
            with db:
                db.execute(sql, (LAST_BACKUP_KEY, json.dumps(row)))
        finally:
            db.close()
        return row
    import asyncio

    from .postgres import connect

    async def put() -> None:
        conn = await connect(url)
        try:
            await conn.execute(sql.replace("?, ?", "$1, $2"), LAST_BACKUP_KEY, json.dumps(row))
        finally:
            await conn.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(put())
    else:  # called from async code (a test, a server task): its own loop in a thread
        import threading

        failed: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(put())
            except BaseException as err:  # noqa: BLE001 - raised in the caller's thread below
                failed.append(err)

        t = threading.Thread(target=run)
        t.start()
        t.join()
        if failed:
            raise failed[0]
    return row


async def open_alerts_by_kind(storage: Any) -> dict[str, int]:
    """Open alerts per kind (one index read: ``alerts_open``)."""
    rows = await storage._all("SELECT kind, count(*) FROM alerts WHERE closed_ts IS NULL GROUP BY kind")
    return {str(r[0]): int(r[1]) for r in rows}


async def units_by_state(storage: Any) -> dict[str, int]:
    """Units heard by ingest, by broker session state (``online``/``offline``)."""
    rows = await storage._all("SELECT online, count(*) FROM units GROUP BY online")
    out = {"online": 0, "offline": 0}
    for r in rows:
        out["online" if r[0] else "offline"] += int(r[1])
    return out
