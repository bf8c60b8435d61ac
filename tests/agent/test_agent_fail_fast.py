"""The agent fails fast and says why (issue 13, item 3).

Real processes: ``posfleet agent run`` / ``agent check-config`` as subprocesses on bad configurations must exit 2
within a few seconds, before anything starts, with the dotted setting and the path on stderr and no traceback.
Was: exit 1 with ``Error: [Errno 13] Permission denied`` naming no file when the key was unreadable, ``[Errno 2]
No such file or directory`` when ca.pem was missing, and ``check-config`` passed a configuration whose certificate
files did not exist.

Files unreadable "by the running user": as root every file is readable, so the child runs without the
DAC_OVERRIDE and DAC_READ_SEARCH capabilities (``setpriv``), as the agent's own user would.
"""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulator.local import ENV
from tests.failfast import FAST, ROOT, assert_refused, posfleet, self_signed
from tests.fleet import Pki, free_port, stop_process

SN = "HN00090001"


class Setup:
    def __init__(self, pki: Pki, root: Path) -> None:
        self.root = root
        self.files = root / "etc"
        shutil.copytree(pki.terminal(SN), self.files)
        self.link = {"host": "127.0.0.1", "port": free_port(), "ca_file": str(self.files / "ca.pem"),
                     "cert_file": str(self.files / "terminal.pem"), "key_file": str(self.files / "terminal.key"),
                     "reconnect_min_s": 0.2, "reconnect_max_s": 1.0}
        self.extra = ""
        self.config = root / "agent.toml"

    def write(self, **link: object) -> Path:
        m = {**self.link, **link}
        lines = [f'sn = "{SN}"', f'data_dir = "{self.root / "data"}"', "[link]"]
        lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in m.items()]
        self.config.write_text("\n".join(lines) + f"\n{self.extra}\n")
        return self.config


@pytest.fixture
def setup(pki: Pki, tmp_path: Path) -> Setup:
    return Setup(pki, tmp_path)


def test_missing_ca_file(setup: Setup) -> None:
    missing = setup.files / "missing-ca.pem"
    out = posfleet("agent", "run", "--config", str(setup.write(ca_file=str(missing))))
    assert_refused(out, "link.ca_file", missing, "no such file")
    assert not (setup.root / "data").exists(), "nothing may start (no outbox made)"


def test_unreadable_key(setup: Setup) -> None:
    key = setup.files / "terminal.key"
    key.chmod(0o400)
    key.chmod(0)
    out = posfleet("agent", "run", "--config", str(setup.write()), user=True)
    assert_refused(out, "link.key_file", key, "not readable by user", "mode 0000")


def test_unreadable_folder_on_the_way(setup: Setup) -> None:
    setup.files.chmod(0o600)  # not searchable: every file in it out of reach
    try:
        out = posfleet("agent", "run", "--config", str(setup.write()), user=True)
        assert_refused(out, "link.ca_file", setup.files / "ca.pem", "cannot be reached by user")
    finally:
        setup.files.chmod(0o755)


def test_certificate_not_pem_and_key_of_another(setup: Setup, pki: Pki) -> None:
    junk = setup.files / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    out = posfleet("agent", "run", "--config", str(setup.write(cert_file=str(junk))))
    assert_refused(out, "link.cert_file", junk, "not a PEM certificate")
    other = pki.terminal("HN00090002") / "terminal.key"
    out = posfleet("agent", "run", "--config", str(setup.write(key_file=str(other))))
    assert_refused(out, "link.key_file", other, "is not the private key of link.cert_file")
    notkey = setup.files / "terminal.pem"
    out = posfleet("agent", "run", "--config", str(setup.write(key_file=str(notkey))))
    assert_refused(out, "link.key_file", notkey, "not a PEM private key")


def test_check_config_checks_the_files(setup: Setup) -> None:
    out = posfleet("agent", "check-config", "--config", str(setup.write()))
    assert out.returncode == 0 and f'"sn": "{SN}"' in out.stdout, out.stderr
    gone = setup.root / "gone"
    out = posfleet("agent", "check-config", "--config", str(setup.write(
        ca_file=str(gone / "ca.pem"), cert_file=str(gone / "t.pem"), key_file=str(gone / "t.key"))))
    assert out.returncode == 2 and out.elapsed < FAST and "Traceback" not in out.stderr, out.stderr  # type: ignore[attr-defined]
    for setting, name in (("link.ca_file", "ca.pem"), ("link.cert_file", "t.pem"), ("link.key_file", "t.key")):
        assert f"error: {setting}: {gone / name}: no such file" in out.stderr, out.stderr


def test_console_engineer_ca_is_checked(setup: Setup) -> None:
    missing = setup.files / "engineers.pem"
    setup.extra = f'[console]\nport = "/dev/null"\nengineer_ca_file = "{missing}"\n'
    out = posfleet("agent", "run", "--config", str(setup.write()))
    assert_refused(out, "console.engineer_ca_file", missing, "no such file")


def test_expired_certificate(setup: Setup) -> None:
    """check-config refuses it; `agent run` says so loudly and keeps running: the samples go on into the outbox for
    when the certificate is renewed, and the diagnostic console's reenrol (the way to renew it on site) needs the
    agent running. (A clock far ahead looks the same from here; agent/tls.py copes with that.)"""
    now = dt.datetime.now(dt.UTC)
    cert, key = self_signed(setup.files, SN, now - dt.timedelta(days=900), now - dt.timedelta(days=75))
    config = setup.write(cert_file=str(cert), key_file=str(key))
    out = posfleet("agent", "check-config", "--config", str(config))
    assert_refused(out, "link.cert_file", cert, f"certificate '{SN}' expired on")
    log = setup.root / "agent.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "posfleet", "agent", "run", "--config", str(config)],
                                stdout=f, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
    try:
        time.sleep(4)
        assert proc.poll() is None, log.read_text()
        assert f"warning: link.cert_file: {cert}: certificate '{SN}' expired on" in log.read_text()
    finally:
        stop_process(proc, signal.SIGTERM, 15)


def test_not_yet_valid_certificate_is_a_warning(setup: Setup) -> None:
    """A clock behind the certificate's start (dead RTC battery): agent/tls.py's business, not a reason to stop."""
    now = dt.datetime.now(dt.UTC)
    cert, key = self_signed(setup.files, SN, now + dt.timedelta(days=3), now + dt.timedelta(days=800))
    out = posfleet("agent", "check-config", "--config", str(setup.write(cert_file=str(cert), key_file=str(key))))
    assert out.returncode == 0, out.stderr
    assert f"warning: link.cert_file: {cert}: certificate '{SN}' is not valid before" in out.stderr, out.stderr


def test_wrong_passphrase_names_the_setting(setup: Setup, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((setup.files / "terminal.key").read_bytes(), None)
    enc = setup.files / "enc.key"
    enc.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"right-passphrase-1")))
    out = posfleet("agent", "run", "--config", str(setup.write(key_file=str(enc), key_passphrase="wrong-one-22")))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"error: link.key_passphrase: cannot decrypt {enc} (wrong passphrase)" in out.stderr, out.stderr
    assert "wrong-one-22" not in out.stderr + out.stdout
