"""Terminal certificate renewal over the air, end to end: a real agent process whose certificate has 30 days left,
the real broker (TLS, ACL, CRL), the real server process, ``posfleet ca sign-renewals`` on the CA's folder; the
agent SIGKILLed after it sent its request (the other cuts: tests/agent/test_renewal.py)."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.enroll import make_key_and_csr
from agent.renew import certificate_dates
from tests.conftest import sqlite_count
from tests.fleet import PASS, AgentProc, agent_config, wait_for

FAST = "batch_interval_s = 0\nbacklog_rate = 20.0"
SN = "HN00710001"


def _state(d: Path) -> str:
    try:
        return str(json.loads((d / "renew" / "state.json").read_text()).get("step", ""))
    except (OSError, ValueError):
        return ""


def _record(server, sn: str) -> dict:  # noqa: ANN001
    import sqlite3

    con = sqlite3.connect(server.db, timeout=10)
    try:
        row = con.execute("SELECT value FROM meta WHERE key = ?", (f"renewal:{sn}",)).fetchone()
    finally:
        con.close()
    return json.loads(row[0]) if row else {}


def _sign_renewals(pki, server, broker) -> str:  # noqa: ANN001
    r = subprocess.run([sys.executable, "-m", "posfleet", "ca", "sign-renewals", "--dir", str(pki.dir),
                        "--config", str(server.config), "--reload", f"kill -HUP {broker.proc.pid}"],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, POSFLEET_CA_PASSPHRASE=PASS))
    assert r.returncode == 0, r.stderr
    return r.stdout


def _connects(port: int, ca: Path, cert: Path, key: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=SN, protocol=mqtt.MQTTv5)
    c.tls_set_context(ctx)
    try:
        c.connect("localhost", port, keepalive=10)
        rc = c.loop(timeout=2.0)
        return rc == mqtt.MQTT_ERR_SUCCESS and c.is_connected()
    except (OSError, ssl.SSLError):
        return False
    finally:
        c.disconnect()


def test_a_terminal_renews_its_certificate_over_the_air(pki, broker, server, tmp_path: Path) -> None:
    d = pki.dir / "terminals" / SN
    _key, csr = make_key_and_csr(SN, d)
    (d / "terminal.pem").write_bytes(pki.ca.sign_csr(csr.read_bytes(), 30))  # 30 days left
    shutil.copy(pki.dir / "ca.pem", d / "ca.pem")
    pki._terminals[SN] = d
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(d / "terminal.pem", old / "terminal.pem")
    shutil.copy(d / "terminal.key", old / "terminal.key")
    old_after, old_serial = certificate_dates(d / "terminal.pem")
    cfg = agent_config(pki, broker, SN, tmp_path / "a", sampling_interval=5, link=FAST,
                       extra="[renewal]\ndays_before = 60\nswitch_timeout_s = 60\n")
    log = tmp_path / "agent.log"
    agent = AgentProc(cfg, log).start()
    try:
        wait_for(lambda: _state(d) == "sent", 30, "the agent to make its key and send its request")
        agent.kill()  # SIGKILL after the request was stored (and perhaps sent)
        assert (d / "terminal.key").read_bytes() == (old / "terminal.key").read_bytes()
        agent = AgentProc(cfg, log).start()
        wait_for(lambda: _record(server, SN).get("state") == "requested", 40, "the server to record the request")
        # nothing is signed by the server: the request waits for the CA
        assert _state(d) == "sent"

        out = _sign_renewals(pki, server, broker)
        assert "1 signed, 0 refused, 0 revoked" in out, out
        wait_for(lambda: _record(server, SN).get("state") == "switched", 60,
                 "the agent to take the certificate, connect with it and say so")
        wait_for(lambda: not (d / "renew").exists(), 30, "the server's acknowledgement of the switch")
        new_after, new_serial = certificate_dates(d / "terminal.pem")
        assert new_serial != old_serial and new_serial == _record(server, SN)["serial"]
        assert new_after - old_after > 790 * 86400

        # the CA revokes the old certificate; the broker, reloaded, refuses it; the unit goes on with the new one
        out = _sign_renewals(pki, server, broker)
        assert f"revoked {SN}: {old_serial}" in out and "0 signed, 0 refused, 1 revoked" in out, out
        assert _record(server, SN)["state"] == "done"
        wait_for(lambda: not _connects(broker.port, d / "ca.pem", old / "terminal.pem", old / "terminal.key"), 10,
                 "the broker to refuse the old certificate")
        before = sqlite_count(server.db, f"SELECT count(*) FROM samples WHERE sn = '{SN}'")
        wait_for(lambda: sqlite_count(server.db, f"SELECT count(*) FROM samples WHERE sn = '{SN}'") >= before + 2,
                 40, "samples over the renewed certificate")
        assert agent.alive()
    finally:
        agent.stop()
    text = log.read_text()
    assert "Traceback" not in text
    assert "certificate renewal: now using certificate" in text


def test_a_request_for_another_units_name_is_refused(pki, broker, server, tmp_path: Path) -> None:
    """A unit asking for a certificate in another SN's name gets nothing: its topic is its own SN (the ACL) and the
    request's CN must be that SN."""
    import time

    from wire import codec
    from wire.messages import Batch, Event

    sn, victim = "HN00710002", "HN00710003"
    t = pki.terminal(sn)
    _k, csr = make_key_and_csr(victim, tmp_path / "forged")
    ctx = ssl.create_default_context(cafile=str(t / "ca.pem"))
    ctx.load_cert_chain(str(t / "terminal.pem"), str(t / "terminal.key"))
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=sn, protocol=mqtt.MQTTv5)
    c.tls_set_context(ctx)
    c.connect("localhost", broker.port, keepalive=10)
    c.loop_start()
    try:
        ev = Event(seq=0, ts=int(time.time()), kind="cert_request", data={"csr": csr.read_text()})
        c.publish(f"pf/{sn}/t", codec.encode(Batch(sn=sn, epoch=1, events=[ev])), qos=1).wait_for_publish(5)
        wait_for(lambda: sqlite_count(server.db, f"SELECT count(*) FROM events WHERE sn = '{sn}'") == 1, 20,
                 "the event stored")
        time.sleep(6)  # a pass of the renewals task
        assert _record(server, sn) == {} and _record(server, victim) == {}
        assert "renewal request from HN00710002 refused: the request's CN must be" in server.log.read_text()
    finally:
        c.loop_stop()
        c.disconnect()


