"""The recount benchmark on a tiny fleet (real broker, real server on SQLite and on PostgreSQL).

If the backlog the generator sends were not stored, if the benchmark stopped its clock before the server had
recounted the hours, or if the comparison of the two backends' answers compared nothing, the recount figures in
docs/performance-server.md would be wrong without anyone noticing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import bench_recount


@pytest.mark.timeout(300)
def test_backlog_stored_recounted_and_answered_alike_on_both_backends(tmp_path: Path, postgres) -> None:  # type: ignore[no-untyped-def]
    args = argparse.Namespace(units=6, hours=26, days=3, storage=["sqlite", "postgresql"], batch=60, window=4,
                              drill=2, timeout=120.0, server_extra="")
    out = bench_recount.run(args, tmp_path, postgres)
    assert [r["storage"] for r in out["runs"]] == ["sqlite", "postgresql"]
    for r in out["runs"]:
        b = r["backlog"]
        assert b["stored"] == b["samples"] == 6 * 26 * 60 and b["unacked"] == 0
        assert b["messages"] == 6 * (1 + 26)  # the newest sample alone, then 26 batches of 60 (the last of 59)
        assert 0 < b["stored_s"] <= b["recounted_s"]
        assert b["status"]["pending_unit_hours"] == 0
        assert b["status"]["hours_recounted"] >= 6 * 26  # every unit-hour the backlog touched, at least once
        assert r["explicit"]["unit_hours"] == 6 * 26
        assert "postgres" in b["cpu_store_s"] if r["storage"] == "postgresql" else set(b["cpu_store_s"]) == {"server"}
    assert out["differences"] == []
    a = out["runs"][0]["answers"]
    units = a["units, backlog hours"]["items"]
    assert len(units) == 6 + 1 and a["units, backlog hours"]["complete"]  # six that sent, one that did not (N x 20/19 registered)
    # 26 hours always hold service hours (08:00-18:00): the comparison compares counted slots, not zeros
    assert sum(u["service_slots"] for u in units) > 0 and sum(u["intact_slots"] for u in units) > 0
    assert sum(1 for k in a if k.startswith("drill-down ")) >= 2
    # the service levels the roll-up loop left after the backlog are compared too: a whole past day of every unit
    assert len(a["stored sla_day after the backlog"]) >= 6 and "stored outages after the backlog" in a
