"""The test harness's server takes another port when a parallel test's process bound the free one it chose first
(a free port is free only at the moment it is chosen; three xdist workers on one box met this in CI)."""

from __future__ import annotations

import socket
from pathlib import Path

from simulator.local import Server


def test_a_server_whose_port_was_taken_starts_on_another(pki, broker, tmp_path: Path) -> None:
    server = Server(pki, broker, tmp_path / "server")
    taken = server.http_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        server.start()
        try:
            assert server.http_port != taken
            assert server.get("/healthz").json()["ingest"]["connected"]
        finally:
            server.stop()