def test_a_renewed_certificate_the_broker_refuses_is_dropped_for_the_old_then_taken_after_a_kill(
        pki, broker, server, tmp_path: Path) -> None:  # noqa: ANN001
    """The new certificate is refused by the broker (revoked in the CRL before the unit gets it): the agent's switch
    does not connect, so it puts the old pair back and goes on with it; SIGKILLed while it holds the received
    certificate, restarted once the broker accepts it again, it switches."""
    import signal

    sn = "HN00710004"
    d = pki.dir / "terminals" / sn
    _key, csr = make_key_and_csr(sn, d)
    (d / "terminal.pem").write_bytes(pki.ca.sign_csr(csr.read_bytes(), 30))
    shutil.copy(pki.dir / "ca.pem", d / "ca.pem")
    pki._terminals[sn] = d
    old_pem = (d / "terminal.pem").read_bytes()
    old_serial = certificate_dates(d / "terminal.pem")[1]
    cfg = agent_config(pki, broker, sn, tmp_path / "a", sampling_interval=5, link=FAST,
                       extra="[renewal]\ndays_before = 60\nswitch_timeout_s = 10\nresend_h = 0.004\n")
    log = tmp_path / "agent.log"
    agent = AgentProc(cfg, log).start()
    try:
        wait_for(lambda: _record(server, sn).get("state") == "requested", 40, "the request recorded")
        server.stop()  # nothing is sent while the CA signs and the new certificate is revoked
        out = _sign_renewals(pki, server, broker)
        assert "1 signed" in out, out
        new_serial = int(_record(server, sn)["serial"], 16)
        pki.ca.revoke(serial=new_serial)
        os.kill(broker.proc.pid, signal.SIGHUP)
        server.start()
        wait_for(lambda: "no connection with the renewed certificate: the old one is back" in log.read_text(), 90,
                 "the switch to give up and put the old pair back")
        wait_for(lambda: _state(d) == "received" and agent.alive(), 10, "the certificate kept for a later try")
        assert (d / "terminal.pem").read_bytes() == old_pem, "the files were not touched"
        before = sqlite_count(server.db, f"SELECT count(*) FROM samples WHERE sn = '{sn}'")
        wait_for(lambda: sqlite_count(server.db, f"SELECT count(*) FROM samples WHERE sn = '{sn}'") > before, 40,
                 "samples over the old certificate again")
        agent.kill()  # SIGKILL holding the received certificate, before its next switch

        rows = json.loads((pki.dir / "index.json").read_text())  # the CA takes the revocation back (test only)
        for r in rows:
            if r["serial"] == new_serial:
                r["revoked"] = ""
        (pki.dir / "index.json").write_text(json.dumps(rows))
        pki.ca.write_crl()
        os.kill(broker.proc.pid, signal.SIGHUP)
        agent = AgentProc(cfg, log).start()
        wait_for(lambda: _record(server, sn).get("state") == "switched", 90, "the restarted agent to switch")
        wait_for(lambda: not (d / "renew").exists(), 30, "the switch acknowledged")
        assert certificate_dates(d / "terminal.pem")[1] == format(new_serial, "x") != old_serial
    finally:
        agent.stop()
    assert "Traceback" not in log.read_text()
