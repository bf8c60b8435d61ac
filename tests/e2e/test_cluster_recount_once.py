"""Late hours a follower stored are recounted once across the server processes (issue 15, decision 030).

Two server processes on one PostgreSQL: the leader listens on a broker of its own that no terminal uses, so the
terminal's late batch reaches the follower alone. The follower stores it with the hours it touches
(``recount_queue``, in the same transaction); the leader recounts those hours from there. Before, the follower also
recounted them itself, and every late hour stored by a follower was counted twice.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.backend import db_count
from tests.cluster import leader_and_follower
from tests.fleet import Server, wait_for
from wire import codec
from wire.messages import Batch, Check, Sample

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SN = "HN00170002"
OK = {k: Check(0) for k in ("printer", "idcard", "modem", "storage")}


def _status(s: Server) -> dict:
    r = s.get("/api/v1/availability/status")
    assert r.status_code == 200, r.text
    return r.json()


def test_a_late_hour_stored_by_a_follower_is_recounted_once(pki, broker, pg_url: str, tmp_path: Path) -> None:
    with leader_and_follower(pki, broker, pg_url, tmp_path) as pair:
        leader, follower = pair.leader, pair.follower
        hour = int(time.time()) // 3600 * 3600 - 3 * 3600  # a closed hour, three hours back: late data
        t = pair.terminal(SN)
        t.send(codec.encode(Batch(sn=SN, epoch=3, samples=[
            Sample(seq=k, ts=hour + 60 * k, interval=60, connected=True, rtt_ms=80, checks=OK) for k in range(60)])))
        wait_for(lambda: 59 in t.acked, 30, "the follower committed the late hour")
        wait_for(lambda: db_count(pg_url, "select count(*) from recount_queue") == 0, 60,
                 "the leader took the hours from the queue")
        wait_for(lambda: _status(leader)["pending_unit_hours"] == 0, 60, "the leader recounted them")
        period = {"from": time.strftime("%Y-%m-%dT%H:00:00+00:00", time.gmtime(hour)),
                  "to": time.strftime("%Y-%m-%dT%H:00:00+00:00", time.gmtime(hour + 3600)), "group_by": "unit"}
        wait_for(lambda: follower.get("/api/v1/availability", **period).json()["complete"], 30, "complete")
        time.sleep(3)  # the follower's own debounced recount would have run by now
        (unit,) = [u for u in follower.get("/api/v1/availability", **period).json()["items"] if u["sn"] == SN]
        assert unit["no_data_slots"] == 0 and unit["intact_slots"] == unit["service_slots"], unit
        assert _status(follower)["hours_recounted"] == 0, "the follower recounted what the leader recounts"
        assert _status(leader)["hours_recounted"] >= 1


def test_sim_data_use_counts_the_samples_a_follower_stored(pki, broker, pg_url: str, tmp_path: Path) -> None:
    """A follower's ingest noted the SIM counter readings in its memory and never wrote them: a unit whose batches
    the shared subscription gave to a follower showed no data use on any process (and the follower's memory
    grew with every sample)."""
    sn = "HN00170003"
    with leader_and_follower(pki, broker, pg_url, tmp_path) as pair:
        now = int(time.time()) // 60 * 60
        t = pair.terminal(sn)
        t.send(codec.encode(Batch(sn=sn, epoch=1, samples=[  # 1 MB a minute on the counter
            Sample(seq=k, ts=now - 600 + 60 * k, interval=60, connected=True, rtt_ms=80, checks=OK,
                   data_bytes=5_000_000 + 1_000_000 * k) for k in range(10)])))
        wait_for(lambda: 9 in t.acked, 30, "the follower committed the samples")

        def used(s: Server) -> int:
            r = s.get(f"/api/v1/units/{sn}/data")
            return int(r.json()["used_bytes"]) if r.status_code == 200 else -1

        wait_for(lambda: used(pair.leader) == 9_000_000, 30,
                 "the data use the follower's samples show, read on the leader")
        # the follower reads it too, once its registry index has the unit (another process's registration is seen
        # within VERSION_TTL_S)
        wait_for(lambda: used(pair.follower) == 9_000_000, 10, "the same data use read on the follower")
