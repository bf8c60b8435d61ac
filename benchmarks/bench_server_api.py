"""Fleet server API benchmark (issue 4): a provincial-size database, 50 concurrent clients, p50/p99.

    .venv/bin/python benchmarks/bench_server_api.py                 # 50,000 units, 3,000 institutions
    .venv/bin/python benchmarks/bench_server_api.py --units 5000    # a quicker run

What it does:

1. Generates straight into SQLite (the server's own schema): institutions in counties and regions, units with
   registry rows, status history, live state (identity, inventory, newest sample), **400 days of hourly
   roll-ups** (day rows with packed hours, month rows), **14 days of raw one-minute samples** for
   ``--raw-units`` units, and a **72-hour backlog** of raw samples for ``--backlog-units`` units.
2. Starts the real server (``posfleet server run --api-workers N``, ingest off: no broker needed) on a free port:
   the primary plus N-1 API-only processes on one port (default N: the recommended value, one per core, at most 4).
   Lets the server's own roll-up pass count the drilled units' days (it stores the slot codes the drill-down
   reads; the generator writes only the roll-ups), then sends ``--warmup`` requests of each interactive kind, not
   measured (a running server's per-process caches are warm; ``--warmup 0`` measures a cold one).
3. Runs 50 concurrent clients (light keep-alive HTTP/1.1; ``--client httpx`` for httpx) per call type and prints
   p50/p99/mean/max: list/filter, unit detail, minute drill-down, fleet availability for the last whole quarter by
   county.
4. Times the recount of the 72-hour backlog (``POST /api/v1/availability/recount`` for those units), which is
   what the server does when 3,000 units deliver three days of buffered samples at once.

Raw samples are generated for a subset only: 14 days of minute samples for 50,000 units is a billion rows,
which is not what a benchmark run on a laptop can build in minutes; the API calls measured read roll-ups (and
the raw samples of the units drilled into), so the subset does not flatter them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.auth import hash_token  # noqa: E402
from server.storage.schema import _FLEET_SCHEMA, _SCHEMA  # noqa: E402

TZ = ZoneInfo("Asia/Shanghai")
TYPES = ["health_centre"] * 3 + ["village_clinic"] * 15 + ["community_site"] + ["pharmacy"]
CARRIERS = [("CMCC", "46000"), ("CHN-UNICOM", "46001"), ("CHN-CT", "46011")]


def midnight(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- generate
def _hour_codes(counts: tuple[int, int, int, int]) -> tuple[bytes, str | None]:
    """One hour's per-slot codes and reasons JSON as the roll-up pass stores them (``slot_hour``) for an hour of
    a :func:`_patterns` day with these counts (service, intact, network ok, no data): no data first, then the
    covered slots, the first of them with the printer out of paper or a slow network."""
    from counting.counter import _COVERED, _DEV_BAD, _IN_HOURS, _IN_SERVICE, _NET_BAD

    service, intact, netok, nodata = counts
    if not service:
        return bytes([_IN_SERVICE]) * 60, None  # outside service hours
    codes, why = [], {}
    for i in range(60):
        v = _IN_HOURS | _IN_SERVICE
        reasons = []
        if i >= nodata:
            v |= _COVERED
            if i - nodata < service - nodata - intact:
                v |= _DEV_BAD
                reasons.append("printer=paper_out")
            if i - nodata < service - nodata - netok:
                v |= _NET_BAD
                reasons.append("rtt=800ms")
        codes.append(v)
        if reasons:
            why[str(i)] = ",".join(reasons)
    return bytes(codes), json.dumps(why) if why else None


def _patterns() -> list[tuple[bytes, tuple[int, int, int, int]]]:
    """Day shapes (08:00-18:00 service hours): good, an hour without data, a printer fault, slow network, off."""
    def day(hours: dict[int, tuple[int, int, int, int]]) -> tuple[bytes, tuple[int, int, int, int]]:
        counts = [hours.get(h, (60, 60, 60, 0) if 8 <= h < 18 else (0, 0, 0, 0)) for h in range(24)]
        blob = bytes(v for c in counts for v in c)
        return blob, tuple(sum(c[i] for c in counts) for i in range(4))  # type: ignore[return-value]

    return [
        day({}),
        day({10: (60, 0, 0, 60)}),
        day({14: (60, 0, 60, 0), 15: (60, 20, 60, 0)}),
        day({11: (60, 60, 0, 0), 12: (60, 60, 30, 0)}),
        day({h: (60, 0, 0, 60) for h in range(8, 18)}),
    ]


def generate(db: Path, units: int, institutions: int, days: int, raw_units: int, raw_days: int,
             backlog_units: int, backlog_hours: int, now: int, slot_days: int = 0) -> dict[str, object]:
    """``slot_days``: the last that many generated days also get the per-slot codes the roll-up pass stores with
    each hour (kept as long as raw samples, 14 days by default), which the flagged list's reasons and the drill-down
    read: 24 rows a unit-day, each counting no raw samples (give such units none: ``raw_units=0``)."""
    rnd = random.Random(20250301)
    con = sqlite3.connect(db)
    con.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-400000;")
    con.executescript(_SCHEMA + _FLEET_SCHEMA)
    for idx in ("rollup_day_sn", "samples_sn_ts", "samples_ts"):
        con.execute(f"DROP INDEX IF EXISTS {idx}")
    t0 = time.perf_counter()
    counties = [f"县{c:02d}" for c in range(max(1, institutions // 150))]
    insts = []
    for i in range(institutions):
        county = counties[i % len(counties)]
        insts.append((f"I{i:05d}", f"机构{i:05d}卫生室", county, f"统筹区{(i % len(counties)) // 5:02d}",
                      TYPES[i % len(TYPES)], "", "", time.time()))
    con.executemany("INSERT INTO institutions VALUES (?,?,?,?,?,?,?,?)", insts)
    start_day = date.fromtimestamp(now) - timedelta(days=days)
    first_ts = midnight(start_day)
    sns = [f"HN{k:08d}" for k in range(units)]
    reg, hist, live = [], [], []
    for k, sn in enumerate(sns):
        spare = k % 20 == 19
        inst = None if spare else insts[k % institutions][0]
        reg.append((sn, f"YB{k:010d}", "医保POS", "P10", "百富", inst, "spare" if spare else "deployed",
                    "spare" if spare else "in_service", "wired" if k % 7 == 0 else "4g_vpdn", "", "admin", time.time()))
        hist.append((sn, first_ts, "spare" if spare else "in_service", "bench", "registered"))
        carrier, mccmnc = CARRIERS[k % 3]
        ident = {"iccid": f"8986{k:016d}", "imsi": f"{mccmnc}{k:010d}", "carrier": carrier}
        inv = {"agent": "0.1.0" if k % 5 else "0.0.9", "components": {"app": "2.3.1" if k % 3 else "2.2.0"}}
        latest = {"rtt_ms": 60 + k % 300, "rtt_var_ms": 5 + k % 40, "checks": {"printer": [0, ""]}}
        seen = now - (30 if k % 25 else 7200)
        live.append((sn, first_ts, seen, int(k % 25 != 0), seen, "", "0.1.0", now, json.dumps(latest),
                     json.dumps(inv), json.dumps(ident)))
    con.executemany("INSERT INTO registry VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", reg)
    con.executemany("INSERT INTO status_history(sn, from_ts, status, by, note) VALUES (?,?,?,?,?)", hist)
    con.executemany("INSERT INTO units VALUES (?,?,?,?,?,?,?,?,?,?,?)", live)
    con.commit()
    t_reg = time.perf_counter() - t0

    # roll-ups: day rows in primary-key order (day, sn), month sums alongside
    t0 = time.perf_counter()
    pats = _patterns()
    quality = [0.02 if rnd.random() < 0.9 else 0.25 for _ in sns]  # share of bad days per unit
    months: dict[tuple[int, str], list[int]] = {}
    active = [(sn, q) for sn, q, r in zip(sns, quality, reg, strict=True) if r[7] == "in_service"]
    n_rows = 0
    strips = [[_hour_codes(tuple(blob[4 * h: 4 * h + 4])) for h in range(24)]  # type: ignore[arg-type]
              for blob, _tot in pats]
    for dd in range(days):
        d = start_day + timedelta(days=dd)
        o = d.toordinal()
        m = d.year * 12 + d.month - 1
        rows = []
        slot_rows = []
        for sn, q in active:
            k = 0 if rnd.random() >= q else rnd.randrange(1, 5)
            blob, tot = pats[k]
            rows.append((o, sn, *tot, blob))
            if dd >= days - slot_days:
                slot_rows += [(o, sn, h, codes, why, 0) for h, (codes, why) in enumerate(strips[k])]  # (no raw samples)
            acc = months.get((m, sn))
            if acc is None:
                months[(m, sn)] = list(tot)
            else:
                for i in range(4):
                    acc[i] += tot[i]
        con.executemany("INSERT INTO rollup_day VALUES (?,?,?,?,?,?,?)", rows)
        con.executemany("INSERT INTO slot_hour VALUES (?,?,?,?,?,?)", sorted(slot_rows))
        n_rows += len(rows)
    con.executemany("INSERT INTO rollup_month VALUES (?,?,?,?,?,?)",
                    sorted((m, sn, *v) for (m, sn), v in months.items()))
    con.commit()
    con.execute("CREATE INDEX IF NOT EXISTS rollup_day_sn ON rollup_day(sn, day)")
    con.commit()
    t_roll = time.perf_counter() - t0

    # raw samples: 14 days for a subset, and a 72-hour backlog for 3,000 units
    t0 = time.perf_counter()
    ok_checks = json.dumps({"printer": [0, ""], "idcard": [0, ""], "modem": [0, ""], "storage": [0, ""]})
    bad_checks = json.dumps({"printer": [1, "paper_out"], "idcard": [0, ""], "modem": [0, ""], "storage": [0, ""]})
    raw_set = [sn for sn, _q in active[:raw_units]]
    backlog_set = [sn for sn, _q in active[:backlog_units]]
    now_min = now // 60 * 60
    n_samples = 0

    def sample_rows(sn: str, t_from: int, t_to: int, epoch: int) -> list[tuple[object, ...]]:
        out = []
        seq = 0
        for ts in range(t_from, t_to, 60):
            seq += 1
            bad = (ts // 60) % 97 == 0
            connected = (ts // 60) % 131 != 0
            out.append((sn, epoch, seq, ts, 60, 0, int(connected), 80 + (ts // 60) % 50,
                        bad_checks if bad else ok_checks, "{}", float(ts + 5)))
        return out

    for sn in raw_set:
        rows = sample_rows(sn, now_min - raw_days * 86400, now_min - backlog_hours * 3600, 1)
        con.executemany("INSERT OR IGNORE INTO samples VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        n_samples += len(rows)
    for sn in backlog_set:
        rows = sample_rows(sn, now_min - backlog_hours * 3600, now_min, 2)
        con.executemany("INSERT OR IGNORE INTO samples VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        n_samples += len(rows)
    con.commit()
    con.execute("CREATE INDEX IF NOT EXISTS samples_sn_ts ON samples(sn, ts)")
    con.execute("CREATE INDEX IF NOT EXISTS samples_ts ON samples(ts)")
    con.execute("INSERT OR REPLACE INTO meta VALUES ('rolled_to', ?)",
                (str(int(datetime.fromtimestamp(now, TZ).replace(minute=0, second=0, microsecond=0).timestamp())),))
    token = "pf_bench_" + os.urandom(8).hex()
    con.execute("INSERT INTO tokens(hash, name, role, created) VALUES (?,?,?,?)", (hash_token(token), "bench", "admin", now))
    con.commit()
    con.close()
    t_raw = time.perf_counter() - t0
    return {"token": token, "sns": [sn for sn, _q in active], "counties": counties, "raw": raw_set,
            "backlog": backlog_set, "rollup_rows": n_rows, "samples": n_samples,
            "t_registry": t_reg, "t_rollups": t_roll, "t_samples": t_raw}


# the tables generate() writes (besides samples), in an order their references allow
GENERATED = ("institutions", "registry", "status_history", "units", "rollup_day", "rollup_month", "slot_hour", "tokens")


def copy_generated(db: Path, url: str, chunk: int = 50_000) -> dict[str, float]:
    """Put what :func:`generate` wrote into the SQLite file ``db`` into the empty PostgreSQL database ``url``:
    its schema made by the server's own migrations (``posfleet server db upgrade``'s call), then the rows by
    ``COPY`` (a benchmark's seeding SQL, not the server's: the big roll-up tables' secondary indexes dropped
    while copying and rebuilt after, as a bulk load would), then ``VACUUM ANALYZE`` so the planner and the
    visibility map are those of a settled database. Raw samples are not copied: a benchmark sends those through
    ingest. Seconds per table."""
    import asyncpg

    from server.storage.ops import upgrade

    asyncio.run(upgrade(url))
    src = sqlite3.connect(db)
    if src.execute("SELECT count(*) FROM samples").fetchone()[0]:
        raise ValueError("copy_generated copies no raw samples: generate with raw_units=0, backlog_units=0")

    async def run() -> dict[str, float]:
        conn = await asyncpg.connect(url)
        took: dict[str, float] = {}
        try:
            await conn.execute("SET maintenance_work_mem = '1GB'")  # this session's index builds and vacuum
            for table in GENERATED:
                t = time.perf_counter()
                cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
                big = table.startswith("rollup_")
                indexes = [] if not big else await conn.fetch(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1 AND indexname NOT IN "
                    "(SELECT conname FROM pg_constraint)", table)
                for ix in indexes:
                    await conn.execute(f'DROP INDEX "{ix["indexname"]}"')
                cur = src.execute(f"SELECT {', '.join(cols)} FROM {table}")
                while rows := cur.fetchmany(chunk):
                    await conn.copy_records_to_table(table, records=rows, columns=cols)
                for ix in indexes:
                    await conn.execute(ix["indexdef"])
                took[table] = time.perf_counter() - t
            for (value,) in src.execute("SELECT value FROM meta WHERE key = 'rolled_to'"):
                await conn.execute("INSERT INTO meta (key, value) VALUES ('rolled_to', $1) "
                                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value", value)
            await conn.execute("SELECT setval(pg_get_serial_sequence('status_history', 'id'), "
                               "coalesce((SELECT max(id) FROM status_history), 0) + 1, false)")
            t = time.perf_counter()
            for table in GENERATED:
                await conn.execute(f"VACUUM ANALYZE {table}")
            took["vacuum analyze"] = time.perf_counter() - t
        finally:
            await conn.close()
        return took

    try:
        return asyncio.run(run())
    finally:
        src.close()


# ---------------------------------------------------------------------------------------------- measure
def wait_started(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """Until the server at ``base`` answers ``/healthz`` 200; SystemExit naming its log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"server did not start; see {log}")
        time.sleep(0.2)


