"""The agent under systemd (Type=notify, WatchdogSec): READY=1 once, then WATCHDOG=1 only when a sample was really
taken and stored, and a watchdog timeout shorter than the sampling interval allows is raised, never lowered."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import simulator.local
from tests.conftest import sqlite_count
from tests.fleet import AgentProc, agent_config, wait_for


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(0.2)
    monkeypatch.setitem(simulator.local.ENV, "NOTIFY_SOCKET", str(path))
    monkeypatch.setitem(simulator.local.ENV, "WATCHDOG_USEC", str(300 * 1_000_000))  # the unit's WatchdogSec=300
    yield s
    s.close()


def received(s: socket.socket, until: float) -> list[tuple[float, str]]:
    out = []
    while time.time() < until:
        try:
            out.append((time.time(), s.recv(4096).decode()))
        except TimeoutError:
            pass
    return out


def test_ready_then_watchdog_fed_by_samples(pki, broker, notify_socket: socket.socket, tmp_path: Path) -> None:
    # no server: nothing is acknowledged, so the outbox keeps every sample the agent took
    cfg = agent_config(pki, broker, "HN00130001", tmp_path / "a", sampling_interval=5, link="batch_interval_s = 0")
    agent = AgentProc(cfg, tmp_path / "a.log").start()
    try:
        msgs = received(notify_socket, time.time() + 11)
    finally:
        agent.stop()
    msgs += received(notify_socket, time.time() + 0.5)
    samples = sqlite_count(tmp_path / "a" / "outbox.sqlite", "select count(*) from outbox where kind='s'")
    texts = [m for _, m in msgs]
    assert texts[0] == "READY=1" and texts.count("READY=1") == 1, texts
    assert not any(m.startswith("WATCHDOG_USEC=") for m in texts), "300 s outlasts two 5 s intervals: left alone"
    feeds = texts.count("WATCHDOG=1")
    assert feeds >= 2, texts
    assert feeds == samples, f"one feed per sample taken and stored, no other: {feeds} feeds, {samples} samples"


def test_a_long_interval_raises_the_watchdog_timeout(pki, broker, notify_socket: socket.socket, tmp_path: Path) -> None:
    cfg = agent_config(pki, broker, "HN00130002", tmp_path / "b", sampling_interval=600)
    agent = AgentProc(cfg, tmp_path / "b.log").start()
    try:
        wait_for(lambda: "agent" in (tmp_path / "b.log").read_text(), 20, "the agent to start")
        msgs = [m for _, m in received(notify_socket, time.time() + 2)]
    finally:
        agent.stop()
    assert msgs[:2] == ["READY=1", f"WATCHDOG_USEC={(2 * 600 + 60) * 1_000_000}"], msgs
