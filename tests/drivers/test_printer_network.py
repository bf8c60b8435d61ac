"""A network printer (raw TCP, port 9100 style): the same driver and diag command through ``socket://``, against
the printer emulator twin behind a loopback TCP port."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
from click.testing import CliRunner

from drivers.printer import Printer
from posfleet.cli_diag_printer import command
from simulator.emulators.printer import PrinterEmulator
from simulator.emulators.tcp import TcpDevice

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def network_printer():
    emu = PrinterEmulator("generic-80mm")
    with TcpDevice(emu) as dev:
        yield dev.url, emu


def test_status_faults_and_test_page_over_the_network(network_printer) -> None:
    url, emu = network_printer
    with Printer(url, "generic-80mm") as p:
        assert p.check().state == "ok"
        emu.faults.add("printer_cover_open")
        assert p.check().reason == "cover open"
        emu.faults.discard("printer_cover_open")
        emu.faults.add("printer_offline")
        res = p.check()
        assert (res.state, res.reason) == ("fault", "printer not answering")
        emu.faults.discard("printer_offline")
        p.print_test_page("HN00010001", datetime(2026, 11, 2, 9, 30), agent_version="0.1.0")
    time.sleep(0.1)
    assert emu.printed.qr == ["HN00010001"] and emu.printed.cuts == ["partial"]
    assert any("HN00010001" in line for line in emu.printed.lines)


def test_diag_printer_over_the_network(network_printer) -> None:
    url, emu = network_printer
    res = CliRunner().invoke(command, ["--port", url, "--profile", "generic-80mm", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert (d["online"], d["paper"], d["cover_open"], d["errors"]) == (True, "ok", False, [])
    emu.faults.add("printer_paper_out")
    res = CliRunner().invoke(command, ["--port", url, "--profile", "generic-80mm", "--json"])
    assert res.exit_code == 6 and json.loads(res.output)["paper"] == "out"


def test_nothing_listening_is_not_found() -> None:
    with TcpDevice(PrinterEmulator("generic-58mm")) as dev:
        url = dev.url
    res = CliRunner().invoke(command, ["--port", url, "--json"])
    assert res.exit_code == 3, res.output
    assert json.loads(res.output)["paper"] is None
