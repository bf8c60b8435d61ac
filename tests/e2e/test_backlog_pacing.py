"""Backlog upload after an outage is paced at ``link.backlog_rate`` batches a second, so it never takes the
terminal's link from its business traffic; the server confirms each batch with one small acknowledgement."""

from __future__ import annotations

import sqlite3
import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import sqlite_count
from tests.fleet import AgentProc, agent_config, outbox_backlog, wait_for
from tests.identities import observer

BACKLOG = 1_000


def test_backlog_is_sent_at_the_configured_rate(pki, broker, server, tmp_path: Path) -> None:
    data = tmp_path / "p"
    base = int(time.time()) // 60 * 60 - 10 * 86400
    outbox_backlog(data, BACKLOG, base)
    # 20 batches of 50 at 4 a second: at least 4.75 s; unpaced, loopback round trips take about a second
    cfg = agent_config(pki, broker, "HN00140001", data, link="max_batch = 50\nbacklog_rate = 4.0")
    # the terminal's acknowledgement topic, watched by a test observer (the unit's own certificate would be the
    # unit's client id, and log the agent out)
    acks: list[int] = []
    subscribed = threading.Event()
    ctx = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))
    ctx.load_cert_chain(*map(str, observer(pki, broker)))
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="HN00140001-watch", protocol=mqtt.MQTTv5)
    watcher.tls_set_context(ctx)
    watcher.on_connect = lambda cl, u, f, rc, p: cl.subscribe("pf/HN00140001/a", qos=1)
    watcher.on_subscribe = lambda *a: subscribed.set()
    watcher.on_message = lambda cl, u, m: acks.append(len(m.payload))
    watcher.connect("localhost", broker.port, keepalive=30)
    watcher.loop_start()
    assert subscribed.wait(10)
    agent = AgentProc(cfg, tmp_path / "p.log").start()
    backlog = f"sn='HN00140001' and ts < {base + 60 * BACKLOG}"
    try:
        wait_for(lambda: sqlite_count(server.db, f"select count(*) from samples where {backlog}") >= BACKLOG, 60,
                 "the whole backlog stored")
        time.sleep(1)  # the last acknowledgement on its way
    finally:
        agent.stop()
        watcher.disconnect()
        watcher.loop_stop()
    batches = server.get("/healthz").json()["ingest"]["messages"]
    assert 20 <= batches <= 30, batches
    assert 1 <= len(acks) <= batches, f"{len(acks)} acknowledgements for {batches} batches"
    assert max(acks) <= 64, f"acknowledgements of {acks} bytes"
    con = sqlite3.connect(server.db)
    first, last = con.execute(f"select min(received_at), max(received_at) from samples where {backlog}").fetchone()
    per_second = con.execute(f"select cast(received_at as int) s, count(*) from samples where {backlog} group by s").fetchall()
    con.close()
    assert last - first >= 4.5, f"backlog of {BACKLOG} in {last - first:.1f} s: not paced at 4 batches a second"
    # at most 4 batches (200 samples) in any second, give or take one batch at a second's edge
    assert max(n for _, n in per_second) <= 250, per_second
