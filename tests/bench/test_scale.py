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


@pytest.mark.timeout(60)
def test_tiny_fleet_every_sample_stored_and_every_message_acknowledged(tmp_path: Path) -> None:
    args = argparse.Namespace(sizes=[60], seconds=3.0, period=1.5, warmup=1.0, clients=[5], requests=4,
                              avail_requests=2, days=1, wave=60, outage_minutes=3, drain_timeout=30.0,
                              server_extra="")
    res = bench_scale.run(args, tmp_path)
    live = res["live"][0]
    assert live["sent_msgs"] == 60 * 2  # two rounds of 60 terminals in 3 s at one batch per 1.5 s
    assert live["stored"] == live["sent_samples"] == 60 * 2 * 10
    assert live["unacked"] == 0 and live["lag_all"]["n"] == live["sent_msgs"]
    assert 0 < live["lag_all"]["p50_s"] < 5
    assert live["server_cpu_pct"] > 0 and live["server_rss_mb"] > 10
    assert {k: v["errors"] for k, v in live["api"].items()} == {
        "list units|5": 0, "unit detail|5": 0, "fleet availability by county|5": 0}
    w = res["wave"]
    assert w["stored"] == w["expected"] == 60 * 3 and w["unacked"] == 0
    assert w["lag_newest"]["n"] == 60 and w["newest_all_acked_s"] > 0
