"""Two server processes on one PostgreSQL, for the tests of what several processes share (issue 15, decision 030):
the leader listens on a broker of its own that no terminal uses, so whatever a terminal sends reaches the follower
alone, and what the test then sees on the leader came through the database."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.fleet import Broker, Server, wait_for
from tests.terminal import Terminal


def cluster_server(pki, broker, workdir: Path, url: str, group: str, extra: str = "") -> Server:  # type: ignore[no-untyped-def]
    """A server process in the shared-subscription ``group`` on the database at ``url``."""
    s = Server(pki, broker, workdir, storage=url, extra=extra)
    s.config.write_text(s.config.read_text().replace("[storage]", f'share_group = "{group}"\nsession_expiry_s = 5\n'
                                                                  "[storage]"))
    return s


def leads(s: Server) -> int:
    """How many times the process has taken the leadership (its log says so)."""
    return s.log.read_text().count(" leads: ")


@dataclass
class Pair:
    leader: Server
    follower: Server
    pki: object
    broker: Broker
    terminals: list[Terminal] = field(default_factory=list)

    def terminal(self, sn: str) -> Terminal:
        """A terminal on the follower's broker, closed with the pair."""
        t = Terminal(self.pki, self.broker, sn)
        self.terminals.append(t)
        return t


@contextmanager
def leader_and_follower(pki, broker: Broker, pg_url: str, tmp_path: Path, extra: str = "") -> Iterator[Pair]:  # type: ignore[no-untyped-def]
    """The leader (started first, on a quiet broker) and a follower on ``broker``; both stopped afterwards, and
    neither may have logged a traceback."""
    group = secrets.token_hex(16)
    quiet = Broker(pki, tmp_path / "quiet-broker").start()  # the leader's: no terminal publishes there
    servers: list[Server] = []
    terminals: list[Terminal] = []
    try:
        leader = cluster_server(pki, quiet, tmp_path / "a", pg_url, group, extra).start()
        servers.append(leader)
        wait_for(lambda: leads(leader) == 1, 20, "the first process leads")
        follower = cluster_server(pki, broker, tmp_path / "b", pg_url, group, extra).start()
        servers.append(follower)
        pair = Pair(leader, follower, pki, broker, terminals)
        yield pair
    finally:
        for t in terminals:
            t.close()
        for s in servers:
            if s.proc is not None:
                s.stop()
        quiet.stop()
    for s in servers:
        assert "Traceback" not in s.log.read_text(), s.log.read_text()[-3000:]
