"""Storage commit rate and size, SQLite beside PostgreSQL (issue 15), same machine, same run.

What runs: the server's storage (``open_storage``: the code ingest commits through) on a SQLite file and on a
PostgreSQL cluster of the benchmark's own (``simulator.postgres``: initdb in a temporary folder, default settings
but ``shared_buffers`` as given, fsync on). A backlog drain as ingest does it: commits of ``--per-commit``
messages, each one unit's batch of 10 one-minute samples (the agent's batch), spread over ``--units`` units, in
one process, one commit at a time (ingest's writer is one connection whose transactions run one at a time).
MQTT and decoding are not in it (bench_ingest measures those, on SQLite); this is what the database side can take.

Prints samples/s committed, the bytes a stored sample takes (table + indexes, after the drain; PostgreSQL's with
its row of ``sample_keys``), and from that the size of 50,000 units x 14 days of one-minute samples; and the CPU a
sample took in the benchmark's process (SQLite works there) and in the PostgreSQL backend that committed.

    .venv/bin/python -m benchmarks.bench_storage                     # 300,000 samples each, ~1 min
    .venv/bin/python -m benchmarks.bench_storage --samples 1000000 --units 50000

``--drop-index NAME`` drops that index after the schema is made, before the drain: the same drain without it, to
measure what one index costs ingest (``--backends sqlite`` measures one backend only):

    .venv/bin/python -m benchmarks.bench_storage --units 20000 --samples 600000 --drop-index units_sn_last_seen
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

from server.storage import SampleRow, open_storage
from simulator.postgres import Postgres

T0 = 1_764_547_200  # 2025-12-01 00:00 UTC


def batches(units: int, samples: int, seed: int = 1) -> list[list[SampleRow]]:
    """``samples // 10`` batches of 10 one-minute samples, one unit each, the units taking turns."""
    rnd = random.Random(seed)
    out = []
    seqs = [0] * units
    for b in range(samples // 10):
        u = b % units
        sn = f"SX{u:07d}"
        rows = []
        for _ in range(10):
            k = seqs[u]
            seqs[u] += 1
            ts = T0 + 60 * k
            body = {"seq": k, "ts": ts, "interval": 60, "connected": True, "rtt_ms": rnd.randint(40, 400),
                    "csq": rnd.randint(5, 31), "rsrp": -rnd.randint(70, 120), "tac": 4301, "cell_id": 1000 + u % 97,
                    "cpu_pct": round(rnd.random() * 30, 1), "mem_pct": 41.5, "disk_pct": 22.0, "data_bytes": 1000 * k,
                    "checks": {"printer": [0, ""], "idcard": [0, ""], "modem": [0, ""], "storage": [0, ""]}}
            rows.append(SampleRow(sn, 1, k, ts, 60, 0, True, body["rtt_ms"], body["checks"], body, time.time()))
        out.append(rows)
    return out


def _cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) of process ``pid`` on this machine (the PostgreSQL backend), 0 for None."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drain(url: str, work: list[list[SampleRow]], per_commit: int, drop: str = ""
                ) -> tuple[float, int, float, float]:
    """Seconds, samples stored, CPU seconds of this process and of the PostgreSQL backend that committed them (CPU
    is what the shared machine's load disturbs least: the wall-clock rate moves with other people's work);
    ``drop``: an index dropped first."""
    st = open_storage(url)
    await st.open()
    try:
        if drop:
            async with st.write() as db:
                await db.execute(f"DROP INDEX {drop}")
        pid = None
        if st.dialect == "postgresql":
            async with st.write() as db:
                pid = int((await (await db.execute("SELECT pg_backend_pid()")).fetchone())[0])
        t, c, b = time.perf_counter(), time.process_time(), _cpu_of(pid)
        stored = 0
        for i in range(0, len(work), per_commit):
            stored += await st.store_telemetry([s for b in work[i: i + per_commit] for s in b], [])
        dt = time.perf_counter() - t
        assert stored == sum(len(b) for b in work), stored
        return dt, stored, time.process_time() - c, _cpu_of(pid) - b
    finally:
        await st.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=300_000)
    ap.add_argument("--units", type=int, default=3_000)
    ap.add_argument("--per-commit", type=int, default=50, help="messages (10 samples each) a commit")
    ap.add_argument("--shared-buffers", default="512MB")
    ap.add_argument("--drop-index", default="", help="drop this index before the drain (what it costs ingest)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    a = ap.parse_args()
    if a.drop_index and not a.drop_index.replace("_", "").isalnum():
        ap.error(f"--drop-index: not an index name: {a.drop_index!r}")
    backends = {b.strip() for b in a.backends.split(",")}
    work = batches(a.units, a.samples)
    print(f"machine: {os.cpu_count()} cores, load average before {os.getloadavg()[0]:.2f} "
          "(the cores are shared with other work: figures are lower bounds)")
    print(f"backlog: {a.samples:,} samples, {a.units:,} units, {a.per_commit} batches of 10 a commit"
          f"{f', index {a.drop_index} dropped' if a.drop_index else ''}")
    results = {}
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "fleet.sqlite"
            dt, n, cpu, cpu_db = asyncio.run(drain(f"sqlite:///{db}", work, a.per_commit, a.drop_index))
            size = sum(p.stat().st_size for p in Path(tmp).iterdir())
            results["sqlite"] = (n / dt, size / n, cpu / n, cpu_db / n)
    if "postgresql" not in backends:
        _report(results)
        return
    with Postgres(settings={"shared_buffers": a.shared_buffers}) as pg:
        url = pg.create("bench")
        dt, n, cpu, cpu_db = asyncio.run(drain(url, work, a.per_commit, a.drop_index))
        pg.psql("VACUUM ANALYZE", "bench")
        size = int(pg.psql("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i JOIN pg_class c "
                           "ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname='samples'",
                           "bench"))
        size += int(pg.psql("SELECT coalesce(pg_total_relation_size(to_regclass('sample_keys')), 0)", "bench"))  # each sample's identity
        results["postgresql"] = (n / dt, size / n, cpu / n, cpu_db / n)
    _report(results)


def _report(results: dict[str, tuple[float, float, float, float]]) -> None:
    per_fortnight = 50_000 * 14 * 1440
    for name, (rate, per, cpu, cpu_db) in results.items():
        print(f"{name:11s} {rate:10,.0f} samples/s committed   {per:6.0f} B a sample   "
              f"50,000 units x 14 days: {per * per_fortnight / 2**30:6.1f} GiB   CPU a sample: "
              f"{cpu * 1e6:5.1f} us here + {cpu_db * 1e6:5.1f} us in the database's backend")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
