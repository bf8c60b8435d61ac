"""``posfleet diag idcard`` against the emulated reader: output and documented exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from posfleet.cli_diag_idcard import command
from simulator.emulators.idcard import DEFAULT_SAM_ID, SyntheticCard, serve


@pytest.fixture
def device():
    pty = serve(card=SyntheticCard.resident())
    yield pty
    pty.stop()


def run(*args: str):
    return CliRunner().invoke(command, list(args))


def test_json_without_read_has_no_card(device):
    result = run("--port", device.path, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"sam_id": DEFAULT_SAM_ID, "sam_ok": True, "ok": True, "exit_code": 0}
    assert not any(name.startswith("find") for name in device.emulator.received)


def test_human_output_pass(device):
    result = run("--port", device.path, "--lang", "en")
    assert result.exit_code == 0
    assert "SAM status: OK" in result.stdout and DEFAULT_SAM_ID in result.stdout and "PASS" in result.stdout


def test_read_with_no_card_still_passes():
    pty = serve(card=None)
    try:
        result = run("--port", pty.path, "--json", "--read")
    finally:
        pty.stop()
    assert result.exit_code == 0
    assert json.loads(result.stdout)["card"]["present"] is False


@pytest.mark.parametrize(
    ("fault", "code"),
    [("idcard_reader_fault", 4), ("garbage", 0), ("bad_checksum", 5), ("sam_self_test_failed", 6)],
)
def test_exit_codes_per_fault(device, fault, code):
    device.emulator.faults.add(fault)
    result = run("--port", device.path, "--json")
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout)["sam_ok"] is (code == 0)


def test_missing_port_exit_3():
    result = run("--port", "/dev/no-such-reader", "--json")
    assert result.exit_code == 3
    assert "not found" in json.loads(result.stdout)["error"]


def test_failed_read_keeps_the_card_keys_null(device):
    device.emulator.faults.add("idcard_reader_fault")
    result = run("--port", device.path, "--json", "--read")
    assert result.exit_code == 4
    d = json.loads(result.stdout)
    assert (d["sam_id"], d["sam_ok"]) == (None, False)
    assert d["card"] == {"present": None, "type": None, "name_masked": None, "id_masked": None}


def test_bad_profile_is_a_usage_error():
    result = run("--port", "/dev/null", "--profile", "no-such-reader")
    assert result.exit_code == 2 and "no-such-reader" in result.output


def test_help_documents_exit_codes():
    result = run("--help")
    assert result.exit_code == 0
    for line in ("0  通过", "pass: the SAM answers OK", "3  找不到设备", "reader not found", "4  超时", "timeout",
                 "5  协议错误", "protocol error", "6  故障", "fault (the SAM reports an error"):
        assert line in result.output
