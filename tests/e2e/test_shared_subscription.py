"""The server subscribes through a shared subscription: a second server process takes part of the load, and
between them every sample is stored once and acknowledged. Each process has its own identity (the broker takes
the certificate's CN as the client id) and both are told the same secret group (decision 011)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from agent.outbox import Outbox
from tests.conftest import sqlite_count
from tests.fleet import AgentProc, Server, agent_config, wait_for
from tests.identities import server_identity
from wire.messages import Check, Sample

BACKLOG = 400


def test_two_servers_share_the_telemetry(pki, broker, tmp_path: Path) -> None:
    cert, key = server_identity(pki, broker, "2")
    group = f'share_group = "{secrets.token_hex(16)}"\n'
    server = Server(pki, broker, tmp_path / "server")
    server.config.write_text(server.config.read_text().replace("[storage]", group + "[storage]"))
    second = Server(pki, broker, tmp_path / "server2")
    second.config.write_text(second.config.read_text().replace("[storage]", group + "[storage]")
                             .replace(str(pki.dir / "server-client.pem"), str(cert))
                             .replace(str(pki.dir / "server-client.key"), str(key)))
    server.start()
    second.start()
    try:
        wait_for(lambda: second.get("/healthz").json()["ingest"]["connected"], 20, "the second server subscribed")
        data = tmp_path / "a"
        data.mkdir()
        ob = Outbox(data / "outbox.sqlite")
        base = int(time.time()) // 60 * 60 - 5 * 86400
        for i in range(BACKLOG):
            ob.add(Sample(seq=0, ts=base + 60 * i, checks={"storage": Check(0)}), boot_id="old", boottime=0)
        ob.close()
        cfg = agent_config(pki, broker, "HN00150001", data, link="max_batch = 10\nbacklog_rate = 20.0")
        agent = AgentProc(cfg, tmp_path / "a.log").start()
        backlog = f"select count(*) from samples where ts < {base + 60 * BACKLOG}"
        try:
            wait_for(lambda: sqlite_count(server.db, backlog) + sqlite_count(second.db, backlog) >= BACKLOG, 60,
                     "the backlog stored between the two servers")
            wait_for(lambda: sqlite_count(data / "outbox.sqlite", f"select count(*) from outbox where ts < {base + 60 * BACKLOG}") == 0,
                     20, "every sample acknowledged by the server that stored it")
        finally:
            agent.stop()
        one, two = sqlite_count(server.db, backlog), sqlite_count(second.db, backlog)
        assert one + two == BACKLOG, (one, two)
        assert one >= BACKLOG // 5 and two >= BACKLOG // 5, f"the load was not shared: {one} and {two}"
    finally:
        second.stop()
        server.stop()
