"""``posfleet diag``'s shared behaviour (issue 14, Engineer CLI), through the real commands against the emulators:
the language of the output, progress while a modem is silent, choosing the modem's profile from its model, one
verdict for the JSON and the exit code, one mapping from driver errors to exit codes, SAM errors named."""

from __future__ import annotations

import ast
import json
import string
from pathlib import Path

import pytest
from click.testing import CliRunner

from drivers.errors import (
    DeviceFault,
    DeviceNotFound,
    DriverError,
    NotSupported,
    ProtocolError,
    Timeout,
    exit_code,
)
from posfleet import cli_diag_capture, cli_diag_idcard, cli_diag_modem, cli_diag_printer
from posfleet.cli_diag_common import LABELS, LANGS
from posfleet.diagconsole import connect as diag_connect
from posfleet.diagconsole import remote as diag_remote
from simulator.emulators import idcard as idcard_emu
from simulator.emulators import modem as modem_emu
from simulator.emulators import printer as printer_emu

ROOT = Path(__file__).resolve().parents[2]
ICCID = "898602F9091830030220"


def run(cmd, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cmd.command, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def served():
    started = []

    def start(kind: str, name: str, **kwargs):
        if kind == "modem":
            dev = modem_emu.serve(name, **kwargs)
        elif kind == "printer":
            emu = printer_emu.PrinterEmulator(name)
            emu.faults.update(kwargs.get("faults", ()))
            dev = printer_emu.serve(name, emu)
        else:
            dev = idcard_emu.serve(**kwargs)
        started.append(dev)
        return dev

    yield start
    for dev in started:
        dev.stop()


# ------------------------------------------------------------------------------------------------ language

def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def test_every_label_has_both_languages_with_the_same_placeholders():
    assert LANGS == ("zh", "en")
    for key, (zh, en) in LABELS.items():
        assert zh.strip() and en.strip(), key
        assert _fields(zh) == _fields(en), key


def test_every_label_the_commands_ask_for_exists():
    """Each literal say(lang, "key") in the diag commands names a key of the one table."""
    files = [*ROOT.glob("posfleet/cli_diag_*.py"), *ROOT.glob("posfleet/diagconsole/*.py")]
    used: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "say" and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)):
                used.add(node.args[1].value)
    assert len(used) > 60
    assert sorted(used - set(LABELS)) == []


def test_modem_output_is_chinese_by_default_and_english_on_request(served):
    dev = served("modem", "quectel-ec25", iccid=ICCID)
    zh = run(cli_diag_modem, "--port", dev.path)
    assert zh.exit_code == 0, zh.output
    assert "4G 模块" in zh.stdout and "正常" in zh.stdout and "运营商" in zh.stdout and "信号" in zh.stdout
    en = run(cli_diag_modem, "--port", dev.path, "--lang", "en")
    assert en.stdout.startswith("modem on ") and "operator:" in en.stdout and "运营商" not in en.stdout
    env = run(cli_diag_modem, "--port", dev.path, env={"POSFLEET_LANG": "en"})
    assert env.stdout.startswith("modem on ")


def test_printer_idcard_capture_speak_chinese_by_default(served, tmp_path):
    p = served("printer", "generic-58mm", faults=["printer_paper_out"])
    res = run(cli_diag_printer, "--port", p.path)
    assert res.exit_code == 6 and "打印机故障：缺纸" in res.stdout
    r = served("idcard", "generic-sam")
    res = run(cli_diag_idcard, "--port", r.path)
    assert res.exit_code == 0 and "SAM 状态：正常" in res.stdout and "通过" in res.stdout
    res = run(cli_diag_capture, "--kind", "printer", "--port", p.path, "--out", str(tmp_path / "c"))
    assert res.exit_code == 6 and "已记录" in res.stdout and "打印机" in res.stdout


def test_modem_on_a_3g_cell_shows_rscp_and_ecio_and_the_sim_error_code(served):
    dev = served("modem", "huawei-me909s", act=2, rscp_dbm=-85, ecio_db=-6.5, cpin_cme=100)
    res = run(cli_diag_modem, "--port", dev.path, "--json")
    d = _json(res)
    assert (d["signal"]["rscp_dbm"], d["signal"]["ecio_db"]) == (-85.0, -6.5)
    assert d["sim_error"] == {"code": 100, "meaning": "unknown"} and d["iccid"] == ICCID
    human = run(cli_diag_modem, "--port", dev.path, "--lang", "en")
    assert "RSCP -85.0 dBm, Ec/Io -6.5 dB" in human.stdout and "+CME ERROR: 100 (unknown)" in human.stdout


# ------------------------------------------------------------------------------------------------ progress

def test_silent_modem_shows_progress_on_stderr_and_json_stays_clean(served):
    dev = served("modem", "generic-3gpp", faults={"modem_unresponsive"})
    res = run(cli_diag_modem, "--port", dev.path, "--profile", "generic-3gpp", "--wait", "2.5", "--json")
    assert res.exit_code == 4
    assert json.loads(res.stdout)["check"]["reason"] == "modem not answering"  # stdout: the JSON alone
    assert "AT" in res.stderr and "2.5" in res.stderr and "等待" in res.stderr, res.stderr
    en = run(cli_diag_modem, "--port", dev.path, "--wait", "1.5", "--lang", "en")
    assert "waiting for the modem to answer AT" in en.stderr and "at most 1.5 s" in en.stderr


# ------------------------------------------------------------------------------------------------ profile

