"""The fleet server fails fast and says why (issue 13, item 3).

Real processes: ``posfleet server run`` / ``server check-config`` as subprocesses on bad configurations must exit 2
within a few seconds, before anything starts, with the dotted setting and the path on stderr and no traceback.
What is optional says so and carries on: without a command-signing key the server starts with a warning and command
requests answer 503 naming ``commands.key_file``. A broker out of reach is logged at once and periodically with
host:port and the error, and ``/readyz`` answers 503 (``/healthz``, the liveness path, 200) until it is reached.
The database is made 0600 (its -wal and -shm follow).

Files unreadable "by the running user": as root every file is readable, so the child runs without the
DAC_OVERRIDE and DAC_READ_SEARCH capabilities (``setpriv``), as an ordinary user would.
"""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simulator.local import ENV
from tests.failfast import FAST, ROOT, assert_refused, posfleet, self_signed
from tests.fleet import Broker, Pki, free_port, stop_process, wait_for


class Setup:
    """A server configuration in its own folder with copies of good files, to be broken one way per test."""

    def __init__(self, pki: Pki, root: Path, broker_port: int | None = None) -> None:
        self.root = root
        self.files = root / "files"
        self.files.mkdir(parents=True)
        for name in ("ca.pem", "server-client.pem", "server-client.key"):
            shutil.copy(pki.dir / name, self.files / name)
        self.mqtt = {"host": "127.0.0.1", "port": broker_port or free_port(), "ca_file": str(self.files / "ca.pem"),
                     "cert_file": str(self.files / "server-client.pem"),
                     "key_file": str(self.files / "server-client.key"), "report_every_s": 1.0}
        self.http_port = free_port()
        self.extra = ""
        self.config = root / "server.toml"

    def write(self, **mqtt: object) -> Path:
        m = {**self.mqtt, **mqtt}
        lines = ["[mqtt]"] + [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in m.items()]
        self.config.write_text("\n".join(lines) + f'\n[storage]\nurl = "sqlite:///{self.root / "db" / "fleet.sqlite"}"'
                               f'\n[http]\nhost = "127.0.0.1"\nport = {self.http_port}\n{self.extra}\n')
        return self.config


@pytest.fixture
def setup(pki: Pki, tmp_path: Path) -> Iterator[Setup]:
    broker = Broker(pki, tmp_path / "broker")  # its port, for the server; started only where a test says so
    s = Setup(pki, tmp_path / "server", broker.port)
    s.broker = broker  # type: ignore[attr-defined]
    yield s
    broker.stop()


def test_missing_ca_file(setup: Setup) -> None:
    """Was: a 69-line traceback naming neither file nor setting, and the process did not exit."""
    missing = setup.files / "nope" / "ca.pem"
    out = posfleet("server", "run", "--config", str(setup.write(ca_file=str(missing))))
    assert_refused(out, "mqtt.ca_file", missing, "no such file")
    assert not (setup.root / "db").exists(), "nothing may start (the database is not even made)"


def test_ca_file_is_a_folder_or_not_pem(setup: Setup) -> None:
    out = posfleet("server", "run", "--config", str(setup.write(ca_file=str(setup.files))))
    assert_refused(out, "mqtt.ca_file", setup.files, "not a regular file")
    junk = setup.files / "junk.pem"
    junk.write_text("hello\n")
    out = posfleet("server", "run", "--config", str(setup.write(ca_file=str(junk))))
    assert_refused(out, "mqtt.ca_file", junk, "not a PEM CA certificate")


def test_unreadable_key_file(setup: Setup) -> None:
    key = setup.files / "server-client.key"
    key.chmod(0)
    out = posfleet("server", "run", "--config", str(setup.write()), user=True)
    assert_refused(out, "mqtt.key_file", key, "not readable by user", "mode 0000")


def test_key_of_another_certificate(setup: Setup, pki: Pki) -> None:
    other = setup.files / "broker.key"
    shutil.copy(pki.dir / "broker.key", other)
    out = posfleet("server", "run", "--config", str(setup.write(key_file=str(other))))
    assert_refused(out, "mqtt.key_file", other, "is not the private key of mqtt.cert_file",
                   str(setup.files / "server-client.pem"))


