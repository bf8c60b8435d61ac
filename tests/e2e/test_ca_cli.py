"""`posfleet ca ...` and `posfleet agent enroll` as an operator types them, and Mosquitto run with the config they
write: TLS only, client certificate required, identity = CN, per-SN ACL, CRL."""

from __future__ import annotations

import getpass
import os
import shutil
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulator.local import free_port, port_open, wait_for
from tests.e2e.test_security import try_connect

PASSPHRASE = "correct horse battery"


def posfleet(*args: str, passphrase: str | None = PASSPHRASE) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "POSFLEET_CA_PASSPHRASE"}
    if passphrase is not None:
        env["POSFLEET_CA_PASSPHRASE"] = passphrase
    return subprocess.run([sys.executable, "-m", "posfleet", *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=60)


def ok(*args: str) -> str:
    out = posfleet(*args)
    assert out.returncode == 0, f"posfleet {' '.join(args)}: {out.stderr}"
    return out.stdout


class Mosquitto:
    def __init__(self, conf: Path, port: int, log: Path) -> None:
        self.conf, self.port, self.log = conf, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: port_open(self.port) or self.proc.poll() is not None, 10, "mosquitto to listen")
        assert self.proc.poll() is None, self.log.read_text()[-2000:]
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Listener:
    """A connected client that records what it receives."""

    def __init__(self, port: int, ca: Path, cert: Path, key: Path, name: str) -> None:
        self.got: list[str] = []
        self.ready = threading.Event()
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(cert), str(key))
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{time.monotonic_ns()}",
                             protocol=mqtt.MQTTv5)
        self.c.tls_set_context(ctx)
        self.c.on_connect = lambda cl, u, f, rc, p: self.ready.set() if not rc.is_failure else None
        self.c.on_message = lambda cl, u, m: self.got.append(m.topic)
        self.c.connect("localhost", port, keepalive=10)
        self.c.loop_start()
        assert self.ready.wait(10), f"{name} did not connect"

    def subscribe(self, *topics: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe([(t, 1) for t in topics])
        assert done.wait(10)

    def publish(self, topic: str) -> None:
        self.c.publish(topic, b"x", qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_ca_cli_enroll_and_the_broker_config_it_writes(tmp_path: Path) -> None:
    ca = tmp_path / "CA"
    assert "fleet CA created" in ok("ca", "init", "--dir", str(ca))
    key_pem = (ca / "ca.key").read_text()
    assert key_pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----"), "the CA key is encrypted at rest"
    wrong = posfleet("ca", "issue-server", "--dir", str(ca), passphrase="not the passphrase")
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr
    no_pass = posfleet("ca", "issue-server", "--dir", str(ca), passphrase=None)
    assert no_pass.returncode == 2 and "POSFLEET_CA_PASSPHRASE" in no_pass.stderr
    ok("ca", "issue-broker", "--dir", str(ca), "--name", "localhost", "--name", "127.0.0.1")
    ok("ca", "issue-server", "--dir", str(ca))

    # enrolment on two terminals: the key is made there, private to its owner; only the CSR travels
    terminals = {}
    for sn in ("HN00500001", "HN00500002"):
        t = tmp_path / sn
        out = ok("agent", "enroll", "--sn", sn, "--out", str(t))
        assert "stays here" in out
        assert stat.S_IMODE((t / "terminal.key").stat().st_mode) == 0o600
        assert "PRIVATE KEY" not in (t / "terminal.csr").read_text()
        ok("ca", "sign", "--dir", str(ca), "--csr", str(t / "terminal.csr"), "--out", str(t / "terminal.pem"))
        terminals[sn] = t
    bad = posfleet("agent", "enroll", "--sn", "HN/0001", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "sn" in bad.stderr

    port = free_port()
    conf = Path(ok("ca", "broker-config", "--dir", str(ca), "--port", str(port), "--bind", "127.0.0.1",
                   "--data-dir", str(tmp_path / "mq"), "--user", getpass.getuser()).strip())
    (tmp_path / "mq").mkdir()
    text = conf.read_text()
    assert [ln for ln in text.splitlines() if ln.startswith("listener ")] == [f"listener {port} 127.0.0.1"], \
        "one listener, and it is TLS"
    for line in ("require_certificate true", "use_identity_as_username true", "use_username_as_clientid true",
                 "allow_anonymous false",
                 f"crlfile {ca.resolve()}/crl.pem", "set_tcp_nodelay true", "max_queued_messages 1000000"):
        assert line in text, line
    broker = Mosquitto(conf, port, tmp_path / "mosquitto.log").start()
    a, b = terminals["HN00500001"], terminals["HN00500002"]
    cafile = ca / "ca.pem"
    listeners: list[Listener] = []
    try:
        assert try_connect(port, cafile, a / "terminal.pem", a / "terminal.key")
        assert not try_connect(port, cafile), "no client certificate"
        assert not try_connect(port, cafile, tls=False), "plain TCP"

        # a terminal reads only its own command topic; the server (its own certificate) writes any
        la = Listener(port, cafile, a / "terminal.pem", a / "terminal.key", "a")
        lb = Listener(port, cafile, b / "terminal.pem", b / "terminal.key", "b")
        srv = Listener(port, cafile, ca / "server-client.pem", ca / "server-client.key", "server")
        listeners += [la, lb, srv]
        la.subscribe("pf/HN00500001/c", "pf/HN00500002/c", "pf/+/c", "pf/HN00500002/a")
        lb.subscribe("pf/HN00500002/c")
        srv.publish("pf/HN00500002/c")
        srv.publish("pf/HN00500002/a")
        srv.publish("pf/HN00500001/c")
        la.publish("pf/HN00500002/c")  # a terminal cannot send commands to another
        wait_for(lambda: "pf/HN00500001/c" in la.got and lb.got, 10, "each terminal's own command")
        time.sleep(0.5)
        # (its own command arrives once per matching subscription: pf/HN00500001/c and pf/+/c)
        assert set(la.got) == {"pf/HN00500001/c"}, "A read B's command or acknowledgement"
        assert lb.got == ["pf/HN00500002/c"], "B received the server's command, not A's forgery"
        for x in listeners:
            x.close()
        listeners.clear()

        out = ok("ca", "revoke", "--dir", str(ca), "--cn", "HN00500001")
        assert "revoked HN00500001" in out
        broker.stop()
        broker.start()  # mosquitto reads the CRL at start
        assert not try_connect(port, cafile, a / "terminal.pem", a / "terminal.key"), "revoked"
        assert try_connect(port, cafile, b / "terminal.pem", b / "terminal.key"), "the other terminal still gets in"
    finally:
        for x in listeners:
            x.close()
        broker.stop()
