"""Store-and-forward: nothing is lost across agent kills, broker outages, full and read-only disks."""

from __future__ import annotations

import random
import time
from pathlib import Path

from tests.conftest import sqlite_count
from tests.fleet import AgentProc, Broker, Server, agent_config, outbox_backlog, upload_the_rest, wait_for

BACKLOG = 10_000


def test_sigkill_during_upload_loses_and_duplicates_nothing(pki, broker, server, tmp_path: Path) -> None:
    data = tmp_path / "k"
    base = int(time.time()) // 60 * 60 - 40 * 86400  # well in the past
    epoch = outbox_backlog(data, BACKLOG, base)
    # paced slowly (at most 600 samples a second, 80 unacknowledged) so that 20 short runs cannot finish the backlog:
    # every one of the 20 kills lands while the upload is still going
    cfg = agent_config(pki, broker, "HN00060001", data, link="max_batch = 20\nbacklog_rate = 30.0\nack_timeout_s = 5")
    rng = random.Random(20261122)
    stored = lambda: sqlite_count(server.db, f"select count(*) from samples where sn='HN00060001' and ts < {base + 60 * BACKLOG}")  # noqa: E731
    after_each_kill = []
    for _ in range(20):
        before = stored()
        agent = AgentProc(cfg, tmp_path / "k.log").start()
        # the kill lands at a random moment of the upload, counted from its first stored sample rather than from the
        # start (on a loaded box the agent's start-up alone took longer than a fixed 1.6 s, and 8 of 20 kills came
        # before it had sent anything)
        wait_for(lambda b=before: stored() > b, 60, "the upload to start again after a kill")  # type: ignore[misc]
        time.sleep(rng.uniform(0.0, 1.0))
        agent.kill()
        after_each_kill.append(stored())
    # the last run uploads the rest at full speed (same outbox, same terminal)
    upload_the_rest(pki, broker, "HN00060001", data, tmp_path / "k.log", stored, BACKLOG, base)
    assert after_each_kill[-1] < BACKLOG, "the 20th kill came before the upload was over"
    assert stored() == BACKLOG
    distinct = sqlite_count(server.db, f"select count(distinct ts) from samples where sn='HN00060001' and epoch={epoch} "
                                       f"and ts < {base + 60 * BACKLOG}")
    assert distinct == BACKLOG, "every sample exactly once"
    assert server.get("/healthz").json()["ingest"]["duplicates"] > 0, "kills caused resends, which the server absorbed"


def test_72h_broker_outage_all_delivered_oldest_first(pki, tmp_path: Path) -> None:
    """4,320 samples at 60 s taken while the broker is down (clock 10,800x), all delivered afterwards.

    The wait is for 4,320 samples, not for 72 h of clock: an agent that cannot keep up at this speed takes longer,
    it does not fail the test."""
    speed = 10800.0  # a slot is 5.6 ms real; the agent needs ~2.4 ms of CPU a sample
    anchor = time.time()
    start = "2026-11-02T00:00:00+08:00"
    clock = {"speed": speed, "start": start, "anchor": anchor}
    broker = Broker(pki, tmp_path / "broker")  # not started: the link is down
    cfg = agent_config(pki, broker, "HN00070001", tmp_path / "d", clock=clock,
                       link="max_batch = 200\nbacklog_rate = 20.0\nack_timeout_s = 10")
    agent = AgentProc(cfg, tmp_path / "d.log").start()
    server = None
    try:
        outbox = tmp_path / "d" / "outbox.sqlite"
        wait_for(lambda: outbox.exists() and sqlite_count(outbox, "select count(*) from outbox where kind='s'") >= 4320,
                 150, "72 h of samples in the outbox")
        broker.start()
        server = Server(pki, broker, tmp_path / "server", clock=clock).start()
        wait_for(lambda: sqlite_count(server.db, "select count(*) from samples") >= 4320, 120, "all samples stored")
    finally:
        agent.stop()
        if server:
            server.stop()
        broker.stop()
    import sqlite3

    con = sqlite3.connect(server.db)
    rows = con.execute("select ts, clock, received_at from samples order by received_at, seq").fetchall()
    offline = con.execute("select count(*) from samples where connected = 0").fetchone()[0]
    con.close()
    assert offline >= 4318, "the samples taken while the broker was down say they were not connected"
    ts = [r[0] for r in rows]
    assert len(ts) >= 4320 and len(set(ts)) == len(ts), "every slot once"
    # the server stores the messages it got together in one commit, with one received_at: the newest sample, sent
    # first, is in the first commit (beside the first backlog batch when both came at once)
    lead = max(r[0] for r in rows if r[2] == rows[0][2])
    assert len([t for t in ts if t < lead]) >= 4318, "the newest sample went first, then the backlog"
    backlog = [t for t in ts if t != lead]
    assert backlog == sorted(backlog), "the backlog arrived oldest first"
    # the 72 h of samples were taken before the agent could check its clock (no NTP at this speed, no server yet):
    # each was re-dated from its boot-time reading and marked corrected
    assert sum(1 for _, c, _ in rows if c == 1) >= 4318, "samples taken before the clock was checked are marked corrected"
    assert {c for _, c, _ in rows} <= {0, 1}


def test_the_newest_sample_goes_first_even_when_an_event_was_stored_after_it(pki, broker, server,
                                                                            tmp_path: Path) -> None:
    """Back after an outage, the terminal's newest sample goes first (the server then knows it is back), then the
    backlog oldest first, even when the outbox's newest row is an event (the daily inventory, an identity change,
    stored after the last sample of its slot): that used to send the backlog first."""
    from agent.outbox import Outbox
    from wire.messages import Event

    data = tmp_path / "n"
    n = 600
    base = int(time.time()) // 60 * 60 - 5 * 86400
    outbox_backlog(data, n, base)
    ob = Outbox(data / "outbox.sqlite")
    ob.add(Event(seq=0, ts=base + 60 * (n - 1), kind="inventory", data={"agent": "0.1.0"}), boot_id="old", boottime=0)
    ob.close()
    cfg = agent_config(pki, broker, "HN00070002", data, link="max_batch = 50\nbacklog_rate = 20.0\nack_timeout_s = 5")
    agent = AgentProc(cfg, tmp_path / "n.log").start()
    backlog = f"sn='HN00070002' and ts < {base + 60 * n}"
    try:
        wait_for(lambda: sqlite_count(server.db, f"select count(*) from samples where {backlog}") >= n, 60,
                 "the backlog stored")
    finally:
        agent.stop()
    import sqlite3

    con = sqlite3.connect(server.db)
    rows = con.execute(f"select ts, received_at from samples where {backlog} order by received_at, seq").fetchall()
    con.close()
    # (messages the server got together share one commit and its received_at)
    newest_at = next(at for t, at in rows if t == base + 60 * (n - 1))
    assert newest_at == rows[0][1], "the newest sample first, not after the backlog"
    assert [t for t, _ in rows if t != base + 60 * (n - 1)] == [base + 60 * k for k in range(n - 1)], \
        "then the backlog, oldest first"