def test_expired_certificate_and_not_yet_valid_one(setup: Setup) -> None:
    now = dt.datetime.now(dt.UTC)
    cert, key = self_signed(setup.files, "old", now - dt.timedelta(days=800), now - dt.timedelta(days=35))
    out = posfleet("server", "run", "--config", str(setup.write(cert_file=str(cert), key_file=str(key))))
    assert_refused(out, "mqtt.cert_file", cert, "expired on")
    # not yet valid: the clock's business; a warning, nothing refused
    cert, key = self_signed(setup.files, "early", now + dt.timedelta(days=2), now + dt.timedelta(days=800))
    out = posfleet("server", "check-config", "--config", str(setup.write(cert_file=str(cert), key_file=str(key))))
    assert out.returncode == 0, out.stderr
    assert f"warning: mqtt.cert_file: {cert}: certificate 'early' is not valid before" in out.stderr, out.stderr


def test_invalid_service_hours(setup: Setup) -> None:
    """Was: accepted at start, then every availability request answered 500."""
    setup.extra = '[availability]\nservice_hours = "8:00-18:00"\n'
    out = posfleet("server", "run", "--config", str(setup.write()))
    assert out.returncode == 2 and out.elapsed < FAST and "Traceback" not in out.stderr, out.stderr  # type: ignore[attr-defined]
    assert "availability.service_hours" in out.stderr and "'8:00' is not HH:MM" in out.stderr, out.stderr
    assert str(setup.config) in out.stderr
    setup.extra = '[availability]\nservice_hours = {"fri-mon" = "08:00-18:00"}\n'
    out = posfleet("server", "check-config", "--config", str(setup.write()))
    assert out.returncode == 2 and "availability.service_hours" in out.stderr and "runs backwards" in out.stderr


def test_database_folder_not_usable(setup: Setup) -> None:
    blocker = setup.root / "db"
    blocker.write_text("a file where the database's folder should be")
    out = posfleet("server", "run", "--config", str(setup.write()))
    assert_refused(out, "storage.url", blocker / "fleet.sqlite", "is not a folder")
    blocker.unlink()
    blocker.mkdir(mode=0o500)
    out = posfleet("server", "run", "--config", str(setup.write()), user=True)
    assert_refused(out, "storage.url", blocker / "fleet.sqlite", "not writable by user")


def test_bad_command_key_is_refused_missing_one_is_a_warning(setup: Setup) -> None:
    bad = setup.files / "command.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    setup.extra = f'[commands]\nkey_file = "{bad}"\nendorsement_file = "{setup.files / "command.endorsement"}"\n'
    out = posfleet("server", "check-config", "--config", str(setup.write()))
    assert out.returncode == 2 and f"error: commands.endorsement_file: {setup.files / 'command.endorsement'}: no such file" \
        in out.stderr, out.stderr
    (setup.files / "command.endorsement").write_bytes(b"\x80")
    out = posfleet("server", "run", "--config", str(setup.write()))
    assert_refused(out, "commands.key_file", bad, "not an unencrypted PEM private key")


def test_port_in_use(setup: Setup) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        setup.http_port = s.getsockname()[1]
        out = posfleet("server", "run", "--config", str(setup.write()))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"error: http.port: cannot listen on 127.0.0.1:{setup.http_port}" in out.stderr, out.stderr


def test_check_config_lists_every_problem(setup: Setup) -> None:
    """Was: `agent check-config` passed a config whose certificate files do not exist; the server had none."""
    out = posfleet("server", "check-config", "--config", str(setup.write()))
    assert out.returncode == 0, out.stderr
    assert '"report_every_s": 1.0' in out.stdout
    assert "warning: commands.key_file" in out.stderr  # commands are optional: said, not refused
    gone = setup.root / "gone"
    out = posfleet("server", "check-config", "--config", str(setup.write(
        ca_file=str(gone / "ca.pem"), cert_file=str(gone / "c.pem"), key_file=str(gone / "c.key"))))
    assert out.returncode == 2, out.stderr
    for setting, name in (("mqtt.ca_file", "ca.pem"), ("mqtt.cert_file", "c.pem"), ("mqtt.key_file", "c.key")):
        assert f"error: {setting}: {gone / name}: no such file" in out.stderr, out.stderr


