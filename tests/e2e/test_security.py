"""The broker admits only fleet certificates, and a terminal can speak only for itself."""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.enroll import make_key_and_csr
from pki.ca import FleetCA
from tests.conftest import sqlite_count
from tests.fleet import PASS, AgentProc, agent_config, wait_for


def try_connect(port: int, ca: Path, cert: Path | None = None, key: Path | None = None, tls: bool = True) -> bool:
    """True only if the broker accepts the MQTT session (CONNACK success)."""
    ok = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}", protocol=mqtt.MQTTv5)
    if tls:
        ctx = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key))
        c.tls_set_context(ctx)
    c.on_connect = lambda cl, u, f, rc, p: ok.set() if not rc.is_failure else None
    try:
        c.connect("localhost", port, keepalive=10)
    except (OSError, ssl.SSLError):
        return False
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not ok.is_set():
        if c.loop(timeout=0.1) != 0:
            break
    c.disconnect()
    return ok.is_set()


def test_fleet_certificate_is_accepted(pki, broker) -> None:
    t = pki.terminal("HN00030001")
    assert try_connect(broker.port, pki.dir / "ca.pem", t / "terminal.pem", t / "terminal.key")


def test_no_certificate_is_refused(pki, broker) -> None:
    assert not try_connect(broker.port, pki.dir / "ca.pem")


def test_certificate_from_another_ca_is_refused(pki, broker, tmp_path: Path) -> None:
    other = FleetCA.init(tmp_path / "other-ca", PASS)
    _key, csr = make_key_and_csr("HN00030002", tmp_path / "rogue")
    (tmp_path / "rogue" / "terminal.pem").write_bytes(other.sign_csr(csr.read_bytes()))
    assert not try_connect(broker.port, pki.dir / "ca.pem", tmp_path / "rogue" / "terminal.pem",
                           tmp_path / "rogue" / "terminal.key")


def test_revoked_certificate_is_refused(pki, broker) -> None:
    t = pki.terminal("HN00030003")
    assert try_connect(broker.port, pki.dir / "ca.pem", t / "terminal.pem", t / "terminal.key")
    pki.ca.revoke(cn="HN00030003")
    broker.restart()  # mosquitto reads the CRL at start
    assert not try_connect(broker.port, pki.dir / "ca.pem", t / "terminal.pem", t / "terminal.key")
    other = pki.terminal("HN00030004")
    assert try_connect(broker.port, pki.dir / "ca.pem", other / "terminal.pem", other / "terminal.key")


def test_plain_tcp_is_refused(pki, broker) -> None:
    assert not try_connect(broker.port, pki.dir / "ca.pem", tls=False)


def test_unit_cannot_publish_as_another(pki, broker, server, tmp_path: Path) -> None:
    """A's certificate configured with B's SN: the ACL drops every publish, nothing is stored,
    and A's outbox keeps its samples because no server acknowledgement ever comes."""
    cfg = agent_config(pki, broker, "HN00040002", tmp_path / "spoof", cert_sn="HN00040001", sampling_interval=5,
                       link="batch_interval_s = 0")
    agent = AgentProc(cfg, tmp_path / "spoof.log").start()
    try:
        outbox = tmp_path / "spoof" / "outbox.sqlite"
        wait_for(lambda: outbox.exists() and sqlite_count(outbox, "select count(*) from outbox where kind='s'") >= 2,
                 30, "two samples in the spoofing agent's outbox")
        time.sleep(3)  # time enough for a batch to be published, denied, and not acknowledged
        assert server.get("/api/v1/units/HN00040002").status_code == 404
        assert server.get("/api/v1/units/HN00040001").status_code == 404
        assert sqlite_count(server.db, "select count(*) from samples") == 0
        assert sqlite_count(outbox, "select count(*) from outbox where kind='s'") >= 2
        assert "connected to" in (tmp_path / "spoof.log").read_text()  # it did reach the broker
    finally:
        agent.stop()
