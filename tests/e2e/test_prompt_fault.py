"""With the default batching (a batch when the oldest unsent sample is 10 minutes old, to keep the SIM's bytes low),
what the server must know promptly is not delayed: a fault goes out with the sample that first shows it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.emulators import printer
from tests.fleet import AgentProc, agent_config, wait_for


@pytest.fixture
def paper() -> Iterator[Any]:
    p = printer.serve("generic-58mm")
    yield p
    p.stop()


def printer_states(server, sn: str) -> list[int]:
    items = server.get(f"/api/v1/units/{sn}/samples", limit=100).json().get("items", [])
    return [s["checks"]["printer"][0] for s in items if "printer" in s["checks"]]


def test_a_fault_is_sent_at_once_despite_ten_minute_batches(pki, broker, server, paper, tmp_path: Path) -> None:
    sn = "HN00200001"
    cfg = agent_config(pki, broker, sn, tmp_path / "a", sampling_interval=5,
                       peripherals={"printer": (paper.path, "generic-58mm")})  # default link: batch_interval_s = 600
    agent = AgentProc(cfg, tmp_path / "a.log").start()
    try:
        # what is there when it connects goes at once (the server learns the unit is back)
        wait_for(lambda: printer_states(server, sn), 40, "the first sample")
        time.sleep(1)
        first = printer_states(server, sn)
        assert set(first) == {0}
        time.sleep(6)  # at least one more sample taken, held for the 10-minute batch
        assert printer_states(server, sn) == first, "ordinary samples wait for their batch"
        paper.emulator.faults.add("printer_paper_out")
        t0 = time.monotonic()
        wait_for(lambda: 1 in printer_states(server, sn), 20, "the paper-out fault at the server")
        assert time.monotonic() - t0 < 15, "sent with the sample that showed it, not with the next batch"
    finally:
        agent.stop()
