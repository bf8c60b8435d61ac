"""Catalogue S12, secrets-at-rest: private keys are files only their owner can read, and no key or API token ends
up in a log or a database.

Part 1 runs the provisioning commands as an operator types them (``posfleet ca init|issue-broker|issue-server|
command-key|update-key`` and ``posfleet agent enroll``) under ``umask 000``, so a key written with a plain
``write_bytes`` would come out world-readable (0666) and fail. Part 2 runs a real agent against the real broker and
server until samples are stored, then searches the agent's log and outbox and the server's log and database for
``PRIVATE KEY``, the terminal key's body and the server's API tokens.

Weaker than the catalogue: the owner is the user running the test (a terminal's agent user is set up by the
package, not here); backups and crash reports are not inspected (the agent writes neither); the server has API
tokens only (stored as SHA-256, tests/server/test_units_api.py), no passwords to hash slowly.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.fleet import AgentProc, agent_config, wait_for

PASSPHRASE = "correct horse battery"


def _posfleet(*args: str) -> str:
    env = {**os.environ, "POSFLEET_CA_PASSPHRASE": PASSPHRASE}
    out = subprocess.run([sys.executable, "-m", "posfleet", *args], capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL, timeout=60, umask=0)
    assert out.returncode == 0, f"posfleet {' '.join(args)}: {out.stderr}"
    return out.stdout


def test_every_private_key_written_by_provisioning_is_0600_even_under_umask_000(tmp_path: Path) -> None:
    ca, keys, terminal = tmp_path / "CA", tmp_path / "keys", tmp_path / "terminal"
    _posfleet("ca", "init", "--dir", str(ca))
    _posfleet("ca", "issue-broker", "--dir", str(ca), "--name", "localhost")
    _posfleet("ca", "issue-server", "--dir", str(ca))
    _posfleet("ca", "command-key", "--dir", str(ca), "--out", str(keys / "command"))
    _posfleet("ca", "update-key", "--dir", str(ca), "--out", str(keys / "update"))
    _posfleet("agent", "enroll", "--sn", "HN01210001", "--out", str(terminal))

    holding_keys = {}
    for p in sorted(tmp_path.rglob("*")):
        if p.is_file() and b"PRIVATE KEY" in p.read_bytes():
            holding_keys[p.relative_to(tmp_path).as_posix()] = p
    # not vacuous: the CA key, the broker's and the server's TLS keys, both signing keys and the terminal's key
    names = {Path(k).name for k in holding_keys}
    assert {"ca.key", "broker.key", "command.key", "update.key", "terminal.key"} <= names, sorted(holding_keys)
    assert any(n.startswith("server-client") or n.startswith("posfleet-server") for n in names), sorted(holding_keys)
    for rel, p in holding_keys.items():
        st = p.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600, f"{rel}: mode {oct(stat.S_IMODE(st.st_mode))}, not 0600"
        assert st.st_uid == os.getuid(), rel
        assert p.suffix == ".key", f"{rel}: a private key in a file that is not a .key"
    assert (ca / "ca.key").read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----"), "CA key encrypted at rest"
    # re-enrolling over a key file someone made world-readable (a copy, a careless chmod) makes it 0600 again
    (terminal / "terminal.key").chmod(0o644)
    _posfleet("agent", "enroll", "--sn", "HN01210001", "--out", str(terminal))
    assert stat.S_IMODE((terminal / "terminal.key").stat().st_mode) == 0o600, "re-enrol kept a world-readable key"
    # nothing written with the key material leaks it: certificates, CSR, CRL, endorsements, index
    for p in tmp_path.rglob("*"):
        if p.is_file() and p.suffix != ".key":
            assert b"PRIVATE KEY" not in p.read_bytes(), p


def test_no_private_key_or_token_in_logs_or_databases(pki, broker, server, tmp_path: Path) -> None:
    sn = "HN01210002"
    data = tmp_path / "agent"
    cfg = agent_config(pki, broker, sn, data, sampling_interval=5, link="batch_interval_s = 0")
    log = tmp_path / "agent.log"
    agent = AgentProc(cfg, log).start()
    try:
        def stored() -> bool:
            r = server.get(f"/api/v1/units/{sn}/samples", limit=10)
            return r.status_code == 200 and len(r.json()["items"]) >= 2

        wait_for(stored, 60, "samples stored")
    finally:
        agent.stop()
    key_text = (pki.terminal(sn) / "terminal.key").read_text()
    body_lines = [ln for ln in key_text.splitlines() if ln and not ln.startswith("-----")]
    assert body_lines
    tokens = [server.token(role) for role in ("admin", "viewer")]
    secrets = [b"PRIVATE KEY", *(ln.encode() for ln in body_lines), *(t.encode() for t in tokens)]
    searched = [log, data / "outbox.sqlite", server.db, server.log]
    searched += [p for p in data.rglob("*") if p.is_file()]
    searched += [p for p in server.db.parent.glob(server.db.name + "*")]  # -wal, -shm
    assert server.db.exists() and log.exists()
    for p in {q for q in searched if q.exists()}:
        content = p.read_bytes()
        for s in secrets:
            assert s not in content, f"{p}: holds {s[:20]!r}..."