def recommended_workers() -> int:
    """API processes for this machine: one per core (the primary is one of them), at most 4."""
    return max(1, min(os.cpu_count() or 1, 4))


class LoadSampler:
    """The 1-minute load average every 5 s while the calls are measured (other jobs share the machine)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.values.append(float(Path("/proc/loadavg").read_text().split()[0]))
            except (OSError, ValueError):
                return
            if self._stop.wait(5.0):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        v = self.values
        return f"{min(v):.1f}-{max(v):.1f} (mean {statistics.fmean(v):.1f}, {len(v)} samples)" if v else "n/a"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its child processes (the API workers), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


SERVER_PID = 0  # set once the server is started: its CPU per request is printed beside the latencies


CLIENT = "httpx"  # this script sets "raw" (its --client default), and so do bench_scale and bench_scope
RAW_TIMEOUT_S = 120.0  # the raw client's wait for an answer (httpx's timeout here too)
SLOWEST = 0  # --slowest
TRACE: list[tuple[float, float, str, str]] = []  # (latency, sent at, process, target) of the phase measured


async def _raw_worker(base: str, token: str, queue: asyncio.Queue[tuple[str, dict]], lat: list[float],
                      pids: Counter[str]) -> int:
    """One client on one keep-alive connection, GET after GET, with as little client CPU as possible (the
    httpx client costs ~7 ms of CPU a request, more than the server: on two shared cores it was half the load)."""
    u = urllib.parse.urlsplit(base)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    head = f"Host: {u.netloc}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    errors = 0
    try:
        while True:
            try:
                path, params = queue.get_nowait()
            except asyncio.QueueEmpty:
                return errors
            target = urllib.parse.quote(path) + ("?" + urllib.parse.urlencode(params) if params else "")
            t = time.perf_counter()
            writer.write(b"GET " + target.encode() + b" HTTP/1.1\r\n" + head)
            try:
                async with asyncio.timeout(RAW_TIMEOUT_S):  # as httpx's: no answer in time is an error at that latency
                    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                    if "content-length" not in headers:
                        raise RuntimeError(f"no Content-Length in the answer to {target}: {lines}")
                    await reader.readexactly(int(headers["content-length"]))
            except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
                lat.append(time.perf_counter() - t)
                errors += 1
                pids["no answer"] += 1
                writer.close()  # the connection is in an unknown state: a new one for the next request
                reader, writer = await asyncio.open_connection(u.hostname, u.port)
                continue
            lat.append(time.perf_counter() - t)
            if SLOWEST:
                TRACE.append((lat[-1], t, headers.get("x-posfleet-worker", "?"), target))
            if lines[0].split()[1] != "200":
                errors += 1
            pids[headers.get("x-posfleet-worker", "?")] += 1
    finally:
        writer.close()


def registry_mix(rnd: random.Random, n: int, total: int, counties: list[str]) -> list[dict[str, str]]:
    """The registry page's query parameters as bench_scale's clients send them (bench_unit_lists too): a county's
    page, its units in service, a search for four digits, the wired units by last seen, a page anywhere among
    ``total`` units (each a new question mostly: the answers kept for ``list_cache_s`` rarely answer them)."""
    out = []
    for _ in range(n):
        out.append({"limit": "50", **rnd.choice([
            {"county": rnd.choice(counties)}, {"status": "in_service", "county": rnd.choice(counties)},
            {"q": f"{rnd.randrange(10000):04d}"}, {"link_type": "wired", "sort": "last_seen"},
            {"offset": str(rnd.randrange(0, max(1, total - 50)))}])})
    return out


def _kind(target: str) -> str:
    """A request's kind: its path without SNs and numbers, and the names of its query parameters."""
    path, _, query = target.partition("?")
    names = sorted({k for k, _ in urllib.parse.parse_qsl(query)} - {"limit"})
    parts = ["{sn}" if any(c.isdigit() for c in x) else x for x in path.split("/")]
    return "/".join(parts[-2:]) + (f"?{'&'.join(names)}" if names else "")


