"""The real agent driving emulated peripherals over ptys, reporting to the real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulator.emulators import idcard, modem, printer
from tests.conftest import sqlite_count
from tests.fleet import AgentProc, agent_config, wait_for


@pytest.fixture
def devices():
    m = modem.serve("quectel-ec20", iccid="89860112345678901234", imsi="460011234567890", plmn="46001")
    p = printer.serve("generic-58mm")
    c = idcard.serve("generic-sam")  # a made-up person's card lies on the reader all along
    yield m, p, c
    for d in (m, p, c):
        d.stop()


def latest_checks(server, sn: str) -> dict:
    items = server.get(f"/api/v1/units/{sn}/samples", limit=1).json().get("items", [])
    return items[0]["checks"] if items else {}


def test_peripheral_faults_identity_and_privacy(pki, broker, server, devices, tmp_path: Path) -> None:
    m, p, c = devices
    sn = "HN00080001"
    cfg = agent_config(pki, broker, sn, tmp_path / "a", sampling_interval=5, link="batch_interval_s = 0",
                       peripherals={"modem": (m.path, "quectel-ec20"), "printer": (p.path, "generic-58mm"),
                                    "idcard": (c.path, "generic-sam")})
    agent = AgentProc(cfg, tmp_path / "a.log").start()
    try:
        wait_for(lambda: latest_checks(server, sn).get("printer", [None])[0] == 0, 40, "healthy samples")
        checks = latest_checks(server, sn)
        assert {k: v[0] for k, v in checks.items()} == {"storage": 0, "modem": 0, "printer": 0, "idcard": 0}
        sample = server.get(f"/api/v1/units/{sn}/samples", limit=1).json()["items"][0]
        assert sample["signal_dbm"] is not None and sample["csq"] is not None
        assert sample["cell_id"] is not None and sample["tac"] is not None, "serving cell for outage attribution"
        assert sample["data_bytes"] is not None and sample["data_bytes"] >= 0, "SIM data counter (+QGDCNT)"
        wait_for(lambda: (server.get(f"/api/v1/units/{sn}").json().get("identity") or {}).get("iccid")
                 == "89860112345678901234", 20, "modem identity reported")
        ident = server.get(f"/api/v1/units/{sn}").json()["identity"]
        assert ident["imsi"] == "460011234567890" and ident["carrier"] == "China Unicom"

        # paper runs out: the next sample says so, with the reason
        p.emulator.faults.add("printer_paper_out")
        wait_for(lambda: latest_checks(server, sn).get("printer", [0])[0] == 1, 30, "printer fault reported")
        assert "paper" in latest_checks(server, sn)["printer"][1]
        p.emulator.faults.discard("printer_paper_out")
        c.emulator.faults.add("idcard_reader_fault")
        wait_for(lambda: latest_checks(server, sn).get("idcard", [0])[0] == 1, 30, "reader fault reported")
        assert latest_checks(server, sn)["printer"][0] == 0, "printer recovered"

        # a SIM swap is an event
        m.emulator.iccid, m.emulator.imsi, m.emulator.plmn = "89860099999999999999", "460009999999999", "46000"
        wait_for(lambda: sqlite_count(server.db, f"select count(*) from events where sn='{sn}' and kind='sim_changed'") == 1,
                 30, "sim_changed event")
        ident = server.get(f"/api/v1/units/{sn}").json()["identity"]
        assert ident["iccid"] == "89860099999999999999" and ident["carrier"] == "China Mobile"
    finally:
        agent.stop()
    # Privacy: in normal operation the agent never asks the reader for a card...
    assert not [cmd for cmd in c.emulator.received if cmd.startswith(("read", "find", "select"))], c.emulator.received
    # ...so no card field can reach its log, its outbox or the server.
    card = idcard.SyntheticCard.resident().text
    stored = json.dumps([server.get(f"/api/v1/units/{sn}/samples", limit=500).json(),
                         server.get(f"/api/v1/units/{sn}").json()], ensure_ascii=False)
    for secret in (card.name, card.id_number, card.address):
        assert secret not in (tmp_path / "a.log").read_text()
        assert secret not in stored


def test_printer_missing_at_boot_is_retried_and_found(pki, broker, server, tmp_path: Path) -> None:
    sn = "HN00080002"
    port = tmp_path / "ttyPRINTER"  # nothing there yet: the printer is unplugged at boot
    cfg = agent_config(pki, broker, sn, tmp_path / "b", sampling_interval=5, link="batch_interval_s = 0",
                       peripherals={"printer": (str(port), "generic-58mm")})
    agent = AgentProc(cfg, tmp_path / "b.log").start()
    dev = None
    try:
        wait_for(lambda: latest_checks(server, sn).get("printer", [0])[0] == 2, 30, "printer reported missing")
        assert latest_checks(server, sn)["printer"][1].startswith(f"not found at {port}"), "unknown, with the reason"
        assert agent.alive(), "a missing peripheral is never fatal"
        dev = printer.serve("generic-58mm")
        port.symlink_to(dev.path)  # plugged in
        wait_for(lambda: latest_checks(server, sn).get("printer", [1])[0] == 0, 60, "printer found on a retry")
    finally:
        agent.stop()
        if dev:
            dev.stop()
    log = (tmp_path / "b.log").read_text()
    assert log.count("printer: unknown") == 1, "logged once per state change, not every sample"
    assert "printer: ok" in log
