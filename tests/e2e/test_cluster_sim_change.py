"""A SIM change raises its alert whichever server process received the terminal's identity (issue 15, decision 030).

Two server processes on one PostgreSQL: the leader runs the alert rules, the follower ingests. The leader here listens
on a broker of its own that no terminal uses, so every message of the terminal reaches the follower alone: the
change is seen only through what the follower stored. Then the leader is SIGKILLed and the follower, now leading,
raises the next change, and not the one already raised (the rule's memory is in the database, not in a process).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.cluster import leader_and_follower, leads
from tests.fleet import Server, stop_process, wait_for
from tests.terminal import Terminal
from wire import codec
from wire.messages import Batch, Event

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SN = "HN00170001"
ICCID = {"A": "89860011111111111111", "B": "89860022222222222222", "C": "89860033333333333333"}


def _sim_alerts(s: Server) -> list[dict]:
    r = s.get("/api/v1/alerts", kind="sim_changed", open="false")
    assert r.status_code == 200, r.text
    return sorted(r.json()["items"], key=lambda a: a["id"])


def _identity(t: Terminal, seq: int, ts: int, kind: str, iccid: str, **more: str) -> None:
    t.acked.discard(seq)  # (a resend: wait for its own acknowledgement)
    t.send(codec.encode(Batch(sn=SN, epoch=7, events=[Event(seq=seq, ts=ts, kind=kind,
                                                            data={"iccid": iccid, "carrier": "CMCC", **more})])))
    wait_for(lambda: seq in t.acked, 20, f"event {seq} committed")


def test_a_sim_change_stored_by_a_follower_is_raised_once_by_the_leader(pki, broker, pg_url: str,
                                                                        tmp_path: Path) -> None:
    with leader_and_follower(pki, broker, pg_url, tmp_path, extra="[alerts]\ninterval_s = 0.5\n") as pair:
        leader, follower = pair.leader, pair.follower
        t = pair.terminal(SN)
        now = int(time.time())
        _identity(t, 1, now - 600, "inventory", ICCID["A"])
        _identity(t, 2, now - 300, "inventory", ICCID["B"])  # the SIM was swapped
        wait_for(lambda: _sim_alerts(leader), 30, "the leader raised the SIM change the follower stored")
        time.sleep(2)  # several more passes of the leader's rules: still one alert
        (first,) = _sim_alerts(follower)
        assert first["sn"] == SN and first["closed_ts"] is None
        assert first["data"] == {"old_iccid": ICCID["A"], "new_iccid": ICCID["B"]}
        assert leader.request("POST", f"/api/v1/alerts/{first['id']}/close",
                              json={"note": "the new SIM is the one the contract names"}).status_code == 200

        _identity(t, 2, now - 300, "inventory", ICCID["B"])  # the same report again (a lost acknowledgement)
        stop_process(leader.proc, signal.SIGKILL)
        leader.proc = None
        wait_for(lambda: leads(follower) == 1, 30, "the follower took the leadership over")
        _identity(t, 3, now - 60, "sim_changed", ICCID["C"], old_iccid=ICCID["B"])
        wait_for(lambda: len(_sim_alerts(follower)) == 2, 30, "the new leader raised the next change")
        time.sleep(2)
        again, second = _sim_alerts(follower)
        assert again["id"] == first["id"] and again["closed_ts"] is not None, "the first change was not raised again"
        assert second["data"] == {"old_iccid": ICCID["B"], "new_iccid": ICCID["C"]} and second["closed_ts"] is None
        assert follower.request("POST", f"/api/v1/alerts/{second['id']}/close",
                                json={"note": "checked on site"}).status_code == 200
        _identity(t, 3, now - 60, "sim_changed", ICCID["C"], old_iccid=ICCID["B"])  # resent: still closed
        time.sleep(2)
        assert [a["closed_ts"] is not None for a in _sim_alerts(follower)] == [True, True]