def _print_tail(trace: list[tuple[float, float, str, str]], t0: float) -> None:
    """Where a phase's tail is: the p99 by second of the phase (when the request was sent), by process, and by
    kind of request; a tail in one second is a burst on the box, in one kind a slow request."""
    def p99(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"{xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000:.0f}"
    by: dict[str, dict[Any, list[float]]] = {"second": {}, "process": {}, "kind": {}}
    for took, at, pid, target in trace:
        by["second"].setdefault(int(at - t0), []).append(took)
        by["process"].setdefault(pid, []).append(took)
        by["kind"].setdefault(_kind(target), []).append(took)
    for name, groups in by.items():
        text = ", ".join(f"{k}: {p99(v)} ({len(v)})" for k, v in sorted(groups.items(), key=lambda kv: str(kv[0])))
        print(f"    p99 ms (requests) by {name}: {text}")


async def measure(base: str, token: str, name: str, paths: list[tuple[str, dict]], clients: int) -> dict[str, float]:
    lat: list[float] = []
    errors = 0
    pids: Counter[str] = Counter()
    queue: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
    for p in paths:
        queue.put_nowait(p)
    if CLIENT == "raw":
        server_cpu, client_cpu = cpu_seconds(SERVER_PID) if SERVER_PID else 0.0, time.process_time()
        t0 = time.perf_counter()
        TRACE.clear()
        errors = sum(await asyncio.gather(*(_raw_worker(base, token, queue, lat, pids) for _ in range(clients))))
        wall = time.perf_counter() - t0
        for took, at, pid, target in sorted(TRACE, reverse=True)[:SLOWEST]:
            print(f"    {took * 1000:7.1f} ms, sent {at - t0:6.2f} s into the phase, process {pid}: "
                  f"{urllib.parse.unquote(target)}")
        if SLOWEST:
            _print_tail(TRACE, t0)
        return _report(name, lat, errors, pids, wall, server_cpu, client_cpu)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while True:
            try:
                path, params = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t = time.perf_counter()
            try:
                r = await client.get(path, params=params)
            except httpx.TransportError:  # no answer within the client's timeout (120 s): an error at that latency
                lat.append(time.perf_counter() - t)
                errors += 1
                pids["no answer"] += 1
                continue
            lat.append(time.perf_counter() - t)
            if r.status_code != 200:
                errors += 1
            pids[r.headers.get("x-posfleet-worker", "?")] += 1

    server_cpu, client_cpu = cpu_seconds(SERVER_PID) if SERVER_PID else 0.0, time.process_time()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120,
                                 limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return _report(name, lat, errors, pids, wall, server_cpu, client_cpu)


def _report(name: str, lat: list[float], errors: int, pids: Counter[str], wall: float, server_cpu: float,
            client_cpu: float) -> dict[str, float]:
    server_cpu = (cpu_seconds(SERVER_PID) - server_cpu) if SERVER_PID else float("nan")
    client_cpu = time.process_time() - client_cpu
    lat.sort()
    res = {"server_cpu_ms": 1000 * server_cpu / len(lat), "client_cpu_ms": 1000 * client_cpu / len(lat),
           "n": len(lat), "errors": errors, "p50_ms": 1000 * lat[len(lat) // 2],
           "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], "mean_ms": 1000 * statistics.fmean(lat),
           "max_ms": 1000 * lat[-1], "rps": len(lat) / wall, "processes": len(pids)}
    print(f"  {name:<34} n={res['n']:<5} p50 {res['p50_ms']:7.1f} ms   p99 {res['p99_ms']:7.1f} ms   "
          f"mean {res['mean_ms']:7.1f} ms   max {res['max_ms']:7.1f} ms   {res['rps']:6.1f} req/s   errors {errors}"
          f"   answered by {len(pids)} process(es) ({'/'.join(str(n) for _p, n in pids.most_common())}); CPU a request: "
          + (f"server {res['server_cpu_ms']:.1f} ms, " if SERVER_PID else "")
          + f"this client {res['client_cpu_ms']:.1f} ms", flush=True)
    return res


def last_quarter(now: int) -> tuple[str, str]:
    d = datetime.fromtimestamp(now, TZ).date()
    q0 = date(d.year, (d.month - 1) // 3 * 3 + 1, 1)
    prev = date(q0.year - 1, 10, 1) if q0.month == 1 else date(q0.year, q0.month - 3, 1)
    return (datetime(prev.year, prev.month, 1, tzinfo=TZ).isoformat(), datetime(q0.year, q0.month, 1, tzinfo=TZ).isoformat())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=50_000)
    ap.add_argument("--institutions", type=int, default=3_000)
    ap.add_argument("--days", type=int, default=400, help="days of hourly roll-ups")
    ap.add_argument("--raw-units", type=int, default=100, help="units with 14 days of raw samples")
    ap.add_argument("--raw-days", type=int, default=14)
    ap.add_argument("--backlog-units", type=int, default=3_000)
    ap.add_argument("--backlog-hours", type=int, default=72)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=1000, help="requests per interactive call type")
    ap.add_argument("--quarter-requests", type=int, default=100)
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--reuse", action="store_true", help="reuse the database generated earlier in --dir")
    ap.add_argument("--api-workers", type=int, default=recommended_workers(),
                    help="processes serving the API: the primary + N-1 API-only (default: one per core, at most 4)")
    ap.add_argument("--skip-recount", action="store_true", help="do not time the 72-hour backlog recount")
    ap.add_argument("--slowest", type=int, default=0, help="print the N slowest requests of each phase")
    ap.add_argument("--primary-api", action=argparse.BooleanOptionalAction, default=True,
                    help="the primary (ingest, background jobs) answers API calls too ([http] primary_api)")
    ap.add_argument("--warmup", type=int, default=100,
                    help="requests of each interactive kind sent first and not measured (0: measure a cold server)")
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw",
                    help="raw: minimal keep-alive HTTP/1.1 clients (default); httpx: httpx.AsyncClient (runs 1-3)")
    args = ap.parse_args()
    global CLIENT, SLOWEST
    CLIENT = args.client
    SLOWEST = args.slowest
    args.backlog_units = min(args.backlog_units, args.units)
    args.raw_units = min(args.raw_units, args.backlog_units)

    work = Path(args.dir or tempfile.mkdtemp(prefix="posfleet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "fleet.sqlite"
    saved = work / "generated.json"
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
    if args.reuse and saved.exists() and db.exists():
        g = json.loads(saved.read_text())
        now = int(g["now"])
        con = sqlite3.connect(db)  # the hours since the data was made are not there: start from the current hour
        con.execute("INSERT OR REPLACE INTO meta VALUES ('rolled_to', ?)",
                    (str(int(datetime.now(TZ).replace(minute=0, second=0, microsecond=0).timestamp())),))
        con.commit()
        con.close()
        print(f"reusing {db} ({db.stat().st_size / 1e9:.2f} GB)", flush=True)
    else:
        if db.exists():
            db.unlink()
        now = int(time.time())
        print(f"generating {args.units} units, {args.institutions} institutions, {args.days} days of roll-ups ...",
              flush=True)
        t0 = time.perf_counter()
        g = generate(db, args.units, args.institutions, args.days, args.raw_units, args.raw_days, args.backlog_units,
                     args.backlog_hours, now)
        g["now"] = now
        saved.write_text(json.dumps(g))
        print(f"  generated in {time.perf_counter() - t0:.0f} s: registry {g['t_registry']:.0f} s, "
              f"{g['rollup_rows']:,} day roll-up rows {g['t_rollups']:.0f} s, {g['samples']:,} raw samples "
              f"{g['t_samples']:.0f} s; database {db.stat().st_size / 1e9:.2f} GB", flush=True)

    port = free_port()
    cfg = work / "server.toml"
    cfg.write_text(f'ingest_enabled = false\nretention_days = 14\n[storage]\nurl = "sqlite:///{db}"\n'
                   f'[http]\nhost = "127.0.0.1"\nport = {port}\nprimary_api = {str(args.primary_api).lower()}\n'
                   f'[alerts]\nenabled = false\n[availability]\nrecount_debounce_s = 3600\n'
                   # 50 clients on one token from one address: far past a person's budget (decision 013)
                   f'[api]\nrate_per_s = 0\naddress_rate_per_s = 0\n', encoding="utf-8")
    log = open(work / "server.log", "ab")
    workers = ["--api-workers", str(args.api_workers)] if args.api_workers != 1 else []  # (older servers lack it)
    proc = subprocess.Popen([sys.executable, "-m", "posfleet", "server", "run", "--config", str(cfg),
                             "--log-level", "WARNING", *workers], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    global SERVER_PID
    SERVER_PID = proc.pid
    try:
        wait_started(base, proc, work / "server.log")
        # The generator writes the roll-ups straight into the tables, but not the per-slot codes that the server's
        # roll-up pass stores beside each hour it counts (the drill-down reads them). Let the server's own pass
        # count the drilled units' days, as a running server would have done hour by hour.
        today0 = datetime.fromtimestamp(now, TZ).replace(hour=0, minute=0, second=0, microsecond=0)
        t = time.perf_counter()
        r = httpx.post(f"{base}/api/v1/availability/recount", headers={"Authorization": f"Bearer {g['token']}"},
                       json={"from": (today0 - timedelta(days=min(args.raw_days, 14))).isoformat(),
                             "to": today0.isoformat(), "sns": g["raw"]}, timeout=3600)
        r.raise_for_status()
        print(f"  roll-up pass over the {len(g['raw'])} drilled units' days (stores their slot codes): "
              f"{time.perf_counter() - t:.1f} s, {r.json()['unit_hours']:,} unit-hours", flush=True)
        rnd = random.Random(7)
        sns: list[str] = g["sns"]  # type: ignore[assignment]
        counties: list[str] = g["counties"]  # type: ignore[assignment]
        raw: list[str] = g["raw"]  # type: ignore[assignment]
        today = datetime.fromtimestamp(now, TZ).date()
        lists = []
        def a_list(rnd: random.Random) -> tuple[str, dict]:
            f = rnd.choice([{"county": rnd.choice(counties)}, {"status": "in_service", "county": rnd.choice(counties)},
                            {"q": f"{rnd.randrange(10000):04d}"}, {"link_type": "wired", "sort": "last_seen"},
                            {"offset": str(rnd.randrange(0, max(1, len(sns) - 50)))}])
            return ("/api/v1/registry/units", {"limit": "50", **f})
        lists = [a_list(rnd) for _ in range(args.requests)]
        details = [(f"/api/v1/registry/units/{rnd.choice(sns)}", {}) for _ in range(args.requests)]
        drills = [(f"/api/v1/units/{rnd.choice(raw)}/slots",
                   {"date": (today - timedelta(days=rnd.randrange(1, min(args.raw_days, 14)))).isoformat()})
                  for _ in range(args.requests)]
        q_from, q_to = last_quarter(now)
        quarter = [("/api/v1/availability", {"from": q_from, "to": q_to, "group_by": "county"})
                   for _ in range(args.quarter_requests)]
        layout = (f"the primary + {args.api_workers - 1} API-only" if args.primary_api or args.api_workers == 1 else
                  f"{args.api_workers} API-only; the primary off the port, primary_api = false")
        print(f"{args.clients} concurrent {args.client} clients against {base}, server with {args.api_workers} API "
              f"process(es) ({layout}):", flush=True)
        if args.warmup:
            # A server that has been running has its per-process caches warm (a count per filter, the first request
            # through each route). Warm them with requests of the same kinds from another random stream, not
            # measured; drill-downs of today (never cached: the day is not over) so no measured answer is cached.
            wr = random.Random(99)
            warm = [a_list(wr) for _ in range(args.warmup)]
            warm += [(f"/api/v1/registry/units/{wr.choice(sns)}", {}) for _ in range(args.warmup)]
            warm += [(f"/api/v1/units/{wr.choice(raw)}/slots", {"date": today.isoformat()}) for _ in range(args.warmup)]
            t = time.perf_counter()
            asyncio.run(measure(base, g["token"], "warm-up (not counted)", warm, args.clients))
        results = {}
        with LoadSampler() as load:
            results["list/filter (registry, 50 a page)"] = asyncio.run(
                measure(base, g["token"], "list/filter", lists, args.clients))
            results["unit detail"] = asyncio.run(measure(base, g["token"], "unit detail", details, args.clients))
            results["drill-down (1,440 slots of a day)"] = asyncio.run(
                measure(base, g["token"], "drill-down", drills, args.clients))
            results[f"fleet quarter by county ({q_from[:10]}..{q_to[:10]})"] = asyncio.run(
                measure(base, g["token"], "fleet quarter by county", quarter, args.clients))
        print(f"  load average (1 min) during the calls: {load.summary()}", flush=True)
        # one uncached computation: the quarter before, alone (the concurrent run shares one count per question)
        p_from = last_quarter(int(datetime.fromisoformat(q_from).timestamp()))[0]
        t = time.perf_counter()
        r = httpx.get(f"{base}/api/v1/availability", params={"from": p_from, "to": q_from, "group_by": "county"},
                      headers={"Authorization": f"Bearer {g['token']}"}, timeout=300)
        cold = time.perf_counter() - t
        print(f"  fleet quarter by county, uncached, one client ({p_from[:10]}..{q_from[:10]}): {cold * 1000:.0f} ms "
              f"(HTTP {r.status_code})", flush=True)
        results["cold quarter"] = {"ms": cold * 1000}
        # the figures are real: print the fleet line once
        body = httpx.get(f"{base}/api/v1/availability", params={"from": q_from, "to": q_to},
                         headers={"Authorization": f"Bearer {g['token']}"}, timeout=120).json()["fleet"]
        print(f"  fleet {q_from[:10]}..{q_to[:10]}: device {body['device_rate']}, network {body['network_rate']}, "
              f"tier {body['tier']}, {body['units']} units, {body['flagged_units']} flagged")
        if args.skip_recount:
            return
        # recount after a 72-hour backlog from 3,000 units
        backlog: list[str] = g["backlog"]  # type: ignore[assignment]
        end = datetime.fromtimestamp(now, TZ).replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(hours=args.backlog_hours)
        t = time.perf_counter()
        r = httpx.post(f"{base}/api/v1/availability/recount", json={"from": start.isoformat(), "to": end.isoformat(),
                                                                     "sns": backlog},
                       headers={"Authorization": f"Bearer {g['token']}"}, timeout=3600)
        took = time.perf_counter() - t
        print(f"  recount of a {args.backlog_hours} h backlog from {len(backlog)} units: {took:.1f} s "
              f"({r.json().get('unit_hours')} unit-hours; {args.backlog_hours * 60 * len(backlog):,} samples)", flush=True)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
