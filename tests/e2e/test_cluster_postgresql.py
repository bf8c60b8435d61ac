"""Two server processes on one PostgreSQL and one broker (issue 15): they share the telemetry (MQTT v5 shared
subscription, short sessions), one leads the background work. One is SIGKILLed mid-ingest and comes back, then
the leader is SIGKILLed: every sample is stored exactly once, the other process takes the leadership over, and
the availability answer equals what one process recounting the same samples from scratch gives."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.backend import db_count
from tests.conftest import sqlite_count
from tests.fleet import AgentProc, Server, agent_config, outbox_backlog, stop_process, wait_for
from tests.identities import server_identity

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BACKLOG = 3_000
SN = "HN00160001"


def _cluster_server(pki, broker, workdir: Path, url: str, group: str, identity: tuple[Path, Path] | None) -> Server:
    s = Server(pki, broker, workdir, storage=url)
    text = s.config.read_text().replace("[storage]", f'share_group = "{group}"\nsession_expiry_s = 5\n[storage]')
    if identity:
        text = (text.replace(str(pki.dir / "server-client.pem"), str(identity[0]))
                .replace(str(pki.dir / "server-client.key"), str(identity[1])))
    s.config.write_text(text)
    return s


def _kill(s: Server) -> None:
    stop_process(s.proc, signal.SIGKILL)
    s.proc = None


def _leads(s: Server) -> int:
    return s.log.read_text().count(" leads: ")


def test_two_processes_kills_and_takeover(pki, broker, pg_url: str, tmp_path: Path) -> None:
    group = secrets.token_hex(16)
    a = _cluster_server(pki, broker, tmp_path / "a", pg_url, group, None).start()
    wait_for(lambda: _leads(a) == 1, 20, "the first process leads")
    b = _cluster_server(pki, broker, tmp_path / "b", pg_url, group, server_identity(pki, broker, "2")).start()
    servers = [a, b]
    data = tmp_path / "t"
    base = int(time.time()) // 3600 * 3600 - 3 * 86400  # three days back: late data for every hour
    epoch = outbox_backlog(data, BACKLOG, base)
    # the backlog's samples only: the agent also samples live while it uploads, and those are stored too
    stored = lambda: db_count(pg_url, f"select count(*) from samples where sn='{SN}' "  # noqa: E731
                                      f"and ts < {base + 60 * BACKLOG}")
    try:
        wait_for(lambda: all(s.get("/healthz").json()["ingest"]["connected"] for s in servers), 20, "both subscribed")
        cfg = agent_config(pki, broker, SN, data, link="max_batch = 20\nbacklog_rate = 8.0\nack_timeout_s = 4")
        agent = AgentProc(cfg, tmp_path / "t.log").start()
        try:
            wait_for(lambda: stored() >= 300, 60, "ingest under way")
            _kill(b)  # the follower dies mid-ingest: its share goes to the leader once its session expires
            at_kill = stored()
            wait_for(lambda: stored() >= at_kill + 600, 60, "the leader took the whole stream")
            b.start()  # back, as a follower
            wait_for(lambda: b.get("/healthz").json()["ingest"]["connected"], 20, "the follower is back")
            time.sleep(2)
            _kill(a)  # now the leader dies mid-ingest
            wait_for(lambda: _leads(b) == 1, 30, "the other process took the leadership over")
            wait_for(lambda: stored() >= BACKLOG, 120, "the whole backlog stored")
            wait_for(lambda: sqlite_count(data / "outbox.sqlite", f"select count(*) from outbox where kind='s' "
                                          f"and ts < {base + 60 * BACKLOG}") == 0, 60, "every sample acknowledged")
        finally:
            agent.stop()
        assert at_kill < BACKLOG and stored() == BACKLOG
        assert db_count(pg_url, f"select count(distinct seq) from samples where sn='{SN}' and epoch={epoch} "
                                f"and ts < {base + 60 * BACKLOG}") == BACKLOG, "every backlog sample exactly once"
        assert _leads(a) == 1 and _leads(b) == 1, "one leader at a time, each once"
        period = {"from": time.strftime("%Y-%m-%dT%H:00:00+00:00", time.gmtime(base)),
                  "to": time.strftime("%Y-%m-%dT%H:00:00+00:00", time.gmtime(base + 60 * BACKLOG + 3600)),
                  "group_by": "unit"}
        wait_for(lambda: db_count(pg_url, "select count(*) from recount_queue") == 0, 60,
                 "the leader recounted every span committed, the dead processes' included")
        wait_for(lambda: b.get("/api/v1/availability", **period).json()["complete"], 60, "the late hours recounted")
        cluster = b.get("/api/v1/availability", **period).json()["items"]
    finally:
        for s in servers:
            s.stop()
    for s in servers:
        assert "Traceback" not in s.log.read_text(), s.log.read_text()[-3000:]

    # one process, the same raw samples, every hour recounted from scratch
    one = tmp_path / "one" / "fleet.sqlite"
    one.parent.mkdir()
    r = subprocess.run([sys.executable, "-c", "from posfleet.cli import main; main()", "server", "db", "copy",
                        "--from", pg_url, "--to", f"sqlite:///{one}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    single = Server(pki, broker, tmp_path / "one").start()
    try:
        rc = single.request("POST", "/api/v1/availability/recount", json={"from": period["from"], "to": period["to"]})
        assert rc.status_code == 200, rc.text
        alone = single.get("/api/v1/availability", **period).json()["items"]
    finally:
        single.stop()
    assert [u for u in cluster if u["sn"] == SN] and cluster == alone
