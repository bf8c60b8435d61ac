"""The quarterly operations report for a 50,000-unit fleet (issue 17): time and peak memory for PDF and XLSX.

A fleet is written straight into a SQLite database by ``bench_server_api.generate`` (registry, institutions in
counties, live state with each unit's newest sample, inventory and identity, a quarter of hourly roll-ups, raw
samples for ``--raw-units`` units over the quarter's last ``--raw-days`` days for the network service-level
section). Then, each in a fresh child process (so its peak RSS is its own):

* ``pdf``: the report gathered (``server.reports.ops.build`` with the inspection appendix), the report without
  the appendix printed, and the appendix printed per county (``documents()``: what the scheduled report makes),
  each by the real headless Chromium;
* ``xlsx``: the same gathering, the whole workbook with the 50,000-row appendix sheet (openpyxl, write-only).

Reported per format: gathering time, rendering time, the files and their sizes, peak RSS of the Python process
(``ru_maxrss``, also right after gathering) and of the largest Chromium process (sampled), the load average.

    .venv/bin/python -m benchmarks.bench_report_quarter                   # 50,000 units, Q4 2026
    .venv/bin/python -m benchmarks.bench_report_quarter --units 5000 --formats xlsx
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from benchmarks._harness import machine_line

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2027, 1, 1, 3, 0, tzinfo=TZ)  # Q4 2026 is over and counted


def make_fleet(db: Path, units: int, institutions: int, raw_units: int, raw_days: int) -> dict[str, object]:
    from benchmarks.bench_server_api import generate

    return generate(db, units, institutions, days=93, raw_units=raw_units, raw_days=raw_days, backlog_units=0,
                    backlog_hours=0, now=int(NOW.timestamp()))


_chromium_peak = 0


async def _watch_chromium() -> None:
    """The largest RSS of any Chromium process started by this one, sampled every 0.2 s (ru_maxrss of the
    children would count the fork before exec, i.e. this process's own size)."""
    global _chromium_peak
    import psutil

    me = psutil.Process()
    while True:
        for p in me.children(recursive=True):
            try:
                _chromium_peak = max(_chromium_peak, round(p.memory_info().rss / 2**20))
            except psutil.Error:
                pass
        await asyncio.sleep(0.2)


async def child(db: Path, fmt: str, out_dir: Path) -> dict[str, object]:
    from server.app import make_clock
    from server.availability.service import Availability
    from server.registry.service import Registry
    from server.reports.ops import build, documents, render
    from server.reports.periods import resolve
    from server.settings import parse
    from server.storage import open_storage

    settings = parse({"storage": {"url": f"sqlite:///{db}"}, "retention_days": 14,
                      "clock": {"start": NOW.isoformat()}, "ingest_enabled": False})
    storage = open_storage(settings.storage.url, settings.base_dir)
    await storage.open()
    t0 = time.perf_counter()
    try:
        registry = Registry(settings, storage, make_clock(settings).now)
        svc = Availability(settings, storage, registry, make_clock(settings))
        await svc.load()
        period = resolve(svc, quarter="2026Q4")
        data = await build(svc, storage, period.start, period.end, None, "zh", period=period, appendix=True)
    finally:
        await storage.close()
    gathered = time.perf_counter() - t0
    after_gather = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t1 = time.perf_counter()
    watcher = asyncio.create_task(_watch_chromium())
    files = []
    for name, doc in documents(data, fmt):
        body = await render(doc, fmt, settings)
        (out_dir / name).write_bytes(body)
        files.append((name, len(body)))
    rendered = time.perf_counter() - t1
    watcher.cancel()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"format": fmt, "gather_s": round(gathered, 1), "render_s": round(rendered, 1), "files": len(files),
            "bytes": sum(b for _n, b in files), "largest": max(files, key=lambda f: f[1]),
            "peak_rss_mb": round(own), "gather_rss_mb": round(after_gather), "chromium_mb": _chromium_peak,
            "units": sum(len(v) for v in data["inspection"].values()), "counties": len(data["counties"]),
            "sla_from": data["sla"]["evidence_from"], "load": os.getloadavg()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=50_000)
    ap.add_argument("--institutions", type=int, default=5_000, help="150 a county: 33 counties at 5,000")
    ap.add_argument("--raw-units", type=int, default=2_000)
    ap.add_argument("--raw-days", type=int, default=2)
    ap.add_argument("--formats", default="pdf,xlsx")
    ap.add_argument("--child", nargs=3, metavar=("DB", "FORMAT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        db, fmt, out = args.child
        print(json.dumps(asyncio.run(child(Path(db), fmt, Path(out)))))
        return 0
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="pf-bench-report-") as tmp:
        db = Path(tmp) / "fleet.sqlite"
        t0 = time.perf_counter()
        g = make_fleet(db, args.units, args.institutions, args.raw_units, args.raw_days)
        print(f"fleet: {args.units:,} units ({len(g['sns']):,} in service), {len(g['counties'])} counties, "
              f"{g['rollup_rows']:,} day roll-ups, {g['samples']:,} raw samples; written in "
              f"{time.perf_counter() - t0:.0f} s; database {db.stat().st_size / 1e6:.0f} MB")
        for fmt in args.formats.split(","):
            out = Path(tmp) / fmt
            out.mkdir()
            t1 = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "benchmarks.bench_report_quarter", "--child", str(db), fmt,
                                  str(out)], capture_output=True, text=True, timeout=3600)
            wall = time.perf_counter() - t1
            if run.returncode != 0:
                print(f"{fmt}: failed\n{run.stderr[-3000:]}")
                return 1
            r = json.loads(run.stdout.strip().splitlines()[-1])
            load = ", ".join(f"{x:.1f}" for x in r["load"])
            print(f"{fmt}: {wall:.1f} s wall (gather {r['gather_s']} s, render {r['render_s']} s); {r['files']} files, "
                  f"{r['bytes'] / 1e6:.1f} MB (largest {r['largest'][0]} {r['largest'][1] / 1e6:.1f} MB); "
                  f"peak RSS {r['peak_rss_mb']} MB ({r['gather_rss_mb']} MB after gathering; largest Chromium "
                  f"process {r['chromium_mb']} MB); {r['units']:,} units in "
                  f"the appendix, {r['counties']} counties; SLA from {r['sla_from']}; load {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
