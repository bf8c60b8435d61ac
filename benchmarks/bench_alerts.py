"""The alert pass at fleet scale (issue 15, decision 040): CPU of one ``Alerts.evaluate`` at 210,000 units.

    .venv/bin/python -m benchmarks.bench_alerts                      # 210,000 units, SQLite, 3 passes each way
    .venv/bin/python -m benchmarks.bench_alerts --units 50000 --passes 5

The pass runs every ``[alerts] interval_s`` (60 s) on the primary, which shares the box's cores with the API
processes, so its cost is a burst taken from them each minute. What runs: ``benchmarks.bench_server_api.generate``
writes a SQLite database of ``--units`` registered units (institutions, counties, live state with a newest sample
each, ``--days`` of hourly roll-ups up to now), each unit last heard from within the last 10 minutes; the real server app is started on it in this process (no broker,
no ingest, the background alert loop and figure warming off), and ``Alerts.evaluate`` is timed (wall and this
process's CPU):

* **nothing moved**: the pass again with nothing written since (the steady minute of a quiet fleet);
* **after a roll-up move**: today's roll-up stamp and ``rollup_version`` moved before the pass (what the roll-up
  pass's recount of late data does under live ingest: the month's figures are counted again);
* **a tenth of the units heard from**: ``last_seen`` and the newest sample of 10 % of the units written (what a
  minute of a fleet sending a batch every 10 minutes does) and the roll-ups moved.

The first pass (reading every unit, building the registry index and the figures' pieces) is reported apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import machine_line
from benchmarks.bench_server_api import generate


def _move_rollups(db: Path) -> None:
    """Today's roll-ups changed (a recount of late data): the stamp of the newest day and ``rollup_version``."""
    con = sqlite3.connect(db)
    row = con.execute("SELECT value FROM meta WHERE key = 'rollup_version'").fetchone()
    v = (int(row[0]) if row else 0) + 1
    con.execute("INSERT INTO meta(key, value) VALUES ('rollup_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(v),))
    day = con.execute("SELECT max(day) FROM rollup_day").fetchone()[0]
    con.execute("INSERT INTO rollup_stamps(day, stamp) VALUES (?, ?) "
                "ON CONFLICT(day) DO UPDATE SET stamp = excluded.stamp", (day, v))
    con.commit()
    con.close()


def _hear_from(db: Path, share: float, rnd: random.Random) -> int:
    """``share`` of the units send a new newest sample now (``last_seen`` and ``latest``, as ingest writes them)."""
    con = sqlite3.connect(db)
    sns = [r[0] for r in con.execute("SELECT sn FROM units")]
    chosen = rnd.sample(sns, int(len(sns) * share))
    now = time.time()
    rows = []
    for sn in chosen:
        body = {"ts": int(now) // 60 * 60, "interval": 60, "connected": True, "rtt_ms": rnd.randint(40, 400),
                "cpu": rnd.randint(1, 60), "mem_used_mb": 300, "mem_avail_mb": 700,
                "fs": [{"mount": "/", "size_mb": 8000, "used_mb": rnd.randint(1000, 5000)}],
                "checks": {"printer": [0], "idcard": [0], "modem": [0]}}
        rows.append((now, int(body["ts"]), json.dumps(body), sn))
    con.executemany("UPDATE units SET last_seen = ?, latest_ts = ?, latest = ? WHERE sn = ?", rows)
    con.commit()
    con.close()
    return len(chosen)


def _spread_last_seen(db: Path) -> None:
    """Every unit last heard from within the last 10 minutes, spread evenly (a fleet sending a batch every 600 s),
    as of now: a database generated or reused minutes ago looks like a live fleet's."""
    con = sqlite3.connect(db)
    con.execute("UPDATE units SET last_seen = ? - (abs(random()) % 600000) / 1000.0", (time.time(),))
    con.commit()
    con.close()


async def _run(db: Path, passes: int) -> dict[str, Any]:
    from server.app import create_app
    from server.settings import parse

    settings = parse({"storage": {"url": f"sqlite:///{db}"}, "ingest_enabled": False, "retention_days": 3650,
                      "availability": {"recount_debounce_s": 3600, "warm_figures_s": 0},
                      "alerts": {"enabled": False}})
    _spread_last_seen(db)
    app = create_app(settings)
    out: dict[str, Any] = {}
    rnd = random.Random(15)
    async with app.router.lifespan_context(app):
        alerts = app.state.alerts

        async def timed() -> tuple[float, float, dict[str, int]]:
            t, c = time.perf_counter(), time.process_time()
            got = await alerts.evaluate()
            return time.perf_counter() - t, time.process_time() - c, got

        wall, cpu, got = await timed()
        out["first"] = {"wall_s": wall, "cpu_s": cpu, "standing": got}
        for name, before in (("nothing moved", None), ("after a roll-up move", lambda: _move_rollups(db)),
                             ("a tenth of the units heard from", lambda: (_hear_from(db, 0.1, rnd),
                                                                         _move_rollups(db)))):
            walls, cpus = [], []
            for _ in range(passes):
                if before is not None:
                    before()
                wall, cpu, got = await timed()
                walls.append(wall)
                cpus.append(cpu)
            out[name] = {"wall_s": walls, "cpu_s": cpus, "standing": got}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=210_000)
    p.add_argument("--days", type=int, default=8, help="days of hourly roll-ups up to now (default 8)")
    p.add_argument("--passes", type=int, default=3, help="timed passes each way (default 3)")
    p.add_argument("--db", default="", help="reuse (or make) this database file instead of a temporary one")
    args = p.parse_args()
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "fleet.sqlite"
        if not db.exists():
            t = time.perf_counter()
            generate(db, args.units, institutions=max(10, args.units // 17), days=args.days, raw_units=0, raw_days=0,
                     backlog_units=0, backlog_hours=0, now=int(time.time()))
            print(f"generated {args.units:,} units, {args.days} days of roll-ups in {time.perf_counter() - t:.0f} s",
                  flush=True)
        got = asyncio.run(_run(db, args.passes))
    first = got.pop("first")
    print(f"alert pass at {args.units:,} units (SQLite, in-process), CPU of this process:")
    print(f"  first pass (every unit read, indexes built): {first['cpu_s']:.2f} s CPU, {first['wall_s']:.2f} s wall")
    for name, r in got.items():
        print(f"  {name:32s} CPU median {statistics.median(r['cpu_s']):.2f} s (min {min(r['cpu_s']):.2f}, "
              f"max {max(r['cpu_s']):.2f}), wall median {statistics.median(r['wall_s']):.2f} s; "
              f"standing alerts {sum(r['standing'].values())}")
    print(machine_line())


if __name__ == "__main__":
    main()
