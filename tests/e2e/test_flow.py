"""Samples flow agent -> broker -> server -> API, with real processes on loopback."""

from __future__ import annotations

from pathlib import Path

import psutil

from tests.conftest import epoch, sqlite_count
from tests.fleet import AgentProc, agent_config, wait_for
from tests.identities import observer
from wire import codec
from wire.messages import State

FAST = "batch_interval_s = 0\nbacklog_rate = 20.0"


def retained_state(pki, broker, sn: str) -> tuple[bool, State]:
    """What a client that subscribes now (an identity of its own beside the server's) gets on the unit's state topic."""
    import queue
    import ssl
    import time

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: queue.Queue = queue.Queue()
    ctx = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))
    ctx.load_cert_chain(*map(str, observer(pki, broker)))
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"late-{time.monotonic_ns()}", protocol=mqtt.MQTTv5)
    c.tls_set_context(ctx)
    c.on_connect = lambda cl, u, f, rc, props: cl.subscribe(f"pf/{sn}/s", qos=1)
    c.on_message = lambda cl, u, m: got.put((m.retain, codec.decode(m.payload, State)))
    c.connect("localhost", broker.port, keepalive=10)
    c.loop_start()
    try:
        return got.get(timeout=10)
    finally:
        c.disconnect()
        c.loop_stop()


def test_samples_reach_the_api(pki, broker, server, tmp_path: Path) -> None:
    # named terminal components: one version read from a file, one from a command's output through a pattern
    (tmp_path / "app-version").write_text("3.2.1\n")
    components = (f'[components.terminal_app]\nfile = "{tmp_path / "app-version"}"\n'
                  "[components.os_image]\ncommand = [\"sh\", \"-c\", \"echo image build 2026.10-r4\"]\n"
                  "pattern = 'build (\\S+)'\n"
                  '[components.evoucher_sdk]\nfile = "/nonexistent/sdk-version"\n')
    cfg = agent_config(pki, broker, "HN00010001", tmp_path / "a1", sampling_interval=5, link=FAST, extra=components)
    agent = AgentProc(cfg, tmp_path / "a1.log").start()
    try:
        def has_samples():
            r = server.get("/api/v1/units/HN00010001/samples", limit=10)
            return r.status_code == 200 and len(r.json()["items"]) >= 2 and r.json()

        data = wait_for(has_samples, 40, "two samples in the API")
        newest = data["items"][0]
        assert epoch(newest["ts"]) % 5 == 0, "samples are aligned to the sampling interval"
        assert newest["checks"]["storage"][0] == 0, "storage check ok on a healthy disk"
        assert newest["mem_avail_mb"] > 0 and newest["mem_used_mb"] > 0 and newest["cpu"] is not None
        assert newest["load1"] is not None and newest["swap_used_mb"] is not None
        data_fs = newest["fs"][0]
        assert data_fs["size_mb"] > 0 and data_fs["used_mb"] >= 0 and data_fs["writable"] is True
        assert newest["uptime_s"] > 0
        assert abs(epoch(newest["boot_time"]) - psutil.boot_time()) <= 5, "boot time = sample time - uptime"
        # network quality without extra bytes: PUBLISH -> PUBACK round trips of the batches, TCP_INFO of the socket
        assert newest["connected"] is True
        assert newest["segs_out"] > 0 and newest["rtt_var_ms"] is not None and newest["retrans"] is not None
        timed = wait_for(lambda: [x for x in server.get("/api/v1/units/HN00010001/samples", limit=10).json()["items"]
                                  if x["rtt_ms"] is not None], 20, "a sample with a round trip")
        assert 0 <= timed[0]["rtt_ms"] < 5000
        unit = server.get("/api/v1/units/HN00010001").json()
        assert unit["online"] is True and unit["broker_session"] is True
        retained, state = retained_state(pki, broker, "HN00010001")
        assert retained and state.online is True and state.version == "0.1.0", "retained online state"
        assert epoch(unit["first_seen"]) <= epoch(unit["last_seen"])
        assert epoch(unit["latest"]["ts"]) >= epoch(newest["ts"])
        assert abs(epoch(unit["latest"]["boot_time"]) - epoch(newest["boot_time"])) <= 2
        assert unit["inventory"]["agent"] == "0.1.0"
        assert unit["inventory"]["components"] == {
            "terminal_app": "3.2.1", "os_image": "2026.10-r4", "evoucher_sdk": None}, "unreadable is None, not an error"
        listing = server.get("/api/v1/units", q="HN0001").json()
        assert listing["total"] == 1 and listing["items"][0]["sn"] == "HN00010001"
        # acknowledged samples leave the outbox
        wait_for(lambda: sqlite_count(tmp_path / "a1" / "outbox.sqlite", "select count(*) from outbox") <= 1,
                 20, "outbox drained by server acknowledgements")
    finally:
        agent.stop()
    # a clean stop leaves a retained offline state
    wait_for(lambda: server.get("/api/v1/units/HN00010001").json()["broker_session"] is False, 10, "offline state")
    retained, state = retained_state(pki, broker, "HN00010001")
    assert retained and state.online is False and state.reason == "shutdown"


def test_api_requires_a_token_and_role(server) -> None:
    import httpx

    r = httpx.get(f"http://127.0.0.1:{server.http_port}/api/v1/units")
    assert r.status_code == 401
    r = httpx.get(f"http://127.0.0.1:{server.http_port}/api/v1/units", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert server.get("/api/v1/units", role="viewer").status_code == 200
    bad = server.get("/api/v1/units", limit=0)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "limit"