@pytest.mark.parametrize("name", ["quectel-ec20", "quectel-ec25", "simcom-sim7600", "huawei-me909s", "fibocom-l610"])
def test_without_profile_the_model_chooses_it(served, name):
    dev = served("modem", name, iccid=ICCID)
    res = run(cli_diag_modem, "--port", dev.path, "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert (d["profile"], d["profile_source"], d["iccid"]) == (name, "detected", ICCID)
    assert "hints" not in d


def test_unknown_model_says_which_profiles_exist_and_how_to_choose(served):
    dev = served("modem", "generic-3gpp")
    res = run(cli_diag_modem, "--port", dev.path, "--json")
    d = json.loads(res.stdout)
    assert (d["profile"], d["profile_source"]) == ("generic-3gpp", "fallback")
    assert "quectel-ec20" in d["hints"][0] and "--profile" in d["hints"][0]
    human = run(cli_diag_modem, "--port", dev.path)
    assert "型号未识别" in human.stdout and "--profile" in human.stderr and "simcom-sim7600" in human.stderr


def test_empty_iccid_with_a_ready_sim_gets_a_hint(served):
    dev = served("modem", "quectel-ec20", iccid=ICCID)  # generic-3gpp asks AT+CRSM, which a Quectel here refuses
    res = run(cli_diag_modem, "--port", dev.path, "--profile", "generic-3gpp", "--json")
    d = json.loads(res.stdout)
    assert d["sim"] == "ready" and d["iccid"] is None
    assert "ICCID" in d["hints"][0] and "quectel-ec20" in d["hints"][0]


# ------------------------------------------------------------------------------------------------ verdict

def _json(res) -> dict:
    d = json.loads(res.stdout)
    assert d["ok"] is (res.exit_code == 0) and d["exit_code"] == res.exit_code, (res.exit_code, d)
    return d


def test_json_ok_and_exit_code_agree_in_every_command(served, tmp_path):
    m = served("modem", "quectel-ec20")
    assert run(cli_diag_modem, "--port", m.path, "--json").exit_code == 0
    _json(run(cli_diag_modem, "--port", m.path, "--json"))
    bad = served("modem", "generic-3gpp", faults={"sim_missing"})
    assert _json(run(cli_diag_modem, "--port", bad.path, "--json"))["ok"] is False
    _json(run(cli_diag_modem, "--port", str(tmp_path / "none"), "--profile", "generic-3gpp", "--json"))
    p = served("printer", "generic-58mm", faults=["printer_cover_open"])
    assert _json(run(cli_diag_printer, "--port", p.path, "--json"))["exit_code"] == 6
    r = served("idcard", "generic-sam")
    r.emulator.faults.add("sam_self_test_failed")
    assert _json(run(cli_diag_idcard, "--port", r.path, "--json"))["exit_code"] == 6
    assert _json(run(cli_diag_capture, "--kind", "idcard", "--port", r.path, "--out", str(tmp_path / "cap"),
                     "--json"))["exit_code"] == 6


# ------------------------------------------------------------------------------------------------ exit codes

def test_one_mapping_from_driver_errors_to_exit_codes():
    assert [exit_code(e) for e in (DeviceNotFound("p", "gone"), Timeout("AT", 1.0), ProtocolError("x"),
                                   NotSupported("GS r"), DeviceFault("paper out"), DriverError("?"))] == [3, 4, 5, 5, 6, 5]


def test_no_command_keeps_a_mapping_of_its_own():
    """The four copies that drifted (NotSupported exited 6 in one command, 5 in others) are gone: no diag
    command or the capture turns an error class into an exit code itself (no EXIT_ name and no isinstance on
    an error class next to one)."""
    errors = {"DeviceNotFound", "Timeout", "NotSupported", "ProtocolError", "DeviceFault"}
    for path in [*ROOT.glob("posfleet/cli_diag_*.py"), *ROOT.glob("posfleet/diagconsole/*.py"),
                 ROOT / "drivers" / "capture.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                caught = {n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)}
                body = {n.id for stmt in node.body for n in ast.walk(stmt) if isinstance(n, ast.Name)}
                assert not (caught & errors and any(b.startswith("EXIT_") for b in body)), (path.name, node.lineno)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                assert not ({n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} & errors), \
                    (path.name, node.lineno)


@pytest.mark.parametrize("cmd", [cli_diag_modem, cli_diag_printer, cli_diag_idcard, cli_diag_capture, diag_remote])
def test_help_documents_the_exit_codes_in_both_languages(cmd):
    res = run(cmd, "--help")
    assert "退出码 / Exit codes" in res.output
    for code, zh in ((0, "通过"), (2, "用法错误"), (3, "找不到设备"), (4, "超时"), (6, "故障")):
        if cmd is diag_remote and code == 5:
            continue
        assert f"  {code}  {zh}" in res.output, (cmd.__name__, code)


def test_connect_takes_the_language_too():
    assert "--lang" in run(diag_connect, "--help").output


# ------------------------------------------------------------------------------------------------ ID card

def test_idcard_json_names_the_sam_error(served):
    r = served("idcard", "generic-sam")
    r.emulator.faults.add("sam_self_test_failed")
    res = run(cli_diag_idcard, "--port", r.path, "--json")
    d = _json(res)
    assert d["sam_ok"] is False and d["sam_error"] == {"sw3": "0x60", "reason": "SAM self-test failed"}
    human = run(cli_diag_idcard, "--port", r.path)
    assert "SAM 自检失败" in human.stdout and "0x60" in human.stdout
