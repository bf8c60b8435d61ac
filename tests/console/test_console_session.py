"""Idle sessions are closed (and the shell's runner reconnects); the audit trail is handed to
the agent as telemetry events exactly once, across restarts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.console.audit import AuditLog
from posfleet.diagconsole.client import ConsoleClient, Refused, SessionClosed
from posfleet.diagconsole.shell import Runner
from tests.console.cable import Cable
from tests.console.conftest import console_toml
from tests.fleet import AgentProc, Broker, Pki, agent_config, wait_for


def _console_agent(pki: Pki, tmp_path: Path, sn: str, **console: float) -> Iterator[tuple[Cable, Path]]:
    broker = Broker(pki, tmp_path / "broker").start()
    revoked = tmp_path / "revoked.json"
    revoked.write_text('{"revoked": []}')
    with Cable() as cable:
        config = agent_config(pki, broker, sn, tmp_path / "data", sampling_interval=5,
                              extra=console_toml(tmp_path, pki, cable.terminal_path, revoked, **console))  # type: ignore[arg-type]
        agent = AgentProc(config, tmp_path / "agent.log").start()
        try:
            yield cable, tmp_path / "data"
        finally:
            agent.stop()
            broker.stop()


@pytest.fixture
def idle_agent(pki: Pki, tmp_path: Path) -> Iterator[tuple[Cable, Path]]:
    yield from _console_agent(pki, tmp_path, "T-IDLE-1", idle=0.02)


@pytest.fixture
def small_reply_agent(pki: Pki, tmp_path: Path) -> Iterator[tuple[Cable, Path]]:
    yield from _console_agent(pki, tmp_path, "T-SMALL-1", max_reply_bytes=REPLY_LIMIT)


REPLY_LIMIT = 6000


def test_replies_are_bounded(small_reply_agent: tuple[Cable, Path]) -> None:
    cable, _data_dir = small_reply_agent
    client = ConsoleClient(cable.laptop_path, ack_timeout=0.5)
    with client:
        wait_for(lambda: _try_hello(client), 20, "the console to answer")
        # every request is audited: in the log (long lines) and in the outbox (entries to list)
        for _ in range(80):
            client.call("logs", {"lines": 1, "grep": "x" * 110})
        logs = client.call("logs", {"lines": 500})
        sizes = [len(line.encode()) + 4 for line in logs["lines"]]
        assert sum(sizes) <= REPLY_LIMIT // 2 < sum(sizes) + 400 + 4, "lines up to half the reply budget"
        assert logs["shown"] < min(500, logs["matching"])
        # each audit record is an outbox entry (no server here to take them): 100 of them are over the limit
        wait_for(lambda: client.call("outbox", {"limit": 3})["count"] >= 100, 10, "100 entries in the outbox")
        with pytest.raises(Refused, match=f"over the console's limit of {REPLY_LIMIT}; ask for less") as exc:
            client.call("outbox", {"limit": 100})
        assert exc.value.code == "failed"
        assert client.call("status")["sn"] == "T-SMALL-1"  # the session goes on


def test_idle_session_is_closed_and_the_runner_reconnects(idle_agent: tuple[Cable, Path]) -> None:
    cable, data_dir = idle_agent
    client = ConsoleClient(cable.laptop_path, ack_timeout=0.3, retries=3)
    with client:
        wait_for(lambda: _try_hello(client), 20, "the console to answer")
        first = client.session
        time.sleep(1.6)  # idle_minutes = 0.02 (1.2 s)
        with pytest.raises(SessionClosed, match="idle"):
            client.call("status")
        runner = Runner(client)
        assert runner.run("status", {})["sn"] == "T-IDLE-1"  # a new session, opened for us
        assert client.session != first
    audit = AuditLog(data_dir / "console-audit.jsonl").read()
    assert any(r["event"] == "session_end" and r["session"] == first and "idle" in r["reason"] for r in audit)


def _try_hello(client: ConsoleClient) -> bool:
    from posfleet.diagconsole.client import ConsoleError

    try:
        client.hello()
        return True
    except ConsoleError:
        return False


def test_audit_events_are_handed_over_once(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "console-audit.jsonl")
    log.write(1000.0, "session_start", session="s1", client="t")
    log.write(1001.0, "command", session="s1", command="reboot", engineer="李工", result="ok")
    events = log.take_events()
    assert [(e.kind, e.ts, e.data["event"]) for e in events] == [("console", 1000, "session_start"),
                                                                  ("console", 1001, "command")]
    assert events[1].data["engineer"] == "李工"
    assert log.take_events() == []
    log.write(1002.0, "session_end", session="s1", reason="bye")
    again = AuditLog(tmp_path / "console-audit.jsonl")  # after a restart
    assert [e.data["event"] for e in again.take_events()] == ["session_end"]
    assert again.take_events() == []


def test_audit_masks_id_numbers(tmp_path: Path) -> None:
    from simulator.emulators.idcard import SyntheticCard

    number = SyntheticCard.resident().text.id_number
    log = AuditLog(tmp_path / "a.jsonl")
    log.write(1.0, "command", command="logs", args={"grep": number})
    assert number not in (tmp_path / "a.jsonl").read_text()
    assert number not in str(log.take_events()[0].data)


def test_a_console_port_that_appears_later_is_picked_up(pki: Pki, tmp_path: Path) -> None:
    """A USB gadget port (/dev/ttyGS0) exists only once the gadget is set up: the agent starts
    without it, keeps working, and serves the console as soon as the port is there."""
    broker = Broker(pki, tmp_path / "broker").start()
    revoked = tmp_path / "revoked.json"
    revoked.write_text('{"revoked": []}')
    gadget = tmp_path / "ttyGS0"
    with Cable() as cable:
        config = agent_config(pki, broker, "T-GADGET-1", tmp_path / "data",
                              extra=console_toml(tmp_path, pki, str(gadget), revoked))
        log = tmp_path / "agent.log"
        agent = AgentProc(config, log).start()
        try:
            wait_for(lambda: "console port" in log.read_text(), 20, "the agent to find the port missing")
            time.sleep(2.5)  # one more try (every 2 s), which must not log again
            assert agent.alive()
            gadget.symlink_to(cable.terminal_path)  # the gadget comes up
            client = ConsoleClient(cable.laptop_path, ack_timeout=0.3, retries=3)
            with client:
                wait_for(lambda: _try_hello(client), 10, "the console on the new port")
                assert client.call("status")["sn"] == "T-GADGET-1"
            text = log.read_text()
            assert text.count("not available (retrying)") == 1, "logged once, not every 2 s"
            assert f"console port {gadget} open" in text
        finally:
            agent.stop()
            broker.stop()
