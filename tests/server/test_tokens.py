"""Revoking API tokens: ``posfleet server token list|revoke`` (the real CLI on a real SQLite file), and the effect on
a server that is already running with an API worker beside its primary (real processes, real HTTP): the revoked
token is refused by every process from the next request on, and the other tokens keep working."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.fleet import free_port, wait_for


def _config(tmp_path: Path, http: str = "") -> Path:
    cfg = tmp_path / "server.toml"
    cfg.write_text(f'ingest_enabled = false\n[storage]\nurl = "sqlite:///{tmp_path / "fleet.sqlite"}"\n'
                   f'[alerts]\nenabled = false\n{http}', encoding="utf-8")
    return cfg


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "posfleet", "server", "token", *args, "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)


def _create(cfg: Path, name: str, role: str) -> str:
    out = _cli(cfg, "create", "--name", name, "--role", role)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def _listed(cfg: Path) -> list[dict[str, Any]]:
    out = _cli(cfg, "list", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["tokens"]  # type: ignore[no-any-return]


def test_a_token_revoked_with_the_cli_is_refused_at_once_by_every_process_of_a_running_server(tmp_path: Path) -> None:
    port = free_port()
    cfg = _config(tmp_path, f'[http]\nhost = "127.0.0.1"\nport = {port}\napi_workers = 2\n')
    leaked, kept = _create(cfg, "leaked", "admin"), _create(cfg, "kept", "viewer")
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        srv = subprocess.Popen([sys.executable, "-m", "posfleet", "server", "run", "--config", str(cfg)],
                               stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def ask(token: str) -> httpx.Response:  # a new connection each time: either process may answer
        return httpx.get(f"{base}/api/v1/units", headers={"Authorization": f"Bearer {token}"}, timeout=5)

    def each_process(token: str, status: int, what: str) -> None:
        """Ask until both processes have answered; every answer must be ``status``."""
        seen: set[str] = set()

        def both() -> bool:
            r = ask(token)
            assert r.status_code == status, (what, r.status_code, r.text)
            seen.add(r.headers["x-posfleet-worker"])
            return len(seen) == 2
        wait_for(both, 20, f"both processes to answer: {what}")

    try:
        def up() -> bool:
            assert srv.poll() is None, log.read_text()[-3000:]
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(up, 30, "the server to answer")
        each_process(leaked, 200, "the token before its revocation")

        out = _cli(cfg, "revoke", "leaked")
        assert out.returncode == 0 and out.stdout.strip() == "revoked 1 token named 'leaked'", out
        each_process(leaked, 401, "the revoked token")  # no cache: refused by the very next request
        assert ask(leaked).json()["detail"] == "unknown or revoked token"
        each_process(kept, 200, "another token")
    finally:
        srv.send_signal(signal.SIGINT)
        try:
            srv.wait(15)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]

    tokens = {t["name"]: t for t in _listed(cfg)}
    assert tokens["leaked"]["revoked"] is True and tokens["leaked"]["revoked_at"]
    assert tokens["kept"]["revoked"] is False and tokens["kept"]["revoked_at"] is None
    assert leaked not in json.dumps(tokens) and kept not in json.dumps(tokens)


def test_list_and_revoke_by_name_from_the_cli(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert _cli(cfg, "list").stdout.startswith("no tokens")
    tokens = [_create(cfg, "alice", "admin"), _create(cfg, "bob", "viewer"), _create(cfg, "bob", "engineer")]

    text = _cli(cfg, "list")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "CREATED", "OWNER", "SCOPE", "LAST", "USED", "STATE"]
    assert [line.split()[:2] + line.split()[3:] for line in lines[1:]] == [  # no owner, the province, unused
        ["alice", "admin", "-", "province", "never", "in", "force"],
        ["bob", "viewer", "-", "province", "never", "in", "force"],
        ["bob", "engineer", "-", "province", "never", "in", "force"]]
    for t in tokens:  # neither the token nor its hash
        assert t not in text.stdout
        assert t not in json.dumps(_listed(cfg))

    # an unknown name: usage error (exit 2) naming it; nothing revoked
    out = _cli(cfg, "revoke", "carol")
    assert out.returncode == 2 and "no token named 'carol'" in out.stderr, out
    assert not any(t["revoked"] for t in _listed(cfg))

    # names are not unique: every token with the name goes, and the count says so
    out = _cli(cfg, "revoke", "bob")
    assert out.returncode == 0 and out.stdout.strip() == "revoked 2 tokens named 'bob'", out
    assert [(t["name"], t["revoked"]) for t in _listed(cfg)] == [("alice", False), ("bob", True), ("bob", True)]

    # twice: harmless, and says so
    out = _cli(cfg, "revoke", "bob")
    assert out.returncode == 0 and "already revoked" in out.stdout, out

    # a new token under a revoked name: revoking again takes the new one only
    _create(cfg, "bob", "viewer")
    out = _cli(cfg, "revoke", "bob")
    assert out.returncode == 0 and out.stdout.strip() == "revoked 1 token named 'bob' (2 already revoked)", out
    assert "revoked" in _cli(cfg, "list").stdout.splitlines()[-1]
