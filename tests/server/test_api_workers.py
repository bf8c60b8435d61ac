"""Server processes on one port (issue 4, ``http.api_workers = 2``), in both layouts: the primary and one
API-only worker on the port; or two API-only workers on the port and the primary off it (``primary_api = false``).

Real processes, real HTTP, one SQLite file, the real broker and a real agent. Every new connection is given to one
of the listening sockets (SO_REUSEPORT), and every response names the process that answered it
(``X-Posfleet-Worker``), so the test asks on fresh connections until the process it needs answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from server.commands.keys import make_key
from tests.conftest import sqlite_count
from tests.fleet import AgentProc, Broker, Pki, Server, agent_config, wait_for


def _pid(r: httpx.Response) -> int:
    return int(r.headers["x-posfleet-worker"])


@pytest.mark.parametrize("primary_api", [True, False], ids=["primary-and-worker", "workers-only"])
def test_processes_share_the_port_see_each_others_writes_and_ingest_once(
        pki: Pki, broker: Broker, tmp_path: Path, primary_api: bool) -> None:
    key, endorsement, _ = make_key(pki.ca, tmp_path / "command", "command", 30)
    srv = Server(pki, broker, tmp_path / "server", extra=f'[commands]\nkey_file = "{key}"\n'
                 f'endorsement_file = "{endorsement}"\ndispatch_interval_s = 0.5\n')
    srv.config.write_text(srv.config.read_text().replace(
        f"port = {srv.http_port}\n", f"port = {srv.http_port}\napi_workers = 2\nprimary_api = {str(primary_api).lower()}\n", 1))
    srv.start()  # waits until /healthz says ingest is connected (the primary's figures, from any process)
    agent = None
    try:
        base = f"http://127.0.0.1:{srv.http_port}"
        admin = {"Authorization": f"Bearer {srv.token('admin')}"}
        health: dict[int, dict[str, Any]] = {}

        def both_answered() -> bool:
            r = httpx.get(f"{base}/healthz", timeout=5)  # a new connection each time
            health[_pid(r)] = r.json()
            return len(health) == 2
        wait_for(both_answered, 15, "two processes to answer on the port")
        role = {pid: h["worker"]["role"] for pid, h in health.items()}
        assert all(pid == h["worker"]["pid"] for pid, h in health.items())
        assert sorted(role.values()) == (["api", "primary"] if primary_api else ["api", "api"])
        api_pid = next(pid for pid, r in role.items() if r == "api")
        # off the API port, the primary (ingest, background jobs) yields the CPU to the API workers (decision 041)
        mine = psutil.Process().nice()
        assert psutil.Process(srv.proc.pid).nice() == (mine if primary_api else min(19, mine + 5))
        assert [psutil.Process(pid).nice() for pid in role] == [mine, mine]

        # a registry write answered by one process is read from the other: the list, and the registry index
        # behind the figures (rebuilt when registry_version in meta moves)
        assert httpx.put(f"{base}/api/v1/institutions/W001", json={"name": "W", "county": "秀英区"},
                         headers=admin).status_code == 200
        r = httpx.put(f"{base}/api/v1/registry/units/HNW0000001", json={"institution": "W001"}, headers=admin)
        assert r.status_code == 200, r.text
        writer = _pid(r)

        def listed_by_the_other() -> Any:
            g = httpx.get(f"{base}/api/v1/registry/units", params={"county": "秀英区"}, headers=admin)
            return _pid(g) != writer and g
        g = wait_for(listed_by_the_other, 15, "a list answered by the other process")
        assert g.status_code == 200 and [u["sn"] for u in g.json()["items"]] == ["HNW0000001"]

        def counted_by_the_other() -> Any:
            f = httpx.get(f"{base}/api/v1/availability", headers=admin, params={
                "from": "2025-03-03T00:00:00+08:00", "to": "2025-03-04T00:00:00+08:00", "group_by": "county"})
            return _pid(f) != writer and f.json()["fleet"]["units"] == 1 and f
        f = wait_for(counted_by_the_other, 15, "the other process's figures to include the new unit")
        assert [i["county"] for i in f.json()["items"]] == ["秀英区"]

        # a real agent; a command queued through an API-only process is sent by the primary's dispatcher
        cfg = agent_config(pki, broker, "HNW0000001", tmp_path / "agent" / "data", sampling_interval=5,
                           link="batch_interval_s = 0\nbacklog_rate = 50.0\nack_timeout_s = 5")
        agent = AgentProc(cfg, tmp_path / "agent.log").start()
        wait_for(lambda: httpx.get(f"{base}/api/v1/units/HNW0000001", headers=admin).json().get("broker_session"),
                 30, "the agent online", interval=0.2)

        def api_client() -> Any:
            c = httpx.Client(base_url=base, headers=admin, timeout=10)  # one connection: one process
            if c.get("/healthz").json()["worker"]["role"] == "api":
                return c
            c.close()
            return None
        c = wait_for(api_client, 15, "a connection to an API-only process")
        try:
            r = c.post("/api/v1/commands", json={"type": "network_check", "sn": "HNW0000001"})
            assert r.status_code == 201 and role.get(_pid(r)) == "api", r.text
            cid = r.json()["command"]["id"]
            done = wait_for(lambda: (x := c.get(f"/api/v1/commands/{cid}").json())["state"] in
                            ("succeeded", "failed", "rejected", "expired") and x, 30, "the command's result",
                            interval=0.2)
        finally:
            c.close()
        assert done["state"] == "succeeded", done

        # ingest ran once: one server session at the broker, and the primary stored every sample there is; an
        # API-only process reports the primary's figures
        wait_for(lambda: sqlite_count(srv.db, "SELECT count(*) FROM samples") > 0, 30, "samples stored", interval=0.2)
        agent.stop()
        n = sqlite_count(srv.db, "SELECT count(*) FROM samples")
        stats = wait_for(lambda: (s := httpx.get(f"{base}/healthz", timeout=5)).json()["worker"]["pid"] == api_pid
                         and s.json()["ingest"]["samples_stored"] == n and s.json()["ingest"], 15,
                         "an API-only process to report the primary's ingest figures")
        assert stats["connected"] is True and stats["messages"] > 0
        # whichever process answers (each re-reads the primary's figures at most every second)
        wait_for(lambda: httpx.get(f"{base}/api/v1/ingest/stats", headers=admin).json()["samples_stored"] == n, 5,
                 "the ingest stats endpoint to say the primary's figures", interval=0.2)
        sessions = [line for line in broker.log.read_text().splitlines()
                    if "New client connected" in line and " as posfleet-server " in line]
        assert len(sessions) == 1, sessions
    finally:
        if agent is not None:
            agent.stop()
        srv.stop()
    text = srv.log.read_text()
    assert "Traceback" not in text, text[-4000:]
    assert "API worker" in text and "exited with" not in text  # the worker(s) stopped with the primary, not before


def test_an_api_worker_whose_primary_died_before_it_started_stops(tmp_path: Path) -> None:
    """The primary tells its workers its pid. A worker that starts after the primary died (its parent is already
    init) must not take init for its primary and hold the port for good."""
    import os
    import subprocess
    import sys

    from simulator.local import free_port

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    port = free_port()
    cfg = tmp_path / "server.toml"
    cfg.write_text(f'ingest_enabled = false\n[storage]\nurl = "sqlite:///{tmp_path / "fleet.sqlite"}"\n'
                   f'[http]\nhost = "127.0.0.1"\nport = {port}\n[alerts]\nenabled = false\n', encoding="utf-8")
    worker = subprocess.Popen([sys.executable, "-m", "posfleet", "server", "run", "--config", str(cfg), "--api-only",
                               "--port", str(port)], env={**os.environ, "POSFLEET_PRIMARY_PID": str(gone.pid)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = worker.communicate(timeout=60)
        assert b"is gone; stopping" in out, out.decode(errors="replace")[-2000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
