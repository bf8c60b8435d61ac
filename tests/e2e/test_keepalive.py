"""Batches keep the MQTT session alive: no keep-alive ping while telemetry flows (bytes on the SIM)."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks._harness import CountingProxy
from tests.fleet import AgentProc, agent_config, wait_for


def test_no_pings_while_batches_flow(pki, broker, server, tmp_path: Path) -> None:
    proxy = CountingProxy(broker.port).start()
    sn = "HN00120001"
    cfg = agent_config(pki, broker, sn, tmp_path / "a", sampling_interval=5,
                       link="keepalive_s = 10\nbatch_interval_s = 5")
    cfg.write_text(cfg.read_text().replace(f"port = {broker.port}", f"port = {proxy.port}"))
    agent = AgentProc(cfg, tmp_path / "a.log").start()
    try:
        wait_for(lambda: server.get(f"/api/v1/units/{sn}").status_code == 200, 30, "the unit connected")
        time.sleep(15)  # 1.5 keep-alive intervals (paho 2.2 unpatched pings every 10 s) with a batch every ~5 s
        conns = proxy.snapshot()
        t_stop = time.time()  # what the agent sends when it stops (offline state, DISCONNECT) is not counted
    finally:
        agent.stop()
        proxy.stop()
    # A PINGREQ is a 2-byte MQTT packet: one 24-byte TLS 1.3 application record from the terminal.
    sent = [(n, t) for c in conns for (ctype, n), t in zip(c.up.records, c.up.times, strict=True)
            if ctype == 23 and t < t_stop]
    small = [n for n, _ in sent if n == 24]
    batches = [n for n, _ in sent if n > 60]
    assert len(batches) >= 2, "telemetry was flowing"
    assert small == [], f"{len(small)} keep-alive pings sent although batches kept the session busy: {sent}"
