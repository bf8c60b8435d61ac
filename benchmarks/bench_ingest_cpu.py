"""CPU per sample of the server's ingest path, in-process: decode, boundary, commit, post-commit hooks (issue 12).

The real app (``server.app.create_app``, a real SQLite file, the real ``Ingest._process``) is fed the batches
bench_ingest sends (10 realistic samples each, 3,000 units) in ingest batches of 500 messages, without MQTT, so
the figure is the server's own work per sample and does not depend on the broker or a load generator sharing the
cores. Printed: process CPU microseconds per sample and samples per wall second, per run, and the median.
Run it from a checkout of another commit to compare (the script only needs ``tests.server.conftest`` and
``benchmarks.bench_ingest.make_batch`` there).

    .venv/bin/python -m benchmarks.bench_ingest_cpu --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._harness import machine_line
from benchmarks.bench_ingest import make_batch
from tests.server.conftest import make_api

BATCHES, PER_COMMIT = 3000, 500


async def one_run() -> tuple[float, float]:
    rng = random.Random(1)
    now = int(time.time())
    items = [(f"pf/HN{n % 3000:08d}/t", make_batch(f"HN{n % 3000:08d}", 1, n * 10, now - 86400, rng), 0, 0)
             for n in range(BATCHES)]
    with tempfile.TemporaryDirectory() as d:
        async with make_api(Path(d), now="2026-12-06 12:00") as api:
            api.clock.t = now
            ingest = api.app.state.ingest
            t, c = time.perf_counter(), time.process_time()
            for i in range(0, len(items), PER_COMMIT):
                await ingest._process(items[i:i + PER_COMMIT])
            wall, cpu = time.perf_counter() - t, time.process_time() - c
    n = BATCHES * 10
    return cpu / n * 1e6, n / wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)  # "commands cannot be signed" and the like: not what is measured
    print(machine_line())
    cpus = []
    for k in range(a.runs):
        cpu, rate = asyncio.run(one_run())
        cpus.append(cpu)
        print(f"run {k + 1}: {cpu:.1f} us CPU a sample, {rate:,.0f} samples/s wall")
    print(f"median {statistics.median(cpus):.1f} us CPU a sample over {a.runs} runs ({BATCHES} batches of 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
