"""The agent's peripheral ports against real emulators on ptys: one owner per serial port (a health check waits
for a self-test or command holding the port), and a peripheral missing at boot is retried with doubling backoff,
never fatal, logged once per state change."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from agent.config import PeripheralConfig, PeripheralsConfig
from agent.peripherals import PeripheralSet
from simulator.emulators import printer

pytestmark = pytest.mark.timeout(30)


def test_a_check_waits_for_whoever_holds_the_port() -> None:
    dev = printer.serve("generic-58mm")
    ps = PeripheralSet(PeripheralsConfig(printer=PeripheralConfig(port=dev.path, profile="generic-58mm")))
    results: list[dict] = []
    try:
        with ps.use("printer") as p:  # a self-test or command has the port
            checker = threading.Thread(target=lambda: results.append(ps.check_all()))
            checker.start()
            time.sleep(0.3)
            assert checker.is_alive() and not results, "the health check did not wait for the port"
            sent_before = dev.emulator.transcript.count(b"\x10\x04")
            assert p.check().state == "ok"  # the holder talks alone on the line
            assert dev.emulator.transcript.count(b"\x10\x04") == sent_before + 4
        checker.join(5)
        assert results and results[0]["printer"].state == 0
    finally:
        ps.close()
        dev.stop()


def test_missing_at_boot_retried_with_backoff_and_logged_once(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="agent.peripherals")
    link = tmp_path / "ttyPRINTER"
    ps = PeripheralSet(PeripheralsConfig(printer=PeripheralConfig(port=str(link), profile="generic-58mm")))
    port = ps.ports["printer"]
    dev = None
    try:
        first = ps.check_all()["printer"]
        assert first.state == 2 and first.reason.startswith(f"not found at {link}")  # unknown, never an exception
        assert port.backoff == 10.0 and port.next_retry > time.monotonic() + 4  # next try in 5 s, then 10 s
        dev = printer.serve("generic-58mm")
        link.symlink_to(dev.path)  # plugged in, but the backoff has not run out: no new attempt yet
        assert ps.check_all()["printer"].state == 2
        assert dev.emulator.transcript == b""
        port.next_retry = 0.0  # the 5 s have passed
        assert ps.check_all()["printer"].state == 0
        assert port.backoff == 5.0, "backoff starts again from 5 s once the port opened"
    finally:
        ps.close()
        if dev is not None:
            dev.stop()
    states = [r.getMessage() for r in caplog.records if r.getMessage().startswith("printer: ")]
    assert len(states) == 2 and states[0].startswith(f"printer: unknown (not found at {link}") and \
        states[1] == "printer: ok", states  # two checks said "unknown", one line for it
