"""Helpers of the fail-fast tests (tests/server/test_server_fail_fast.py, tests/agent/test_agent_fail_fast.py): run
``posfleet`` as a child process, as a plain user would, and check what it says."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulator.local import ENV

ROOT = Path(__file__).resolve().parents[1]
FAST = 10  # seconds: "a few", with the interpreter's start on a loaded CI machine


def as_user() -> list[str]:
    """A prefix that runs a command without root's power to read every file (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root: setpriv (util-linux) is needed to test unreadable files as a plain user would"
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]


def posfleet(*args: str, user: bool = False, timeout: float = FAST) -> subprocess.CompletedProcess[str]:
    t0 = time.monotonic()
    out = subprocess.run([*(as_user() if user else []), sys.executable, "-m", "posfleet", *args],
                         capture_output=True, text=True, timeout=timeout + 20, env=ENV, cwd=ROOT)
    out.elapsed = time.monotonic() - t0  # type: ignore[attr-defined]
    return out


def self_signed(out: Path, cn: str, not_before: dt.datetime, not_after: dt.datetime) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{cn}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / f"{cn}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return out / f"{cn}.pem", out / f"{cn}.key"


def assert_refused(out: subprocess.CompletedProcess[str], setting: str, path: object, *words: str) -> None:
    """Exit 2 within FAST seconds, no traceback, and a line ``error: <setting>: ...`` naming ``path`` and ``words``."""
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert out.elapsed < FAST, f"took {out.elapsed:.1f} s"  # type: ignore[attr-defined]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    line = next((ln for ln in out.stderr.splitlines() if ln.startswith(f"error: {setting}: ")), None)
    assert line is not None, f"no 'error: {setting}: ...' line in:\n{out.stderr}"
    assert str(path) in line, (str(path), line)
    for w in words:
        assert w in line, (w, line)
