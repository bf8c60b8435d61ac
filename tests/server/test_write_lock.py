"""Write transactions on the shared writer connection do not interleave (real SQLite file, real storage).

``sqlite3`` keeps one implicit transaction per connection, shared by every coroutine that writes on it. Before
``SqliteStorage.write()`` a registry write that failed (and rolled back) while ingest awaited between its
statements undid ingest's inserted samples; ingest then committed the rest and reported them stored, so the
agent was acknowledged and deleted samples the database did not have.

The interleaving is made deterministic with a temporary trigger on the writer connection: when ingest upserts
its first unit, a SQL function (run on aiosqlite's writer thread) tells the event loop and blocks until the
competing writer has had its chance to queue its statements.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from server.storage.base import EventRow, SampleRow
from server.storage.sqlite import SqliteStorage

SNS = [f"HN0099{i:04d}" for i in range(8)]


def _samples(ts0: int) -> list[SampleRow]:
    return [SampleRow(sn, 1, seq, ts0 + 60 * seq, 60, 0, True, 40, {"net": ["ok", ""]}, {"cpu": 3}, time.time())
            for sn in SNS for seq in range(5)]


def _count(path: Path, sql: str, args: tuple = ()) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute(sql, args).fetchone()[0])
    finally:
        con.close()


async def _pause_ingest_at_first_unit(storage: SqliteStorage) -> tuple[asyncio.Event, threading.Event]:
    """An asyncio event set when ingest is inside its transaction (samples inserted, first unit being upserted),
    and a threading event that lets ingest go on."""
    loop = asyncio.get_running_loop()
    inside, go_on = asyncio.Event(), threading.Event()

    def pause() -> int:  # on the writer's thread, in the middle of ingest's transaction
        loop.call_soon_threadsafe(inside.set)
        assert go_on.wait(10), "the test never released ingest"
        return 0

    await storage.db.create_function("test_pause", 0, pause)
    await storage.db.execute(f"CREATE TEMP TRIGGER test_pause AFTER INSERT ON units WHEN NEW.sn = '{SNS[0]}' "
                             "BEGIN SELECT test_pause(); END")
    return inside, go_on


async def test_failed_writer_does_not_undo_acknowledged_ingest(tmp_path: Path) -> None:
    path = tmp_path / "fleet.sqlite"
    storage = SqliteStorage(path)
    await storage.open()
    try:
        await storage.ensure_registered({"HN00980001": 1_700_000_000})
        inside, go_on = await _pause_ingest_at_first_unit(storage)
        samples = _samples(1_700_000_000)
        events = [EventRow(SNS[1], 1, 1, 1_700_000_000, "boot", {"n": 1}, time.time())]
        ingest = asyncio.create_task(storage.store_telemetry(samples, events))
        await asyncio.wait_for(inside.wait(), 10)
        # a registry write that applies one change, then fails on an unknown unit (rolls back)
        failing = asyncio.create_task(storage.change_status([
            ("HN00980001", 1_700_000_100, "in_repair", "test", "half"),
            ("HN00989999", 1_700_000_100, "in_repair", "test", "unknown unit"),
        ]))
        for _ in range(5):  # let it queue whatever it may queue on the writer
            await asyncio.sleep(0)
        go_on.set()
        stored = await asyncio.wait_for(ingest, 20)
        with pytest.raises(KeyError):
            await asyncio.wait_for(failing, 20)
    finally:
        go_on.set()
        await storage.close()

    # ingest reported (and the agent would be acknowledged for) every sample and the event ...
    assert stored == len(samples) + len(events)
    # ... so every one of them must be in the file
    assert _count(path, "SELECT count(*) FROM samples") == len(samples)
    assert _count(path, "SELECT count(*) FROM events") == len(events)
    assert _count(path, "SELECT count(*) FROM units") == len(SNS)
    # and the failed registry write left nothing of itself behind
    assert _count(path, "SELECT count(*) FROM registry WHERE status='in_repair'") == 0
    assert _count(path, "SELECT count(*) FROM status_history WHERE note='half'") == 0


async def test_cancelled_and_nested_writes(tmp_path: Path) -> None:
    path = tmp_path / "fleet.sqlite"
    storage = SqliteStorage(path)
    await storage.open()
    try:
        # a write cancelled in the middle of its transaction is rolled back, and the next writer goes on
        started = asyncio.Event()

        async def slow_writer() -> None:
            async with storage.write() as db:
                await db.execute("INSERT INTO meta(key, value) VALUES ('cancelled', 'x')")
                started.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(slow_writer())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await storage.meta_set("after", "y")

        # a write block inside another of the same task joins it (no deadlock); the outer block's error undoes both
        async with storage.write() as db:
            await db.execute("INSERT INTO meta(key, value) VALUES ('outer', '1')")
            async with storage.write() as inner:
                assert inner is db
                await inner.execute("INSERT INTO meta(key, value) VALUES ('inner', '1')")
        with pytest.raises(RuntimeError):
            async with storage.write() as db:
                await db.execute("INSERT INTO meta(key, value) VALUES ('outer2', '1')")
                await storage.meta_set("inner2", "1")  # a storage method called inside: joins, does not commit
                raise RuntimeError("import failed")
    finally:
        await storage.close()

    keys = {r[0] for r in sqlite3.connect(path).execute("SELECT key FROM meta")}
    assert {"after", "outer", "inner"} <= keys
    assert not keys & {"cancelled", "outer2", "inner2"}
