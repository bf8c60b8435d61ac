"""Recount after a 72-hour backlog (issue 15): 3,000 units deliver three days of samples at once; how long and how
much CPU until the server has recounted every hour they touched, on SQLite and on PostgreSQL in the same run, and
the same availability answer from both afterwards.

    .venv/bin/python -m benchmarks.bench_recount                                  # 3,000 units x 72 h, both backends
    .venv/bin/python -m benchmarks.bench_recount --units 300 --hours 6            # a trial of a few minutes

For each backend, one after the other (the same machine, the same run), a fresh Mosquitto and a fresh fleet server
process (``bench_scale.setup``: the registry of ``--units`` x 20/19 units, every 20th a spare, and ``--days`` of
hourly roll-ups generated into its database; on PostgreSQL, a cluster of the benchmark's own with fsync on and
``shared_buffers = 512MB``). Then:

1. **The backlog, as agents send it after a 3-day outage** (``bench_scale.loadgen`` mode ``backlog``): each unit
   first its newest sample alone, then the other ``--hours`` x 60 one-minute samples oldest first in batches of
   ``--batch`` (the agent's ``link.max_batch``, 60), at most ``--window`` batches unacknowledged per unit (the
   agent's max_batch x 4 in flight), QoS 1 on ``pf/<sn>/t``; values and faults as bench_scale's terminals, the
   same samples whichever server receives them. The server stores them late: its ingest marks the hours they
   touch and its roll-up pass recounts them (``[availability] recount_debounce_s`` of quiet, at least every
   minute while a backlog keeps arriving), with the server's default settings.
2. **Measured**: from the first publish to every sample stored (``/healthz`` ``ingest.samples_stored``), and from
   there to every hour recounted (``/api/v1/availability/status`` ``pending_unit_hours`` 0 and the
   ``recount_queue`` table empty); wall time and CPU seconds of the server process and, on PostgreSQL, of
   PostgreSQL's processes, per phase; the server's own count of recounts and unit-hours recounted.
3. **One explicit recount** of the same units and hours (``POST /api/v1/availability/recount``): the recount's cost
   alone, not spread over the ingest (what ``bench_server_api`` times on raw samples it writes itself).
4. **Answers**: the availability per unit over the backlog's hours, per county over every generated day, the
   drill-down of a few units on each whole past day the backlog touched, and the network service levels
   (``sla_day``) and county and cell outages the roll-up loop had stored when it was done (read from the database
   before step 3); compared between the backends at the end (a mismatch is printed and the exit code is 1).
   ``--now`` fixes the time for two runs (before and after a change: compare their ``--json`` answers).

Time is fixed at the start (``now``): the backlog covers the ``--hours`` closed hours before it, and every answer
compared ends there, so a backend run later in the same run answers the same question.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._harness import machine, machine_line
from benchmarks.bench_scale import EPOCH, api_workers, cpu_of, send_backlog, setup
from benchmarks.bench_server_api import TZ, midnight
from tests.fleet import Pki


def hour_of(ts: int) -> int:
    """The start of the local hour holding ``ts`` (the fleet's zone has whole-hour offsets)."""
    return int(datetime.fromtimestamp(ts, TZ).replace(minute=0, second=0, microsecond=0).timestamp())


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, TZ).isoformat()


def answers(server: Any, sns: list[str], start: int, end: int, first_day: int, drill: int) -> dict[str, Any]:
    """What the server answers about the backlog's period: figures per unit, per county over every generated day,
    and the drill-down of ``drill`` units on each whole past day the backlog touched."""
    out: dict[str, Any] = {}

    def get(path: str, **params: str) -> Any:
        r = server.request("GET", path, params=params, timeout=600)
        r.raise_for_status()
        return r.json()

    out["units, backlog hours"] = get("/api/v1/availability", **{"from": iso(start), "to": iso(end), "group_by": "unit"})
    out["counties, every generated day"] = get("/api/v1/availability", **{"from": iso(first_day), "to": iso(end),
                                                                           "group_by": "county"})
    day = datetime.fromtimestamp(start, TZ).date()
    last = datetime.fromtimestamp(end, TZ).date()  # its day is not over at ``end``: left out
    for sn in random.Random(5).sample(sns, min(drill, len(sns))):
        d = day
        while d < last:
            out[f"drill-down {sn} {d}"] = get(f"/api/v1/units/{sn}/slots", date=d.isoformat())
            d += timedelta(days=1)
    return out


