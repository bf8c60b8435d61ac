"""The pure counter's speed: a year of minute samples for one unit (counting/counter.py).

    .venv/bin/python -m benchmarks.bench_counter            # best of 5
    .venv/bin/python -m benchmarks.bench_counter --runs 9

Prints the best and median seconds for ``count_unit`` over 525,600 samples (service 08:00-18:00, 219,000 service
slots) and for summing its hourly roll-up back to figures. Target (what the tests used to time): < 1 s and
< 0.5 s on this 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from benchmarks._harness import machine_line
from counting import Sample, count_unit, figures_from_rollups, rollup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    sh = ZoneInfo("Asia/Shanghai")
    start, end = datetime(2026, 1, 1, tzinfo=sh), datetime(2027, 1, 1, tzinfo=sh)
    base = int(start.timestamp())
    samples = [Sample(base + 60 * k, 60, k % 100 != 0, k % 7 != 0) for k in range(365 * 1440)]
    count_s, roll_s = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        r = count_unit(start, end, samples)
        count_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        figures_from_rollups(rollup(r, "hour"))
        roll_s.append(time.perf_counter() - t0)
    print(machine_line())
    print(f"count_unit, a year of minute samples ({len(samples):,}; {r.figures.service_slots:,} service slots): "
          f"best {min(count_s):.3f} s, median {statistics.median(count_s):.3f} s (target < 1 s)")
    print(f"hourly roll-up summed back: best {min(roll_s):.3f} s, median {statistics.median(roll_s):.3f} s "
          "(target < 0.5 s)")


if __name__ == "__main__":
    main()
