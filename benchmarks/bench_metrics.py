"""Prometheus ``/metrics`` scrape time at a provincial fleet (issue 17), and the self-inspection's answer.

    .venv/bin/python benchmarks/bench_metrics.py                  # 50,000 units, 5,000 open alerts
    .venv/bin/python benchmarks/bench_metrics.py --units 5000     # a quicker run

Generates the server's database with ``bench_server_api.generate`` (institutions, registry, live state of every
unit; ``--days`` of roll-ups), adds ``--alerts`` open alerts spread over the kinds, starts the real server
(``posfleet server run``, ingest off, one process), then scrapes ``GET /metrics`` from loopback (open without a
token, as a Prometheus on the same host does) ``--scrapes`` times, one at a time as Prometheus does, and times
``GET /api/v1/server/inspection`` likewise. Prints p50/p99/max and the size of a scrape, with the machine and its
load average (the box may be shared: CPU-bound figures are then slower than on an idle one).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._harness import machine_line  # noqa: E402
from benchmarks.bench_server_api import free_port, generate, wait_started  # noqa: E402

KINDS = ("offline", "fault", "storage", "pressure", "sim_data", "flagged", "certificate")


def add_alerts(db: Path, sns: list[str], n: int, now: int) -> None:
    rnd = random.Random(17)
    con = sqlite3.connect(db)
    rows = []
    for k in range(n):
        sn, kind = rnd.choice(sns), KINDS[k % len(KINDS)]
        rows.append((f"{kind}:{sn}:{k}", kind, sn, None, now - rnd.randrange(86400), now, None, f"{sn} {kind}", "{}"))
    con.executemany("INSERT INTO alerts(key, kind, sn, county, opened_ts, last_ts, closed_ts, message, data) "
                    "VALUES (?,?,?,?,?,?,?,?,?)", rows)
    con.commit()
    con.close()


def timed(client: httpx.Client, url: str, n: int, headers: dict[str, str] | None = None) -> tuple[list[float], int]:
    lat, size = [], 0
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(url, headers=headers or {})
        lat.append(time.perf_counter() - t)
        r.raise_for_status()
        size = len(r.content)
    return lat, size


def summary(name: str, lat: list[float], size: int) -> str:
    ms = sorted(x * 1000 for x in lat)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (f"{name}: {len(ms)} requests, p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms, "
            f"mean {statistics.fmean(ms):.1f} ms; {size:,} bytes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=50_000)
    ap.add_argument("--institutions", type=int, default=3_000)
    ap.add_argument("--days", type=int, default=31, help="days of hourly roll-ups")
    ap.add_argument("--alerts", type=int, default=5_000, help="open alerts")
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args()
    print(machine_line(), flush=True)
    work = Path(args.dir or tempfile.mkdtemp(prefix="posfleet-bench-metrics-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "fleet.sqlite"
    if db.exists():
        db.unlink()
    now = int(time.time())
    t0 = time.perf_counter()
    g = generate(db, args.units, args.institutions, args.days, 0, 1, 0, 1, now)
    add_alerts(db, list(g["sns"]), args.alerts, now)  # type: ignore[arg-type]
    print(f"generated {args.units:,} units, {args.alerts:,} open alerts in {time.perf_counter() - t0:.0f} s "
          f"({db.stat().st_size / 1e6:.0f} MB)", flush=True)
    port = free_port()
    cfg = work / "server.toml"
    cfg.write_text(f'ingest_enabled = false\nretention_days = 400\n[storage]\nurl = "sqlite:///{db}"\n'
                   f'[http]\nhost = "127.0.0.1"\nport = {port}\n[alerts]\nenabled = false\n'
                   f'[availability]\nrecount_debounce_s = 3600\n[api]\nrate_per_s = 0\naddress_rate_per_s = 0\n',
                   encoding="utf-8")
    log = open(work / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "posfleet", "server", "run", "--config", str(cfg), "--log-level",
                             "WARNING"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_started(base, proc, work / "server.log", 120)
        with httpx.Client(timeout=60) as c:
            timed(c, f"{base}/metrics", 5)  # warm: the first scrape opens the read connections
            lat, size = timed(c, f"{base}/metrics", args.scrapes)
            print(summary(f"GET /metrics at {args.units:,} units", lat, size), flush=True)
            text = c.get(f"{base}/metrics").text
            opened = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                         if line.startswith("posfleet_alerts_open{"))
            units = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                        if line.startswith("posfleet_units{"))
            print(f"  the scrape says: {units:,.0f} units, {opened:,.0f} open alerts", flush=True)
            head = {"Authorization": f"Bearer {g['token']}"}
            lat, size = timed(c, f"{base}/api/v1/server/inspection", max(10, args.scrapes // 10), head)
            print(summary("GET /api/v1/server/inspection", lat, size), flush=True)
        print(json.dumps({"units": args.units, "alerts": args.alerts}), flush=True)
        print(machine_line(), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