def stored_rows(url: str) -> dict[str, list[str]]:
    """What the recount wrote besides the hours, read straight from the database (a benchmark's read, both
    backends): every unit-day's network service levels (``sla_day``), the county and the cell outages; rows as text
    joined by ``|``, sorted here (the backends collate text differently)."""
    queries = {"sla_day": "SELECT * FROM sla_day", "outages": "SELECT county, minute, units, sns FROM outages",
               "cell_outages": "SELECT tac, cell, minute, county, units, sns FROM cell_outages"}
    out: dict[str, list[str]] = {}
    for name, sql in queries.items():
        if url.startswith("sqlite:///"):
            import sqlite3

            con = sqlite3.connect(f"file:{url[len('sqlite:///'):]}?mode=ro", uri=True, timeout=30)
            try:
                rows = ["|".join("" if v is None else str(v) for v in r) for r in con.execute(sql)]
            finally:
                con.close()
        else:
            import subprocess

            from simulator.postgres import pg_bindir

            got = subprocess.run([str(pg_bindir() / "psql"), "-X", "-A", "-t", "-d", url, "-c", sql],
                                 capture_output=True, text=True, timeout=600, check=True)
            rows = [line for line in got.stdout.splitlines() if line]
        out[name] = sorted(rows)
    return out


def one_backend(backend: str, pki: Pki, workdir: Path, args: argparse.Namespace, now: int, pg: Any) -> dict[str, Any]:
    url = pg.create("recount") if backend == "postgresql" else None
    sargs = argparse.Namespace(server_extra=args.server_extra, days=args.days, drill_units=0,
                               drain_timeout=args.timeout)
    t = time.perf_counter()
    broker, server, g = setup(pki, args.units, workdir, sargs, url, now=now)
    r: dict[str, Any] = {"storage": backend, "units": args.units, "registered": g["units"], "hours": args.hours,
                         "days": args.days, "t_setup_s": time.perf_counter() - t}
    end = hour_of(now)
    start = end - args.hours * 3600
    sns = g["sns"][: args.units]
    pids = {"server": server.proc.pid if server.proc else None, "postgres": pg.proc.pid if url else None}
    pids = {k: v for k, v in pids.items() if v}
    try:
        print(f"  {backend}: {len(sns):,} units send {args.hours} h of one-minute samples "
              f"({len(sns) * args.hours * 60:,} samples) as agents do after an outage ...", flush=True)
        r["backlog"] = b = send_backlog(pki, broker, server, sns, start, args.hours * 60, EPOCH, workdir,
                                        window=args.window, batch=args.batch, timeout=args.timeout, cpu_pids=pids,
                                        workers=api_workers(args.server_extra) > 1)
        report_backlog(backend, b)
        # the service levels and outages as the roll-up loop left them (before the explicit recount rewrites them)
        after_backlog = stored_rows(server.storage_url)
        print(f"  {backend}: stored after the backlog: " + ", ".join(f"{len(v):,} {k} rows"
                                                                      for k, v in after_backlog.items()), flush=True)
        cpu0 = {k: cpu_of(p) for k, p in pids.items()}
        t = time.perf_counter()
        resp = server.request("POST", "/api/v1/availability/recount", timeout=7200,
                              json={"from": iso(start), "to": iso(end), "sns": sns})
        resp.raise_for_status()
        r["explicit"] = {"s": time.perf_counter() - t, "unit_hours": resp.json().get("unit_hours"),
                         "cpu_s": {k: cpu_of(p) - cpu0[k] for k, p in pids.items()},
                         "load": os.getloadavg()[0]}
        e = r["explicit"]
        print(f"  {backend}: explicit recount of the same {e['unit_hours']:,} unit-hours (POST "
              f"/api/v1/availability/recount): {e['s']:.1f} s, CPU {_cpu(e['cpu_s'])}; load average {e['load']:.1f}",
              flush=True)
        r["answers"] = answers(server, sns, start, end, midnight(datetime.fromtimestamp(now, TZ).date()
                                                                  - timedelta(days=args.days)), args.drill)
        r["answers"].update({f"stored {k} after the backlog": v for k, v in after_backlog.items()})
    finally:
        server.stop()
        broker.stop()
        if url:
            pg.psql('DROP DATABASE "recount"')
    return r


def _cpu(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f} s" for k, v in d.items())


def report_backlog(backend: str, b: dict[str, Any]) -> None:
    st = b["status"]
    print(f"  {backend}: {b['stored']:,} of {b['samples']:,} samples stored after {b['stored_s']:.1f} s "
          f"({b['samples'] / b['stored_s']:,.0f} samples/s; {b['messages']:,} messages, {b['unacked']} never "
          f"acknowledged; Ack lag p50 {b['lag']['p50_s']:.1f} s, p99 {b['lag']['p99_s']:.1f} s), CPU {_cpu(b['cpu_store_s'])}",
          flush=True)
    job = (f"the server's roll-up job: {st.get('recounts')} pass(es), {st.get('hours_recounted', 0):,} unit-hours "
           f"recounted, last pass {st.get('last_recount_s')} s" if st else "(API workers: the primary's roll-up "
           "job figures are not served)")
    print(f"  {backend}: every hour recounted {b['recounted_s']:.1f} s after the first publish, "
          f"{b['recounted_s'] - b['stored_s']:.1f} s after the last sample was stored; CPU from stored to recounted "
          f"{_cpu(b['cpu_recount_s'])}; {job}; load average {os.getloadavg()[0]:.1f}", flush=True)


