"""A terminal key encrypted with a passphrase: the agent connects with it and never logs it, even at DEBUG, and a
wrong passphrase is a clear start-up error that does not show the passphrase either."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from agent.enroll import make_key_and_csr
from tests.fleet import AgentProc, agent_config, wait_for

SECRET = "hunter2-terminal-passphrase"


def test_encrypted_key_passphrase_is_used_and_never_logged(pki, broker, server, tmp_path: Path) -> None:
    sn = "HN00160001"
    cfg = agent_config(pki, broker, sn, tmp_path / "a", sampling_interval=5, link="batch_interval_s = 0",
                       extra='[log]\nlevel = "DEBUG"\n')
    # the same terminal, re-enrolled with its key encrypted at rest
    t = tmp_path / "enc"
    _key, csr = make_key_and_csr(sn, t, passphrase=SECRET)
    (t / "terminal.pem").write_bytes(pki.ca.sign_csr(csr.read_bytes()))
    shutil.copy(pki.dir / "ca.pem", t / "ca.pem")
    assert b"ENCRYPTED PRIVATE KEY" in (t / "terminal.key").read_bytes()
    text = cfg.read_text().replace(str(pki.terminal(sn)), str(t))
    cfg.write_text(text.replace("[link]\n", f'[link]\nkey_passphrase = "{SECRET}"\n', 1))
    agent = AgentProc(cfg, tmp_path / "a.log").start()
    try:
        wait_for(lambda: server.get(f"/api/v1/units/{sn}/samples", limit=1).json().get("items"), 40,
                 "a sample from the agent with the encrypted key")
    finally:
        agent.stop()
    log = (tmp_path / "a.log").read_text()
    assert SECRET not in log

    wrong = tmp_path / "wrong.toml"
    wrong.write_text(cfg.read_text().replace(SECRET, "not-the-passphrase-0"))
    out = subprocess.run([sys.executable, "-m", "posfleet", "agent", "run", "--config", str(wrong)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "link.key_passphrase: cannot decrypt" in out.stderr and "wrong passphrase" in out.stderr, out.stderr
    assert "not-the-passphrase-0" not in out.stdout + out.stderr
    # no passphrase at all for an encrypted key: named too
    wrong.write_text(cfg.read_text().replace(f'key_passphrase = "{SECRET}"\n', ""))
    out = subprocess.run([sys.executable, "-m", "posfleet", "agent", "run", "--config", str(wrong)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no passphrase is set" in out.stderr, out.stderr[-2000:]