@pytest.fixture
def running(setup: Setup) -> Iterator[tuple[Setup, subprocess.Popen[str], Path]]:
    log = setup.root / "server.log"
    config = setup.write()
    token = posfleet("server", "token", "create", "--config", str(config), "--name", "t", "--role", "admin")
    assert token.returncode == 0, token.stderr
    setup.token = token.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "posfleet", "server", "run", "--config", str(config)],
                                stdout=f, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT)
    try:
        yield setup, proc, log
    finally:
        stop_process(proc, signal.SIGINT, 15)


def _get(setup: Setup, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{setup.http_port}{path}", timeout=2)
    except httpx.HTTPError:
        return None


def test_unreachable_broker_is_said_and_not_ready_until_reached(running: tuple[Setup, subprocess.Popen[str], Path]
                                                               ) -> None:
    """Was: nothing logged and /healthz said "ok". Then the broker comes up on that port: ready."""
    setup, proc, log = running
    where = f"127.0.0.1:{setup.mqtt['port']}"
    r = wait_for(lambda: (x := _get(setup, "/readyz")) is not None and x, 20, "the server to answer")
    assert r.status_code == 503 and any(where in p and "Connection refused" in p for p in r.json()["problems"]), r.text
    live = _get(setup, "/healthz")
    assert live is not None and live.status_code == 200 and live.json()["status"] == "degraded", live
    wait_for(lambda: log.read_text().count(f"still not connected to the broker at {where}") >= 2, 20,
             "the periodic report (mqtt.report_every_s = 1)")
    text = log.read_text()
    assert f"ingest cannot reach the broker at {where}: ConnectionRefusedError" in text, text
    assert proc.poll() is None
    setup.broker.start()  # type: ignore[attr-defined]
    wait_for(lambda: (x := _get(setup, "/readyz")) is not None and x.status_code == 200, 40, "ready once reached")
    assert f"ingest connected to the broker at {where}" in log.read_text()


def test_missing_command_key_warns_and_commands_answer_503(running: tuple[Setup, subprocess.Popen[str], Path]) -> None:
    """Commands are optional: a server without its command-signing key runs (monitoring, figures) and says at start
    that commands are refused; each command request answers 503 naming the setting and the file."""
    setup, proc, log = running
    wait_for(lambda: _get(setup, "/readyz") is not None, 20, "the server to answer")
    r = httpx.post(f"http://127.0.0.1:{setup.http_port}/api/v1/commands", json={"type": "network_check",
                   "sn": "HN00010001"}, headers={"Authorization": f"Bearer {setup.token}"}, timeout=10)  # type: ignore[attr-defined]
    assert r.status_code == 503, r.text
    assert "commands.key_file" in r.text and str(setup.root / "command.key") in r.text, r.text
    text = log.read_text()
    assert f"warning: commands.key_file: {setup.root / 'command.key'}: no command-signing key" in text, text
    assert "remote commands are refused (HTTP 503)" in text


def test_database_and_its_wal_are_private(running: tuple[Setup, subprocess.Popen[str], Path]) -> None:
    """fleet.sqlite holds contacts' phone numbers: 0600, and so are its -wal and -shm (was 0644)."""
    setup, proc, log = running
    wait_for(lambda: _get(setup, "/readyz") is not None, 20, "the server to answer")
    db = setup.root / "db" / "fleet.sqlite"
    for p in (db, db.with_name("fleet.sqlite-wal"), db.with_name("fleet.sqlite-shm")):
        assert p.exists(), p
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, (p, oct(p.stat().st_mode))


def test_world_readable_database_is_tightened(setup: Setup) -> None:
    import asyncio

    from server.storage import open_storage

    db = setup.root / "old.sqlite"
    db.touch(mode=0o644)
    db.chmod(0o644)

    async def go() -> None:
        st = open_storage(f"sqlite:///{db}", readers=0)
        await st.open()
        await st.close()

    asyncio.run(go())
    assert stat.S_IMODE(db.stat().st_mode) == 0o640


def test_example_server_config_serves_loopback_only() -> None:
    text = (ROOT / "deploy" / "server.example.toml").read_text()
    assert tomllib.loads(text)["http"]["host"] == "127.0.0.1"
    assert "docs/deployment.md" in text
