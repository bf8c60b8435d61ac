"""Bounded memory: while the disk refuses the outbox, at most ``outbox.memory_fallback`` samples are held, the
newest ones, and the loss is counted in the log (the real Agent class; no broker needed before run())."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.config import parse
from agent.main import Agent
from simulator.local import Pki
from wire.messages import Check, Sample


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def test_memory_fallback_keeps_the_newest_up_to_its_cap(pki: Pki, tmp_path: Path, caplog) -> None:
    t = pki.terminal("HN00170001")
    data = tmp_path / "data"
    data.mkdir(parents=True)
    # the outbox cannot be opened (its file is a link into a folder that is gone): every sample goes to memory.
    # (A directory in its place is no longer such a case: a damaged outbox is moved aside, test_outbox_corrupt.py)
    (data / "outbox.sqlite").symlink_to(tmp_path / "gone" / "outbox.sqlite")
    cfg = parse(f"""
sn = "HN00170001"
data_dir = "{data}"
[link]
ca_file = "{t}/ca.pem"
cert_file = "{t}/terminal.pem"
key_file = "{t}/terminal.key"
[outbox]
memory_fallback = 5
[commands]
enabled = false
""")
    agent = Agent(cfg)
    assert agent.outbox is None and agent.outbox_error
    with caplog.at_level(logging.ERROR):
        for i in range(12):
            agent._store(Sample(seq=0, ts=1_800_000_000 + 60 * i, checks={"storage": Check(0)}))
    assert [s.ts for s in agent.memory] == [1_800_000_000 + 60 * i for i in range(7, 12)], "the newest five"
    assert agent.stats.memory_held == 5
    assert sum("memory fallback full" in r.getMessage() for r in caplog.records) == 7
