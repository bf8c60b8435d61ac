"""``posfleet diag printer`` against the emulated printer: output and documented exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from posfleet.cli_diag_printer import command
from simulator.emulators.printer import PrinterEmulator, serve
from simulator.emulators.pty import PtyDevice


@pytest.fixture
def printer_port():
    emu = PrinterEmulator("generic-58mm")
    dev = serve("generic-58mm", emu)
    try:
        yield dev.path, emu
    finally:
        dev.stop()


def run(*args):
    return CliRunner().invoke(command, list(args))


def test_healthy_printer_passes_with_json(printer_port):
    port, _ = printer_port
    res = run("--port", port, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert (data["online"], data["paper"], data["cover_open"], data["errors"]) == (True, "ok", False, [])


@pytest.mark.parametrize(
    ("fault", "key", "value"),
    [("printer_paper_out", "paper", "out"), ("printer_cover_open", "cover_open", True)],
)
def test_printer_fault_exits_6(printer_port, fault, key, value):
    port, emu = printer_port
    emu.faults.add(fault)
    res = run("--port", port, "--json")
    assert res.exit_code == 6
    data = json.loads(res.output)
    assert data[key] == value and data["online"] is False


def test_near_end_passes_and_says_so(printer_port):
    port, emu = printer_port
    emu.faults.add("paper_near_end")
    res = run("--port", port, "--lang", "en")
    assert res.exit_code == 0
    assert "paper near_end" in res.output and "paper near end" in res.output
    zh = run("--port", port)  # Chinese by default
    assert zh.exit_code == 0 and "纸张将尽" in zh.output and "纸将用完" in zh.output


def test_silent_printer_exits_4_and_never_claims_paper(printer_port):
    port, emu = printer_port
    emu.faults.add("printer_offline")
    res = run("--port", port, "--json")
    assert res.exit_code == 4
    data = json.loads(res.output)
    assert data["online"] is False and data["paper"] is None
    assert data["errors"] == ["not answering"]


def test_missing_port_exits_3():
    res = run("--port", "/dev/no-such-printer", "--json")
    assert res.exit_code == 3
    assert json.loads(res.output)["errors"] == ["not found"]


class _Chatter:
    """Something on the port that answers every byte with bytes no printer would send."""

    def feed(self, data: bytes) -> bytes:
        return b"\x00" * len(data)

    def tick(self) -> None:
        return None


def test_garbage_answer_exits_5():
    with PtyDevice(_Chatter()) as dev:
        res = run("--port", dev.path, "--lang", "en")
    assert res.exit_code == 5
    assert "PROTOCOL ERROR" in res.output


def test_test_page_option_prints_page(printer_port):
    port, emu = printer_port
    res = run("--port", port, "--test-page", "--sn", "HN00010002", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["test_page"] == "printed"
    assert emu.printed.qr == ["HN00010002"] and emu.printed.cuts


def test_unknown_profile_is_a_usage_error(printer_port):
    port, _ = printer_port
    res = run("--port", port, "--profile", "nope-58mm")
    assert res.exit_code == 2
    assert "generic-58mm" in res.output  # names the profiles that exist


def test_help_documents_exit_codes():
    res = run("--help")
    for code in ("0  通过", "pass: online", "3  找不到设备", "device not found", "4  超时", "timeout",
                 "5  协议错误", "protocol error", "6  故障", "fault: paper out"):
        assert code in res.output
