"""The network service-level roll-up (issue 17, decision 029): what it costs to keep and what it saves the report.

* **Report side**: ``storage.sla_sums`` over a quarter (92 days) of ``sla_day`` rows for ``--units`` units (what the
  report's network section reads instead of raw samples), on a real SQLite file.
* **Pass side**: what the roll-up pass adds once a day per unit: reading a local day of minute samples of 100 units
  (``storage.network_samples``, 144,000 rows, as ``Availability._sla_day`` reads them) and counting them
  (``server.availability.sla.count_unit``), for ``--day-units`` units.

    .venv/bin/python -m benchmarks.bench_sla_rollup                  # 50,000 units' quarter, 1,000 units' day
    .venv/bin/python -m benchmarks.bench_sla_rollup --units 5000 --day-units 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from benchmarks._harness import machine_line

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 12, 1)


async def main(units: int, day_units: int) -> None:
    from server.availability import sla
    from server.availability.rollups import midnight
    from server.storage import SampleRow, open_storage

    print(machine_line())
    with tempfile.TemporaryDirectory() as d:
        st = open_storage(f"sqlite:///{Path(d) / 'fleet.sqlite'}", readers=2)
        await st.open()
        rnd = random.Random(17)
        first = date(2026, 10, 1).toordinal()
        t0 = time.perf_counter()
        for day in range(first, first + 92):
            await st.write_sla_days([(f"HN{k:08d}", day, [36000, 35000 + rnd.randrange(1000), 36000, 33000, 35000,
                                                          34000, 35000, rnd.randrange(600)]) for k in range(units)])
        print(f"sla_day: {units} units x 92 days written in {time.perf_counter() - t0:.1f} s "
              f"({os.path.getsize(Path(d) / 'fleet.sqlite') / 1e6:.0f} MB file)")
        for label, sns in (("fleet", None), ("one county", [f"HN{k:08d}" for k in range(0, units, 33)])):
            t0 = time.perf_counter()
            sums, days = await st.sla_sums(first, first + 91, sns)
            print(f"report side, {label}: sla_sums over 92 days -> {len(sums)} units, {len(days)} days in "
                  f"{time.perf_counter() - t0:.2f} s")

        a = midnight(DAY, TZ)
        t0 = time.perf_counter()
        for u in range(0, day_units, 100):
            rows = []
            for k in range(u, min(u + 100, day_units)):
                for m in range(-60, 1440):
                    ts = a + 60 * m
                    rows.append(SampleRow(f"HD{k:08d}", 1, m + 60, ts, 60, 0, m % 97 != 0, 60 + (m * 7) % 500,
                                          {"printer": [0, ""]}, {"ts": ts, "rtt_var_ms": (m * 3) % 90,
                                                                 "retrans": m * 2, "segs_out": m * 1000}, float(ts)))
            await st.store_telemetry(rows, [])
        print(f"raw samples: {day_units} units x 1,500 minutes written in {time.perf_counter() - t0:.1f} s")
        windows = [(a + 8 * 3600, a + 18 * 3600)]
        read_s = count_s = 0.0
        for u in range(0, day_units, 100):
            chunk = [f"HD{k:08d}" for k in range(u, min(u + 100, day_units))]
            t0 = time.perf_counter()
            got = await st.network_samples(a - sla.LOSS_GAP_S, a + 86400, chunk)
            t1 = time.perf_counter()
            by_sn: dict[str, list] = {}
            for r in got:
                by_sn.setdefault(r[0], []).append(r[1:])
            for sn in chunk:
                sla.count_unit(by_sn.get(sn, []), windows, [], a, a + 86400, (400, 50, 1e-3), TZ)
            read_s += t1 - t0
            count_s += time.perf_counter() - t1
        per = (read_s + count_s) / day_units
        print(f"pass side: {day_units} unit-days read in {read_s:.1f} s and counted in {count_s:.1f} s: "
              f"{per * 1000:.1f} ms a unit-day; {per * 50000 / 60:.1f} min a day for 50,000 units")
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; load average "
              f"{os.getloadavg()[0]:.1f}; finished {datetime.now(TZ):%Y-%m-%d %H:%M} (+08:00)")
        await st.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--units", type=int, default=50_000)
    p.add_argument("--day-units", type=int, default=1000)
    args = p.parse_args()
    asyncio.run(main(args.units, args.day_units))