def compare(runs: list[dict[str, Any]]) -> list[str]:
    """The answers that differ between the backends (empty: identical)."""
    if len(runs) < 2:
        return []
    a, b = runs[0]["answers"], runs[1]["answers"]
    diffs = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return diffs


def run(a: argparse.Namespace, workdir: Path, pg: Any = None) -> dict[str, Any]:
    """Every backend of ``a.storage`` in turn (PostgreSQL: in ``pg``, or a cluster started here); the figures, the
    answers and the keys of the answers that differ between the first two backends."""
    now = int(a.now) if getattr(a, "now", None) else int(time.time())
    print(f"{machine_line()}\nrecount after a {a.hours} h backlog from {a.units:,} units on {', '.join(a.storage)}; "
          f"time fixed at {iso(now)}", flush=True)
    out: dict[str, Any] = {"machine": machine(), "args": {k: v for k, v in vars(a).items() if k != "json"},
                           "now": now, "runs": []}
    own = None
    t0 = time.perf_counter()
    try:
        if "postgresql" in a.storage and pg is None:
            from simulator.postgres import Postgres

            pg = own = Postgres(settings={"shared_buffers": "512MB"}).start()
        pki = Pki(workdir / "pki")
        for backend in a.storage:
            out["runs"].append(one_backend(backend, pki, workdir / backend, a, now, pg))
    finally:
        if own is not None:
            own.stop()
    out["total_s"] = time.perf_counter() - t0
    out["differences"] = compare(out["runs"])
    return out


def summary(out: dict[str, Any]) -> None:
    a, diffs = out["args"], out["differences"]
    print("\n== recount after a backlog: summary")
    for r in out["runs"]:
        b, e = r["backlog"], r["explicit"]
        print(f"  {r['storage']:<10} stored {b['stored_s']:7.1f} s ({b['samples'] / b['stored_s']:,.0f} samples/s), "
              f"recounted {b['recounted_s'] - b['stored_s']:6.1f} s after (CPU {_cpu(b['cpu_recount_s'])}); "
              f"explicit recount {e['s']:.1f} s (CPU {_cpu(e['cpu_s'])})")
    if len(out["runs"]) > 1:
        got = out["runs"][0]["answers"]
        n, drill = len(got), sum(1 for k in got if k.startswith("drill-down "))
        print(f"  answers: {'identical' if not diffs else 'DIFFERENT'} on {' and '.join(a['storage'])} "
              f"({n} answers compared: per unit over the backlog, per county over {a['days']} days, "
              f"{drill} drill-downs, the sla_day, outages and cell_outages rows the roll-up loop left)"
              + (f"; differ: {', '.join(diffs[:10])}" if diffs else ""))
    print(f"total {out['total_s']:.0f} s; {machine_line()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=3000, help="units sending the backlog (default 3000)")
    p.add_argument("--hours", type=int, default=72, help="hours of one-minute samples each sends (default 72)")
    p.add_argument("--days", type=int, default=0, help="days of roll-ups generated before today (default: the "
                   "backlog's days and one more)")
    p.add_argument("--storage", default="sqlite,postgresql", help="backends, comma-separated, one after the other "
                   "(default sqlite,postgresql)")
    p.add_argument("--batch", type=int, default=60, help="samples a batch, the agent's link.max_batch (default 60)")
    p.add_argument("--window", type=int, default=4, help="batches unacknowledged per unit (default 4)")
    p.add_argument("--drill", type=int, default=10, help="units whose drill-downs are compared (default 10)")
    p.add_argument("--timeout", type=float, default=4 * 3600.0, help="seconds to wait for storing, and again for "
                   "the recount (default 4 h)")
    p.add_argument("--server-extra", default="", help="extra server TOML")
    p.add_argument("--now", type=int, default=0, help="the time fixed at the start, epoch seconds (default: now; "
                   "the same for two runs, e.g. before and after a change, makes their answers comparable)")
    p.add_argument("--json", default="", help="write every figure (and the answers compared) to this JSON file")
    a = p.parse_args(argv)
    a.storage = [x.strip() for x in a.storage.split(",") if x.strip()]
    if not a.storage or set(a.storage) - {"sqlite", "postgresql"}:
        p.error("--storage: sqlite, postgresql or both, comma-separated")
    if a.days <= 0:
        a.days = a.hours // 24 + 2
    with tempfile.TemporaryDirectory(prefix="bench-recount-") as tmp:
        out = run(a, Path(tmp))
    summary(out)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=str))
    return 1 if out["differences"] else 0


if __name__ == "__main__":
    sys.exit(main())
