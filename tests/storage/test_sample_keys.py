"""A sample is its (sn, epoch, seq) on both backends, whatever its ts (issue 15, decision 024).

An agent re-dates the samples it took before its clock was checked (docs/agent.md, Clocks); one that had already
sent such a sample resends it with another ts. SQLite's key is (sn, epoch, seq); PostgreSQL's partitioned
``samples`` cannot have that key, so ``sample_keys`` holds it. Two storage objects on one database stand for two
server processes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from server.storage import SampleRow, open_storage
from server.storage.schema import SCHEMA_VERSION

T0 = 1_741_000_000 - 1_741_000_000 % 86400  # a UTC midnight (2025-03-03)


def smp(sn: str, seq: int, ts: int) -> SampleRow:
    return SampleRow(sn, 1, seq, ts, 60, 0, True, 80, {"printer": [0, ""]}, {"ts": ts}, float(ts))


async def test_a_re_dated_resend_is_stored_once_whichever_process_gets_it(store: Any, other: Any) -> None:
    """A sample is its (sn, epoch, seq): an agent that re-dated its outbox after a clock correction (docs/agent.md,
    Clocks) resends the same samples with another ts, here 540 days later (another day partition in PostgreSQL)."""
    first = [smp("A1", k, T0 + 60 * k) for k in range(10)]
    re_dated = [smp("A1", k, T0 + 540 * 86400 + 60 * k) for k in range(12)]
    assert await store.store_telemetry(first, []) == 10
    assert await other.store_telemetry(re_dated, []) == 2  # only seq 10 and 11 are new
    assert await store.store_telemetry(re_dated[:5], []) == 0
    assert await store.count_samples() == 12
    assert [s.ts for s in await other.samples_between(["A1"], T0, T0 + 600)] == [T0 + 60 * k for k in range(10)]


async def test_concurrent_re_dated_resends_from_two_processes_store_each_sample_once(store: Any, other: Any) -> None:
    """Both processes commit overlapping batches at the same time, each with its own dates for the same samples:
    whichever commits first keeps its copy, the other's is a no-op, and the counts add up exactly."""
    units = [f"C{u}" for u in range(20)]

    def batch(shift: int, lo: int, hi: int) -> list[SampleRow]:
        return [smp(sn, k, T0 + shift + 60 * k) for sn in units for k in range(lo, hi)]

    stored = 0
    for r in range(6):
        got = await asyncio.gather(store.store_telemetry(batch(0, 10 * r, 10 * r + 15), []),
                                   other.store_telemetry(batch(3 * 86400, 10 * r + 5, 10 * r + 20), []),
                                   store.store_telemetry(batch(86400, 10 * r, 10 * r + 20), []))
        stored += sum(got)
    assert stored == await other.count_samples() == 20 * 70
    for sn in units[:3]:
        seqs = [s.seq for s in await store.samples_between([sn], T0, T0 + 5 * 86400)]
        assert sorted(seqs) == list(range(70))


async def test_a_purged_sample_resent_with_a_new_date_is_stored_again(store: Any) -> None:
    """Retention forgets a purged sample's key with it, on both backends: the same outbox row re-dated into the
    kept days is stored (SQLite deletes the row, PostgreSQL drops the partition and the keys in it)."""
    await store.store_telemetry([smp("A1", k, T0 + 3600 * 6 * k) for k in range(12)], [])  # 3 days
    assert await store.purge_samples(T0 + 86400) == 4
    assert await store.store_telemetry([smp("A1", k, T0 + 4 * 86400 + 60 * k) for k in range(6)], []) == 4
    assert await store.count_samples() == 12
    if store.dialect == "postgresql":  # the keys went with the rows, not only the rows
        assert (await store._one("SELECT count(*) FROM sample_keys"))[0] == 12


async def test_a_postgresql_database_holding_a_sample_twice_keeps_the_first_copy_on_upgrade(pg_url: str) -> None:
    """Schema 9 on a PostgreSQL database written before it: a sample stored twice (re-dated, as schema 8 allowed)
    keeps the copy received first, as SQLite would have, and a third copy is refused after the upgrade."""
    from server.storage.postgres import connect
    from server.storage.schema import PG_MIGRATIONS

    conn = await connect(pg_url)
    try:
        await conn.execute("CREATE TABLE posfleet_schema (version BIGINT NOT NULL, what TEXT NOT NULL, "
                           "at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for n, what, ddl in PG_MIGRATIONS:
            if n <= 8:
                await conn.execute(ddl)
                await conn.execute("INSERT INTO posfleet_schema(version, what) VALUES ($1, $2)", n, what)
        day = T0 // 86400
        for d in (day, day + 540):
            await conn.execute(f"CREATE TABLE samples_d{d} PARTITION OF samples FOR VALUES FROM ({d * 86400}) "
                               f"TO ({(d + 1) * 86400})")
        for seq, ts, received in [(0, T0, 10.0), (1, T0 + 60, 11.0), (0, T0 + 540 * 86400, 99.0)]:
            await conn.execute("INSERT INTO samples VALUES ($1, 1, $2, $3, 60, 0, 1, 80, '{}', '{}', $4)",
                               "A1", seq, ts, received)
    finally:
        await conn.close()
    st = open_storage(pg_url)
    await st.open()
    try:
        assert await st.schema_version() == SCHEMA_VERSION
        assert sorted((s.seq, s.ts) for s in await st.samples_between(None, 0, 2**40)) == [(0, T0), (1, T0 + 60)]
        assert await st.store_telemetry([smp("A1", 0, T0 + 7200), smp("A1", 2, T0 + 120)], []) == 1
        assert await st.count_samples() == 3
    finally:
        await st.close()


async def test_the_recount_queue_becomes_visible_in_id_order_across_processes(store: Any, other: Any) -> None:
    """The leader reads ``recount_queue`` past the last id it took. On PostgreSQL a process could draw id n, another
    draw n + 1 and commit first: the leader took n + 1, never read n, and deleted it with the rest, so the late
    sample's hours were never recounted (stored, not counted). Now a transaction's queue rows wait for the one
    before it to commit: no reader sees an id while a lower one is still uncommitted."""
    async with store.write():  # process A's ingest transaction, still open (store_telemetry joins it)
        await store.store_telemetry([smp("A1", 1, T0)], [])
        b = asyncio.create_task(other.store_telemetry([smp("B1", 1, T0 + 60)], []))  # process B, meanwhile
        await asyncio.sleep(0.5)
        assert await other.recount_queue() == [], "a queue row visible while a lower id was still uncommitted"
    assert await b == 1
    rows = await other.recount_queue()
    assert [r[1] for r in rows] == ["A1", "B1"] and rows[0][0] < rows[1][0], rows
