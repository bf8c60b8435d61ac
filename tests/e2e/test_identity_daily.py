"""The real agent over a simulated day (its clock 17,280x: a day in 5 s): the modem and SIM identity goes out when
first seen and in the inventory at start and once a day, never in the samples; signal goes with every sample."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from simulator.emulators import modem
from tests.fleet import AgentProc, agent_config, wait_for
from wire.messages import Event, Sample

pytestmark = pytest.mark.timeout(60)

ICCID = "89860112345678901234"


def outbox_rows(path: Path) -> list[tuple[str, bytes]]:
    if not path.exists():
        return []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("select kind, body from outbox order by seq").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        con.close()


def test_identity_first_seen_and_daily_not_in_samples(pki, broker, tmp_path: Path) -> None:
    m = modem.serve("quectel-ec25", iccid=ICCID, imsi="460011234567890", plmn="46001")
    start = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
    # no fleet server: nothing is acknowledged, so everything the agent stored stays in its outbox to be read
    cfg = agent_config(pki, broker, "HN00090001", tmp_path / "a", sampling_interval=600,
                       clock={"speed": 17280, "start": start.isoformat(), "anchor": time.time()},
                       peripherals={"modem": (m.path, "quectel-ec25")})
    agent = AgentProc(cfg, tmp_path / "a.log").start()
    outbox = tmp_path / "a" / "outbox.sqlite"
    events = msgspec.msgpack.Decoder(Event)
    samples_dec = msgspec.msgpack.Decoder(Sample)

    def decoded() -> tuple[list[Event], list[Sample]]:
        rows = outbox_rows(outbox)
        evs = [events.decode(b) for k, b in rows if k == "e"]
        return evs, [samples_dec.decode(b) for k, b in rows if k == "s"]

    try:
        wait_for(lambda: [e for e in decoded()[0] if e.kind == "inventory" and e.data.get("iccid")
                          and e.ts >= start.timestamp() + 86400], 40, "the next day's inventory")
    finally:
        agent.stop()
        m.stop()
    evs, samples = decoded()
    days = {(e.ts - int(start.timestamp())) // 86400 for e in evs if e.kind == "inventory"}
    assert {0, 1} <= days, [(e.kind, e.ts) for e in evs]
    assert [e.kind for e in evs].count("identity") == 1, "identity again although nothing changed"
    ident = next(e for e in evs if e.kind == "identity").data
    assert (ident["iccid"], ident["imsi"], ident["carrier"]) == (ICCID, "460011234567890", "China Unicom")
    assert len(samples) >= 100  # a day of 10-minute slots, about 144
    assert all(s.csq is not None and s.signal_dbm is not None for s in samples[3:]), "signal in every sample"
    assert not any(ICCID in msgspec.json.encode(s).decode() for s in samples), "identity in a sample"
