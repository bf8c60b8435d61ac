"""Storage CPU per request of the unit lists issue 18 found slow, in process: ``list_units`` by SN (the kept lists of
decision 034 against the SQL path) and the registry list by last seen (desc, its first page, as bench_scope asks;
a scope's kept SNs tested on the walked index against the SQL's join), for the province, a county user and a city
user, on bench_scope's data (50,000 units, 20,000 institutions).

    .venv/bin/python benchmarks/bench_unit_lists.py                       # generates the data in a temporary dir
    .venv/bin/python benchmarks/bench_unit_lists.py --db /tmp/fleet.sqlite  # data made before (bench_server_api)

Each figure: ``--requests`` calls (pages of 50 at random offsets within the scope, as bench_scope sends them) after
``--warmup`` unmeasured ones, one at a time, CPU time of this process (``time.process_time``) per call; the server's
HTTP and JSON work is not in it. ``--http`` measures whole requests instead (routing, the scope, the query, the
JSON answer) through one API app in this process (ASGI, the httpx client's share included), without 50 clients'
queueing; ``--code`` takes the server from another checkout (an older commit) to compare:

    .venv/bin/python benchmarks/bench_unit_lists.py --db /tmp/fleet.sqlite --http
    .venv/bin/python benchmarks/bench_unit_lists.py --db /tmp/fleet.sqlite --http --code /tmp/older-checkout

Also measured (decision 036): the audit trail's page of 50 and its count as a scoped auditor asks them (the rows about
the scope's units and jobs: the SQL's subquery on registry and institutions, or the scope's kept SNs as one set),
and the registry list by last seen walked or looked up (``seen_lookup``). bench_scope's audit table is nearly empty
(it makes no API writes); ``--audit-rows N`` measures on a copy of the data with N rows added (API writes by path,
command states of units all over the province, jobs of a few units each and their rows):

    .venv/bin/python benchmarks/bench_unit_lists.py --db /tmp/fleet.sqlite --audit-rows 200000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CODE = Path(sys.argv[sys.argv.index("--code") + 1]).resolve() if "--code" in sys.argv else ROOT
sys.path.insert(0, str(CODE))
import server  # noqa: E402, F401  (the server package of CODE, whatever the imports below put first in sys.path)

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_server_api as api  # noqa: E402

from benchmarks._harness import machine_line  # noqa: E402
from server.storage import UnitQuery, open_storage  # noqa: E402
from server.storage.audit import AuditQuery  # noqa: E402

SCOPES: list[tuple[str, Any]] = [("province", None), ("county user (county:县66)", ((), ("县66",))),
                                 ("city user (city:统筹区13)", (("统筹区13",), ()))]


async def per_call(n: int, warmup: int, call: Any) -> float:
    for k in range(warmup):
        await call(k)
    t0 = time.process_time()
    for k in range(n):
        await call(k)
    return (time.process_time() - t0) / n * 1000


async def run(db: Path, n: int, warmup: int) -> None:
    st: Any = open_storage(f"sqlite:///{db}")
    await st.open()
    rnd = random.Random(7)
    print(f"{'call':44} {'scope':28} {'CPU ms a call':>14}")
    for name, within in SCOPES:
        total = (await st.list_units(UnitQuery(within=within, limit=1)))[0]
        offsets = [50 * rnd.randrange(max(1, total // 50)) for _ in range(n + warmup)]
        for kept in (False, True):
            st.kept_lists = kept

            async def units(k: int, within: Any = within, offsets: list[int] = offsets) -> None:
                await st.list_units(UnitQuery(limit=50, offset=offsets[k], within=within))

            label = f"list units by SN, {'kept lists' if kept else 'SQL'} ({total:,})"
            print(f"{label:44} {name:28} {await per_call(n, warmup, units):14.2f}", flush=True)

        async def by_seen(k: int, within: Any = within) -> None:
            await st.registry_query({} if within is None else {"within": within}, "last_seen", True, 50, 0)

        for kept, lookup in ((False, None), (True, False), (True, True), (True, None)):
            st.kept_lists, st.seen_lookup = kept, lookup  # (the province's: the same SQL every way)
            label = f"registry by last seen, {_how(kept, lookup)}"
            print(f"{label:44} {name:28} {await per_call(n, warmup, by_seen):14.2f}", flush=True)
        st.seen_lookup = None

        async def audit(k: int, within: Any = within) -> None:  # as GET /api/v1/audit?limit=50 asks
            await st.audit_rows(AuditQuery(within=within), 50, 0)
            await st.count_audit(AuditQuery(within=within))

        for kept, lookup in ((False, None), (True, False), (True, True), (True, None)):
            st.kept_lists, st.audit_lookup = kept, lookup  # (the province's: no scope filter any way)
            label = f"audit 50 rows + count, {_how(kept, lookup)}"
            print(f"{label:44} {name:28} {await per_call(n, warmup, audit):14.2f}", flush=True)
        st.kept_lists, st.audit_lookup = True, None
    await st.close()


def _how(kept: bool, lookup: bool | None) -> str:
    """How a scoped read was made: from SQL alone, or from the kept SNs walked, looked up or as the store chooses."""
    if not kept:
        return "SQL"
    return {False: "kept SNs, walked", True: "kept SNs, looked up", None: "kept SNs, chosen"}[lookup]


def add_audit(src: Path, rows: int) -> Path:
    """A copy of ``src`` (the audit is append-only) with ``rows`` more audit rows: three in five API writes by
    path (the province's), one in five command states of a unit anywhere, the rest about 2,000 jobs of one to
    five units of one county each (their commands too): ``job.created`` / ``job.finished`` by job id."""
    dst = Path(tempfile.mkdtemp(prefix="posfleet-bench-audit-")) / "fleet.sqlite"
    shutil.copy(src, dst)
    rnd = random.Random(36)
    con = sqlite3.connect(dst)
    by_county: dict[str, list[str]] = {}
    for sn, county in con.execute("SELECT r.sn, i.county FROM registry r JOIN institutions i ON i.code = r.institution"):
        by_county.setdefault(county, []).append(sn)
    counties = sorted(by_county)
    every = [sn for c in counties for sn in by_county[c]]
    jobs = []
    with con:
        for j in range(2000):
            jid = f"job-bench-{j:05d}"
            mine = rnd.sample(by_county[rnd.choice(counties)], rnd.randint(1, 5))
            jobs.append(jid)
            con.execute("INSERT INTO cmd_jobs(id, type, params, created_by, created, total, state) "
                        "VALUES (?,?,?,?,?,?,?)", (jid, "collect_logs", "{}", "bench", time.time(), len(mine), "done"))
            con.executemany("INSERT INTO cmd_commands(id, job, sn, type, params, created_by, created, issued, expires, "
                            "payload, state) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                            [(f"{jid}-{sn}", jid, sn, "collect_logs", "{}", "bench", time.time(), 0, 0, b"", "done")
                             for sn in mine])
        t = time.time() - rows
        batch = []
        for k in range(rows):
            r = rnd.random()
            if r < 0.6:
                row = ("admin", "api.post", f"/api/v1/registry/units/{rnd.choice(every)}", '{}')
            elif r < 0.8:
                row = ("command", "command.state", rnd.choice(every), '{"to":"done"}')
            else:
                row = ("admin", rnd.choice(("job.created", "job.finished")), rnd.choice(jobs), '{}')
            batch.append((t + k, *row))
        con.executemany("INSERT INTO audit(ts, actor, action, target, detail) VALUES (?,?,?,?,?)", batch)
    con.close()
    return dst


async def run_http(db: Path, n: int, warmup: int) -> None:
    import httpx
    from bench_scope import add_token

    from server.app import create_app
    from server.settings import load

    cfg = db.with_name("bench_unit_lists.toml")
    cfg.write_text(f'ingest_enabled = false\n[storage]\nurl = "sqlite:///{db}"\n[alerts]\nenabled = false\n'
                   f'[api]\nrate_per_s = 0\naddress_rate_per_s = 0\n', encoding="utf-8")
    app = create_app(load(cfg), role="api")
    with sqlite3.connect(db) as con:
        counties = sorted(r[0] for r in con.execute("SELECT DISTINCT county FROM institutions"))
    print(f"server code: {Path(server.__file__).parent.parent}")
    print(f"{'call (whole request, in process)':44} {'scope':28} {'CPU ms a call':>14}")
    async with app.router.lifespan_context(app):
        for name, within in SCOPES:
            scope = "province" if within is None else f"city:{within[0][0]}" if within[0] else f"county:{within[1][0]}"
            token = add_token(db, "bench-lists", scope)
            total = (await app.state.storage.list_units(UnitQuery(within=within, limit=1)))[0]
            rnd = random.Random(7)
            offsets = [50 * rnd.randrange(max(1, total // 50)) for _ in range(n + warmup)]
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                         headers={"Authorization": f"Bearer {token}"}) as client:
                async def units(k: int, client: Any = client, offsets: list[int] = offsets) -> None:
                    r = await client.get("/api/v1/units", params={"limit": 50, "offset": offsets[k]})
                    r.raise_for_status()

                async def by_seen(k: int, client: Any = client) -> None:
                    r = await client.get("/api/v1/registry/units",
                                         params={"limit": 50, "sort": "last_seen", "order": "desc"})
                    r.raise_for_status()

                async def audit(k: int, client: Any = client) -> None:
                    r = await client.get("/api/v1/audit", params={"limit": 50})
                    r.raise_for_status()

                mix = api.registry_mix(rnd, n + warmup, total, counties)

                async def registry(k: int, client: Any = client, mix: list[dict[str, str]] = mix) -> None:
                    r = await client.get("/api/v1/registry/units", params=mix[k])
                    r.raise_for_status()

                for label, call in ((f"GET /api/v1/units ({total:,})", units),
                                    ("GET /api/v1/registry/units by last seen", by_seen),
                                    ("GET /api/v1/registry/units, bench_scale's mix", registry),
                                    ("GET /api/v1/audit?limit=50", audit)):
                    print(f"{label:44} {name:28} {await per_call(n, warmup, call):14.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="", help="an SQLite file bench_server_api.generate made (default: make one)")
    ap.add_argument("--units", type=int, default=50_000)
    ap.add_argument("--institutions", type=int, default=20_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--http", action="store_true", help="whole requests through one API app in this process")
    ap.add_argument("--code", default="", help="take the server from this checkout (with --http: an older commit)")
    ap.add_argument("--audit-rows", type=int, default=0, help="measure on a copy of the data with this many audit "
                                                                "rows added (bench_scope's audit is nearly empty)")
    args = ap.parse_args()
    print(machine_line(), flush=True)
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="posfleet-bench-lists-")) / "fleet.sqlite"
    if not db.exists():
        api.generate(db, args.units, args.institutions, 1, 0, 1, 0, 1, int(time.time()))
    if args.audit_rows:
        db = add_audit(db, args.audit_rows)
        print(f"{args.audit_rows:,} audit rows added, on a copy: {db}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min) at the start", flush=True)
    asyncio.run((run_http if args.http else run)(db, args.requests, args.warmup))
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end", flush=True)


if __name__ == "__main__":
    main()
