"""Scoped users at provincial size (issue 18): lists, counts, details and statistics as a county user and as a
city user see them, 50,000 units and 20,000 institutions, 50 concurrent clients; p50/p99 and the load average.

    .venv/bin/python benchmarks/bench_scope.py                        # 50,000 units, 20,000 institutions
    .venv/bin/python benchmarks/bench_scope.py --units 5000 --institutions 2000   # quicker
    .venv/bin/python benchmarks/bench_scope.py --calls "list institutions,list units"   # those two call types only

The database is made by ``bench_server_api.generate`` (institutions in counties of ~150, five counties to a
city; units spread over them, one in twenty a spare without an institution) with ``--days`` of roll-ups. The
real server runs (``posfleet server run``, ingest off); tokens are added for the province (the same calls
unscoped, to compare), a county user
(``county:<one county>``, ~2.5 % of the units) and a city user (``city:<one city>``, ~12 %), as
``posfleet server token create --scope`` would. Each call type is sent ``--requests`` times by ``--clients``
clients after ``--warmup`` unmeasured requests. Target (issue 18): p99 <= 300 ms for lists and details. The
availability figures, audit trail, jobs and county network a scoped user reads since decision 031's scoping of
them are measured too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_server_api as api  # noqa: E402

from benchmarks._harness import machine_line  # noqa: E402
from server.auth import hash_token  # noqa: E402


def add_token(db: Path, name: str, scope: str) -> str:
    """An admin token (the audit trail is theirs) with ``scope`` written as ``token create`` writes it (the server
    has migrated the file)."""
    token = "pf_bench_" + os.urandom(8).hex()
    con = sqlite3.connect(db, timeout=30)
    with con:
        con.execute("INSERT INTO tokens(hash, name, role, created) VALUES (?,?,?,?)",
                    (hash_token(token), name, "admin", time.time()))
        con.execute("INSERT INTO token_details(hash, owner, scope) VALUES (?,?,?)", (hash_token(token), name, scope))
    con.close()
    return token


def calls(db: Path, county: str, city: str, n: int, rnd: random.Random, province: bool = False
          ) -> tuple[dict[str, list[tuple[str, dict]]], int, int]:
    """For each call type, ``n`` requests a user of that scope (``county`` or ``city``; "" for neither) would
    make (their own units and institutions), and how many units and institutions the scope holds."""
    con = sqlite3.connect(db)
    mine = [r[0] for r in con.execute(
        "SELECT r.sn FROM registry r JOIN institutions i ON i.code = r.institution WHERE i.county = ? OR i.region = ? "
        "OR ?", (county, city, province))]
    insts = [r[0] for r in con.execute("SELECT code FROM institutions WHERE county = ? OR region = ? OR ?",
                                       (county, city, province))]
    con.close()
    pages = max(1, len(mine) // 50)
    return {
        "list units": [("/api/v1/units", {"limit": 50, "offset": 50 * rnd.randrange(pages)}) for _ in range(n)],
        "list registry (sort by SN)": [("/api/v1/registry/units", {"limit": 50, "offset": 50 * rnd.randrange(pages)})
                                       for _ in range(n)],
        "list registry (by last seen)": [("/api/v1/registry/units", {"limit": 50, "sort": "last_seen",
                                                                     "order": "desc"}) for _ in range(n)],
        "count (filtered, limit 1)": [("/api/v1/registry/units", {"limit": 1, "status": rnd.choice(
            ["in_service", "spare"]), "link_type": rnd.choice(["wired", "4g_vpdn"])}) for _ in range(n)],
        "list institutions": [("/api/v1/institutions", {"limit": 50}) for _ in range(n)],
        "list alerts": [("/api/v1/alerts", {"limit": 50}) for _ in range(n)],
        # (reads every registered unit and filters in Python, for the province too: a fifth as many requests)
        "dashboard units page": [("/dashboard/api/units", {"limit": 50}) for _ in range(max(1, n // 5))],
        "unit detail": [(f"/api/v1/units/{rnd.choice(mine)}", {}) for _ in range(n)],
        "registry unit detail": [(f"/api/v1/registry/units/{rnd.choice(mine)}", {}) for _ in range(n)],
        "institution detail": [(f"/api/v1/institutions/{rnd.choice(insts)}", {}) for _ in range(n)],
        "statistics: map": [("/api/v1/statistics/map", {}) for _ in range(n)],
        "statistics: coverage (12 months)": [("/api/v1/statistics/coverage", {}) for _ in range(n)],
        "statistics: services (year)": [("/api/v1/statistics/services", {"period": "year", "by": "month"})
                                        for _ in range(n)],
        # figures a county user reads since they are scoped (the roll-ups' days; a new period each request, so
        # the figures' cache does not answer)
        "availability by county (days)": [("/api/v1/availability", {**period(rnd), "group_by": "county"})
                                          for _ in range(n)],
        "availability flagged (days)": [("/api/v1/availability/flagged", {**period(rnd), "limit": 20})
                                        for _ in range(n)],
        "audit trail (50 rows)": [("/api/v1/audit", {"limit": 50}) for _ in range(n)],
        "jobs": [("/api/v1/jobs", {"limit": 50}) for _ in range(n)],
        # (one query per in-service unit: the province's 47,500 are not measured here)
        **({} if province else {"county network (1 h)": [("/api/v1/analytics/network", {"hours": 1})
                                                         for _ in range(max(1, n // 5))]}),
    }, len(mine), len(insts)


DAYS: list[str] = []  # the days of roll-ups, set by main()


def period(rnd: random.Random) -> dict[str, str]:
    """A whole-hour period inside the roll-ups' days, different at each request."""
    a = rnd.randrange(0, 24 * len(DAYS) - 1)
    b = rnd.randrange(a + 1, 24 * len(DAYS) + 1)
    return {"from": f"{DAYS[a // 24]}T{a % 24:02d}:00:00+08:00",
            "to": f"{DAYS[b // 24]}T{b % 24:02d}:00:00+08:00" if b < 24 * len(DAYS) else DAYS[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=50_000)
    ap.add_argument("--institutions", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=2, help="days of hourly roll-ups (these calls do not read them)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=300, help="requests per call type and scope")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--api-workers", type=int, default=api.recommended_workers())
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--no-province", action="store_true", help="measure the scoped users only")
    ap.add_argument("--calls", default="", help="measure only these call types (comma-separated names as printed, "
                                                "e.g. 'list institutions,list units')")
    args = ap.parse_args()
    api.CLIENT, api.SLOWEST = "raw", 0

    work = Path(args.dir or tempfile.mkdtemp(prefix="posfleet-bench-scope-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "fleet.sqlite"
    if db.exists():
        db.unlink()
    print(machine_line(), flush=True)
    now = int(time.time())
    t0 = time.perf_counter()
    g = api.generate(db, args.units, args.institutions, args.days, 0, 1, 0, 1, now, slot_days=args.days)
    DAYS[:] = [(date.fromtimestamp(now) - timedelta(days=args.days - k)).isoformat() for k in range(args.days)]
    print(f"generated {args.units:,} units, {args.institutions:,} institutions in {time.perf_counter() - t0:.0f} s",
          flush=True)
    port = api.free_port()
    cfg = work / "server.toml"
    cfg.write_text(f'ingest_enabled = false\n[storage]\nurl = "sqlite:///{db}"\n'
                   f'[http]\nhost = "127.0.0.1"\nport = {port}\n[alerts]\nenabled = false\n'
                   f'[api]\nrate_per_s = 0\naddress_rate_per_s = 0\n', encoding="utf-8")
    log = open(work / "server.log", "ab")
    workers = ["--api-workers", str(args.api_workers)] if args.api_workers != 1 else []
    proc = subprocess.Popen([sys.executable, "-m", "posfleet", "server", "run", "--config", str(cfg),
                             "--log-level", "WARNING", *workers], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    api.SERVER_PID = proc.pid
    base = f"http://127.0.0.1:{port}"
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        api.wait_started(base, proc, work / "server.log")
        counties: list[str] = g["counties"]  # type: ignore[assignment]
        county = counties[len(counties) // 2]
        con = sqlite3.connect(db)
        city = con.execute("SELECT region FROM institutions WHERE county = ? LIMIT 1", (county,)).fetchone()[0]
        con.close()
        rnd = random.Random(18)
        scopes = [("province (for comparison)", "province"), (f"county user (county:{county})", f"county:{county}"),
                  (f"city user (city:{city})", f"city:{city}")]
        for label, scope in scopes[1:] if args.no_province else scopes:
            token = add_token(db, label.split()[0], scope)
            plan, n_units, n_insts = calls(db, county if scope.startswith("county") else "",
                                           city if scope.startswith("city") else "", args.requests + args.warmup,
                                           rnd, province=scope == "province")
            if args.calls:
                wanted = {c.strip() for c in args.calls.split(",")}
                plan = {name: paths for name, paths in plan.items() if name in wanted}
            print(f"\n{label}: {n_units:,} units, {n_insts:,} institutions in scope", flush=True)
            results[label] = {}
            with api.LoadSampler() as load:
                for name, paths in plan.items():
                    if args.warmup:
                        asyncio.run(api.measure(base, token, f"(warm-up) {name}", paths[:args.warmup],
                                                min(args.clients, args.warmup)))
                    results[label][name] = asyncio.run(api.measure(base, token, name, paths[args.warmup:],
                                                                   args.clients))
            print(f"  load average (1 min) while measuring: {load.summary()}", flush=True)
            results[label]["_load"] = {"summary": load.summary()}  # type: ignore[dict-item]
    finally:
        proc.terminate()
        proc.wait(30)
    (work / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"\nresults: {work / 'results.json'}")


if __name__ == "__main__":
    main()
