"""The scale benchmark's generator and measurements, on a tiny fleet (real broker, real server).

If the generator published the wrong SNs, or the lag probe matched Acks to the wrong messages, the figures in
docs/performance-scale.md would be wrong without anyone noticing.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest

from benchmarks import bench_scale
from wire import codec
from wire.messages import Batch


def test_terminal_batch_is_a_valid_batch_with_the_terminals_faults() -> None:
    rng = random.Random(1)
    b = codec.decode(bench_scale.terminal_batch("HN00000007", 7, 1, 11, 1_700_000_000, 10, rng), Batch)
    assert b.sn == "HN00000007" and [s.seq for s in b.samples] == list(range(11, 21))
    assert [s.ts for s in b.samples] == [1_700_000_000 + 60 * i for i in range(10)]
    assert all(s.checks["printer"].reason == "paper_out" for s in b.samples)  # terminal 7: printer out of paper
    healthy = codec.decode(bench_scale.terminal_batch("HN00000001", 1, 1, 1, 1_700_000_000, 10, rng), Batch)
    assert all(c.state == 0 for s in healthy.samples for c in s.checks.values())
    assert all(s.connected for s in healthy.samples)
    flaky = codec.decode(bench_scale.terminal_batch("HN00000009", 9, 1, 1, 1_700_000_000, 10, rng), Batch)
    down = [s for s in flaky.samples if not s.connected]
    assert len(down) == 3 and all(s.rtt_ms is None for s in down)  # terminal 9 loses the link for 3 minutes


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("backend", "extra"), [("sqlite", ""), ("postgresql", ""),
                                              ("postgresql", "api_workers = 2\nprimary_api = false")])
def test_tiny_fleet_every_sample_stored_and_every_message_acknowledged(tmp_path: Path, backend: str, extra: str,
                                                                       request: pytest.FixtureRequest) -> None:
    """Also with the API in worker processes (the layout of run 3b): the primary's pending hours are then read
    from what it publishes for them, not from the API."""
    args = argparse.Namespace(sizes=[60], seconds=3.0, period=1.5, warmup=1.0, clients=[5], requests=4,
                              avail_requests=2, quarter_requests=2, days=3, drill_units=4, drill_days=1, wave=60,
                              outage_minutes=3, drain_timeout=60.0, server_extra=extra, storage=[backend])
    pg = request.getfixturevalue("postgres") if backend == "postgresql" else None
    res = bench_scale.run(args, tmp_path, pg)
    live = res["live"][0]
    assert live["storage"] == backend
    assert live["sent_msgs"] == 60 * 2  # two rounds of 60 terminals in 3 s at one batch per 1.5 s
    assert live["stored"] == live["sent_samples"] == 60 * 2 * 10
    assert live["unacked"] == 0 and live["lag_all"]["n"] == live["sent_msgs"]
    assert 0 < live["lag_all"]["p50_s"] < 5
    assert live["server_cpu_pct"] > 0 and live["server_rss_mb"] > 10
    if backend == "postgresql":  # the database's own processes are watched beside the server
        assert live["postgres_cpu_pct"] > 0
    # the drilled units' last day went through ingest and the roll-up pass before the live run
    drill = live["drill_backlog"]
    assert drill["stored"] == drill["samples"] == 4 * 1440 and drill["unacked"] == 0
    assert drill["recounted_s"] >= drill["stored_s"] > 0
    if not extra:
        assert drill["status"]["pending_unit_hours"] == 0 and drill["status"]["hours_recounted"] >= 4 * 24
    assert {k: v["errors"] for k, v in live["api"].items()} == {
        "list units|5": 0, "unit detail|5": 0, "drill-down|5": 0, "fleet availability by county|5": 0,
        "fleet quarter by county|5": 0}
    w = res["wave"]
    assert w["stored"] == w["expected"] == 60 * 3 and w["unacked"] == 0
    assert w["lag_newest"]["n"] == 60 and w["newest_all_acked_s"] > 0


def test_generated_rows_copied_into_postgresql_answer_as_on_sqlite(tmp_path: Path, pg_url: str) -> None:
    """The registry and roll-ups bench_scale generates reach PostgreSQL whole: the server's storage on each
    backend reads the same availability basis from them."""
    import asyncio
    import time

    from benchmarks.bench_server_api import copy_generated, generate
    from server.storage import open_storage
    from server.storage.ops import availability_basis, counts

    db = tmp_path / "gen.sqlite"
    generate(db, 120, institutions=10, days=40, raw_units=0, raw_days=0, backlog_units=0, backlog_hours=0,
             now=int(time.time()))
    copy_generated(db, pg_url)

    async def basis(url: str) -> tuple[dict, dict]:
        st = open_storage(url, readers=1)
        await st.open()
        try:
            return await availability_basis(st), await counts(st)
        finally:
            await st.close()

    lite, lite_rows = asyncio.run(basis(f"sqlite:///{db}"))
    pg, pg_rows = asyncio.run(basis(pg_url))
    assert lite_rows["rollup_day"] == 114 * 40 and lite_rows["registry"] == 120  # every 20th unit a spare
    assert {t: pg_rows[t] for t in bench_tables()} == {t: lite_rows[t] for t in bench_tables()}
    assert pg == lite


def bench_tables() -> tuple[str, ...]:
    from benchmarks.bench_server_api import GENERATED

    return GENERATED
