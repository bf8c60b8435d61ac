"""Harness for the command tests: the real broker, the real server with a command key, real agents.

``Fleet`` starts the server with ``[commands]`` pointing at a key the session's fleet CA
endorsed, and starts real agent processes (``posfleet agent run``) with a boot-id file and a
reboot script, so a "reboot" is observable: the script appends to a counter file, writes a new
boot id and kills the agent, as a power cycle would.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.commands.keys import make_key
from tests.fleet import AgentProc, Broker, Pki, Server, agent_config, wait_for

FAST_LINK = "batch_interval_s = 0\nbacklog_rate = 50.0\nack_timeout_s = 5"
FINAL = ("succeeded", "failed", "rejected", "expired")

REBOOT_SCRIPT = """#!/bin/sh
# a reboot, as the terminal would see it: counted, a new boot id, the agent process gone
PID={pid_expr}
echo x >> "{counter}"
echo "boot-$(date +%s%N)" > "{boot_id}"
kill -9 "$PID"
"""


@pytest.fixture(scope="session")
def keys(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    ck, ce, _ = make_key(pki.ca, d / "command", "command", 30)
    uk, ue, _ = make_key(pki.ca, d / "update", "update", 30)
    return {"command_key": ck, "command_endorsement": ce, "update_key": uk, "update_endorsement": ue}


class Fleet:
    def __init__(self, pki: Pki, broker: Broker, keys: dict[str, Path], root: Path, storage: str | None = None) -> None:
        """``storage``: the server's storage URL (a ``postgresql://`` one), else a SQLite file of its own."""
        self.pki, self.broker, self.keys, self.root, self.storage = pki, broker, keys, root, storage
        self.server: Server | None = None
        self.agents: dict[str, AgentProc] = {}
        self.configs: dict[str, Path] = {}

    def start_server(self, clock: dict[str, Any] | None = None, settings: str = "", **commands: Any) -> Server:
        """``settings``: more server TOML (tables) before ``[commands]``; ``commands``: ``[commands]`` keys."""
        opts = {"dispatch_interval_s": 0.5, "resend_after_s": 3.0, "large_fanout": 50}
        opts.update(commands)
        extra = f"\n{settings}\n[commands]\n" + f'key_file = "{self.keys["command_key"]}"\n' + \
            f'endorsement_file = "{self.keys["command_endorsement"]}"\n' + \
            "".join(f"{k} = {v!r}\n" if not isinstance(v, str) else f'{k} = "{v}"\n' for k, v in opts.items())
        self.server = Server(self.pki, self.broker, self.root / "server", clock=clock, extra=extra,
                             storage=self.storage).start()
        return self.server

    def agent_dir(self, sn: str) -> Path:
        return self.root / "agents" / sn

    def make_agent(self, sn: str, commands: str = "", top: str = "", **kw: Any) -> Path:
        d = self.agent_dir(sn)
        d.mkdir(parents=True, exist_ok=True)
        boot = d / "boot_id"
        if not boot.exists():
            boot.write_text(f"boot-{secrets.token_hex(4)}\n")
        script = d / "reboot.sh"
        script.write_text(REBOOT_SCRIPT.format(counter=d / "reboots", boot_id=boot,
                                               pid_expr=f"$(cat {d / 'agent.pid'})"))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        kw.setdefault("link", FAST_LINK)
        kw.setdefault("sampling_interval", 5)
        extra = kw.pop("extra", "") + f'\n[commands]\nreboot_command = ["{script}"]\n' + \
            f'shutdown_command = ["{script}"]\n{commands}'
        cfg = agent_config(self.pki, self.broker, sn, d / "data", extra=extra, **kw)
        # top-level keys go before the first table
        cfg.write_text(f'boot_id_file = "{boot}"\n{top}\n' + cfg.read_text())
        self.configs[sn] = cfg
        return cfg

    def start_agent(self, sn: str) -> AgentProc:
        if sn not in self.configs:
            self.make_agent(sn)
        a = AgentProc(self.configs[sn], self.agent_dir(sn) / "agent.log").start()
        assert a.proc is not None
        (self.agent_dir(sn) / "agent.pid").write_text(str(a.proc.pid))
        self.agents[sn] = a
        return a

    def wait_online(self, sn: str, timeout: float = 30) -> None:
        assert self.server is not None

        def online() -> bool:
            r = self.server.get(f"/api/v1/units/{sn}")  # type: ignore[union-attr]
            return r.status_code == 200 and r.json().get("broker_session") is True
        wait_for(online, timeout, f"{sn} online", interval=0.2)

    def _paced(self, call: Any) -> Any:
        """``call()`` again after a 429 (over the token's 20 requests a second, decision 013), waited out as its
        Retry-After says, as any client of the API must: the tests that poll many commands in a loop reach it."""
        for _ in range(10):
            r = call()
            if r.status_code != 429 or not str(r.json().get("detail", "")).startswith("Authorization:"):
                return r  # another 429 (a unit's reboot budget) is the answer under test
            time.sleep(float(r.headers.get("Retry-After", "1")))
        return r

    def send(self, role: str = "admin", **body: Any) -> Any:
        assert self.server is not None
        return self._paced(lambda: self.server.request("POST", "/api/v1/commands", role=role, json=body))

    def command(self, cid: str) -> dict[str, Any]:
        assert self.server is not None
        r = self._paced(lambda: self.server.get(f"/api/v1/commands/{cid}"))
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def wait_state(self, cid: str, states: tuple[str, ...] = FINAL, timeout: float = 30) -> dict[str, Any]:
        return wait_for(lambda: (c := self.command(cid))["state"] in states and c, timeout,  # type: ignore[no-any-return]
                        f"command {cid} in {states}", interval=0.2)

    def audit(self, **params: Any) -> list[dict[str, Any]]:
        assert self.server is not None
        r = self.server.get("/api/v1/audit", **params)
        assert r.status_code == 200, r.text
        return r.json()["items"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        for a in self.agents.values():
            a.stop()
        if self.server is not None:
            self.server.stop()
            text = self.server.log.read_text() if self.server.log.exists() else ""
            assert "Traceback" not in text, text[-4000:]


@pytest.fixture
def fleet(pki: Pki, broker: Broker, keys: dict[str, Path], tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(pki, broker, keys, tmp_path)
    yield f
    f.stop()


def unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def now() -> float:
    return time.time()
