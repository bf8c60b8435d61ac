"""Service statistics at provincial size (issue 18): 50,000 units, 20,000 institutions, a year of service counts.

    .venv/bin/python benchmarks/bench_statistics.py                  # 50,000 units, 20,000 institutions
    .venv/bin/python benchmarks/bench_statistics.py --units 5000 --institutions 2000

What it does:

1. Builds the real app (``server.app.create_app``, SQLite file, ingest off) and fills it through the stores: the
   institutions (12 cities, 10 counties each) and the units (``upsert_registry_units``), then **one day of the
   whole fleet's hourly service counts through the same call ingest uses** (``AccessStore.put_service_hours``: 8
   hours x every unit, timed: the roll-up cost per terminal-hour), and the rest of the year's roll-ups straight
   into their tables (one row per county and day, one per institution and month: exactly the rows a year of
   terminal-hours leaves there; 146 million terminal-hours cannot be fed on a laptop in minutes, and the
   statistics never read them).
2. Asks the statistics endpoints over HTTP (httpx on the app's ASGI interface, in process) as a province admin
   and as a city-scoped viewer: services over a year by month and by day, coverage, the map; then the
   applications list and the combined network query. Each call once cold (the first call of the process: the
   coverage rows are read then and kept until the registry changes), ``--rounds`` times one after another, then
   ``--clients`` at once (one process and its event loop: they queue behind each other; the server runs several
   API processes); prints p50 / p99 / max and the machine's load average (the box is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.app import create_app  # noqa: E402
from server.auth import create_token  # noqa: E402
from server.settings import parse  # noqa: E402
from server.storage.access import AccessStore  # noqa: E402

CITIES = [f"市{c:02d}" for c in range(12)]
TYPES = ["health_centre"] * 3 + ["village_clinic"] * 12 + ["pharmacy"] * 4 + ["hospital"]
TZ_OFFSET = 8 * 3600


def _day_number(d: date) -> int:
    return (d - date(1970, 1, 1)).days


async def build(app: object, units: int, institutions: int, rng: random.Random, today: date) -> dict[str, float]:
    st = app.state.storage  # type: ignore[attr-defined]
    store = AccessStore(st)
    counties = [(f"{city}县{k:02d}", city) for city in CITIES for k in range(10)]
    insts = []
    for i in range(institutions):
        county, city = counties[i % len(counties)]
        insts.append({"code": f"I{i:06d}", "name": f"机构{i}", "county": county, "region": city,
                      "type": TYPES[i % len(TYPES)]})
    t0 = time.perf_counter()
    await st.upsert_institutions(insts)
    rows = [{"sn": f"SX{n:07d}", "institution": insts[rng.randrange(institutions)]["code"], "model": "P8",
             "stock_type": "deployed"} for n in range(units)]
    for i in range(0, units, 10_000):
        await st.upsert_registry_units(rows[i:i + 10_000], int(time.time()), "bench")
    registry_s = time.perf_counter() - t0
    by_inst = {r["code"]: r for r in insts}
    # one day of the fleet's hourly counts, through the store's own call (what ingest's hook runs)
    day0 = today - timedelta(days=1)
    hour0 = _day_number(day0) * 86400 - TZ_OFFSET + 9 * 3600
    hours = []
    for r in rows:
        inst = by_inst[r["institution"]]
        for h in range(8):
            n = rng.randrange(0, 12)
            face = rng.randrange(0, n + 1)
            idc = rng.randrange(0, n - face + 1)
            hours.append({"sn": r["sn"], "hour": hour0 + 3600 * h, "tz_offset": TZ_OFFSET, "county": inst["county"],
                          "institution": inst["code"], "services": n, "face": face, "idcard": idc,
                          "evoucher": n - face - idc, "other": 0, "business": {"settle": n}})
    t0 = time.perf_counter()
    for i in range(0, len(hours), 5000):
        await store.put_service_hours(hours[i:i + 5000])
    feed_s = time.perf_counter() - t0
    # the rest of the year's roll-ups: one row per county and day, one per institution and month
    first = today - timedelta(days=400)
    county_rows = []
    d = first
    while d < day0:
        for county, _city in counties:
            n = rng.randrange(200, 2000)
            f = n // 2
            county_rows.append((county, _day_number(d), n, f, n // 4, n - f - n // 4, 0))
        d += timedelta(days=1)
    months = sorted({(x.year * 100 + x.month) for x in (first + timedelta(days=k) for k in range(400))})
    inst_rows = [(i["code"], m, i["county"], rng.randrange(0, 3000)) for i in insts for m in months]
    t0 = time.perf_counter()
    async with st.write() as db:
        await db.executemany("INSERT INTO service_county_day(county, day, services, face, idcard, evoucher, other) "
                             "VALUES (?,?,?,?,?,?,?) ON CONFLICT(county, day) DO NOTHING", county_rows)
        await db.executemany("INSERT INTO service_inst_month(institution, month, county, services) VALUES (?,?,?,?) "
                             "ON CONFLICT(institution, month) DO UPDATE SET services = service_inst_month.services + "
                             "excluded.services", inst_rows)
    return {"registry_s": registry_s, "feed_s": feed_s, "terminal_hours": len(hours),
            "county_day_rows": len(county_rows), "inst_month_rows": len(inst_rows),
            "rollup_fill_s": time.perf_counter() - t0}


async def measure(client: httpx.AsyncClient, path: str, params: dict, token: str, rounds: int, clients: int
                  ) -> tuple[float, list[float], list[float]]:
    headers = {"Authorization": f"Bearer {token}"}

    async def one() -> float:
        t0 = time.perf_counter()
        r = await client.get(path, params=params, headers=headers)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        return (time.perf_counter() - t0) * 1000

    first = await one()  # cold: the process's caches (registry index, coverage rows) empty
    seq = [await one() for _ in range(rounds)]
    conc = list(await asyncio.gather(*[one() for _ in range(clients)]))
    return first, seq, conc


def fmt(xs: list[float]) -> str:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    return f"p50 {statistics.median(xs):7.1f} ms  p99 {p99:7.1f} ms  max {xs[-1]:7.1f} ms"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--units", type=int, default=50_000)
    ap.add_argument("--institutions", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seed", type=int, default=18)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        settings = parse({"storage": {"url": f"sqlite:///{Path(tmp) / 'fleet.sqlite'}"}, "ingest_enabled": False,
                          "alerts": {"enabled": False}})
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            today = date.today()
            print(f"building: {args.units:,} units, {args.institutions:,} institutions ...", flush=True)
            built = await build(app, args.units, args.institutions, rng, today)
            print(f"  registry {built['registry_s']:.1f} s; one day of the fleet's service counts "
                  f"({built['terminal_hours']:,} terminal-hours) through put_service_hours in {built['feed_s']:.1f} s "
                  f"({built['terminal_hours'] / built['feed_s']:,.0f} terminal-hours/s); roll-up rows "
                  f"{built['county_day_rows']:,} county-days + {built['inst_month_rows']:,} institution-months")
            admin = await create_token(app.state.storage, "bench-admin", "admin")
            try:
                city = await create_token(app.state.storage, "bench-city", "viewer", scope=f"city:{CITIES[0]}")
            except TypeError:  # a tree without scoped tokens
                city = None
            calls = [("services, year by month", "/api/v1/statistics/services", {"period": "year", "by": "month"}),
                     ("services, year by day", "/api/v1/statistics/services", {"period": "year", "by": "day"}),
                     ("coverage, 12 months", "/api/v1/statistics/coverage", {"months": 12}),
                     ("map figures", "/api/v1/statistics/map", {}),
                     ("applications list", "/api/v1/access/applications", {"limit": 50}),
                     ("network query page", "/api/v1/access/network", {"limit": 50})]
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120) as client:
                for who, token in (("province admin", admin), (f"viewer scoped to city {CITIES[0]}", city)):
                    if token is None:
                        continue
                    print(f"\n{who}: the first call | {args.rounds} one after another | {args.clients} at once")
                    for label, path, params in calls:
                        first, seq, conc = await measure(client, path, params, token, args.rounds, args.clients)
                        print(f"  {label:26s} {first:7.1f} ms | {fmt(seq)}  |  {fmt(conc)}", flush=True)
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores (shared box); "
          f"Python {sys.version.split()[0]}")


if __name__ == "__main__":
    asyncio.run(main())
