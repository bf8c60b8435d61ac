"""Capture from each emulator over a pty, replay into the real driver: same verdict.

Source of every capture here: the emulator twins in simulator/emulators (no real device dumps).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from drivers.capture import Outcome, Recorder, diagnose, load, make_meta
from drivers.idcard import IdCardReader
from posfleet.cli_diag_capture import command
from simulator.emulators import idcard, printer
from simulator.emulators.modem import ModemEmulator
from simulator.emulators.pty import PtyDevice
from simulator.emulators.replay import ReplayEmulator, serve

pytestmark = pytest.mark.timeout(20)


def capture_cli(dev: PtyDevice, tmp_path: Path, *args: str) -> tuple[int, Path, str]:
    out = tmp_path / "capture"
    result = CliRunner().invoke(command, ["--port", dev.path, "--out", str(out), *args])
    dev.stop()
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, out, result.output


def replay(folder: Path, started) -> tuple[dict, ReplayEmulator]:  # type: ignore[no-untyped-def]
    cap = load(folder)
    dev = started(serve(cap))
    outcome = diagnose(cap.meta.kind, dev.path, cap.meta.profile, read_card=cap.meta.read_card)
    dev.stop()
    return json.loads(json.dumps({"state": outcome.state, "reason": outcome.reason, "exit_code": outcome.exit_code,
                                  "detail": outcome.detail})), dev.emulator  # type: ignore[return-value]


def recorded(folder: Path) -> dict:  # type: ignore[type-arg]
    o = json.loads((folder / "meta.json").read_text())["outcome"]
    return {k: o[k] for k in ("state", "reason", "exit_code", "detail")}


@pytest.mark.parametrize(
    ("profile", "faults", "code", "state"),
    [("quectel-ec20", [], 0, "ok"), ("huawei-me909s", [], 0, "ok"), ("generic-3gpp", ["sim_missing"], 6, "fault")],
)
def test_modem_capture_replays_to_the_same_verdict(tmp_path, started, profile, faults, code, state):
    dev = PtyDevice(ModemEmulator(profile, faults=faults)).start()
    exit_code, folder, output = capture_cli(dev, tmp_path, "--kind", "modem", "--profile", profile)
    assert exit_code == code, output
    assert recorded(folder)["state"] == state
    again, emu = replay(folder, started)
    assert again == recorded(folder)
    emu.verify()
    assert "AT+CPIN?" in [s.label for s in emu.steps]


@pytest.mark.parametrize(("faults", "code", "reason"), [((), 0, ""), (("printer_paper_out",), 6, "paper out"),
                                                        (("printer_cover_open",), 6, "cover open")])
def test_printer_capture_replays_to_the_same_verdict(tmp_path, started, faults, code, reason):
    emu = printer.PrinterEmulator("generic-58mm")
    emu.faults.update(faults)
    exit_code, folder, output = capture_cli(printer.serve("generic-58mm", emu), tmp_path, "--kind", "printer")
    assert exit_code == code, output
    again, replayer = replay(folder, started)
    assert again == recorded(folder)
    assert again["reason"] == reason
    replayer.verify()
    assert [s.label for s in replayer.steps] == ["DLE EOT 1", "DLE EOT 2", "DLE EOT 3", "DLE EOT 4"]


def test_idcard_capture_with_a_card_read_replays_to_the_same_masked_card(tmp_path, started):
    exit_code, folder, output = capture_cli(idcard.serve(card="resident"), tmp_path, "--kind", "idcard",
                                            "--read-card")
    assert exit_code == 0, output
    card = recorded(folder)["detail"]["card"]
    assert card == {"present": True, "type": "resident", "name_masked": "申**", "id_masked": "1101**********1284"}
    again, emu = replay(folder, started)
    assert again == recorded(folder)
    emu.verify()


def test_a_slow_reader_is_replayed_slow_enough_to_time_out_again(tmp_path, started):
    """The reply delay is part of the recording: a SAM that answered after its timeout still does."""
    dev = idcard.serve(card=None)
    dev.emulator.faults.add("slow")
    dev.emulator.slow_delay = 1.3  # SAM status timeout is 1.0 s in generic-sam
    exit_code, folder, _ = capture_cli(dev, tmp_path, "--kind", "idcard")
    assert exit_code == 4
    again, _ = replay(folder, started)
    assert again == recorded(folder)
    assert again["reason"] == "SAM not answering"


@pytest.mark.parametrize("kind", ["resident", "long_term", "hk_mo_tw", "foreigner"])
def test_every_card_type_reads_back_identically_from_its_redacted_capture(tmp_path, started, kind):
    """MaskedCard fields the driver derives (check digit, birth agreement, birth year, expiry,
    gender, nation, masked address) survive the synthetic text block."""
    card = getattr(idcard.SyntheticCard, kind)()
    card.appended_address = "四川省成都市测试区新址路9号"
    dev = idcard.serve(card=card)
    rec = Recorder("idcard")
    reader = rec.attach(IdCardReader(dev.path))
    with reader:
        live = reader.read_placed_card()
        live_address = reader.read_address()
    dev.stop()
    folder = rec.save(tmp_path / "cap", make_meta("idcard", "generic-sam", dev.path,
                                                  Outcome("ok", "", 0), read_card=True))
    rdev = started(serve(folder))
    with IdCardReader(rdev.path) as again:
        replayed = again.read_placed_card()
        replayed_address = again.read_address()
    assert live is not None and replayed == live
    assert replayed_address == live_address
    rdev.emulator.verify()


def test_capture_refuses_to_overwrite_and_read_card_needs_idcard(tmp_path, started):
    dev = started(printer.serve())
    runner = CliRunner()
    first = runner.invoke(command, ["--kind", "printer", "--port", dev.path, "--out", str(tmp_path), "--lang", "en"])
    assert first.exit_code == 0, first.output
    assert "captured 4 requests" in first.output
    again = runner.invoke(command, ["--kind", "printer", "--port", dev.path, "--out", str(tmp_path)])
    assert again.exit_code == 2 and "already holds a capture" in again.output
    wrong = runner.invoke(command, ["--kind", "modem", "--port", dev.path, "--out", str(tmp_path / "x"),
                                    "--read-card"])
    assert wrong.exit_code == 2 and "--read-card" in wrong.output
    bad = runner.invoke(command, ["--kind", "modem", "--port", dev.path, "--out", str(tmp_path / "y"),
                                  "--profile", "no-such-modem"])
    assert bad.exit_code == 2 and "no-such-modem" in bad.output


def test_missing_port_is_exit_3_and_the_capture_says_so(tmp_path):
    result = CliRunner().invoke(command, ["--kind", "printer", "--port", str(tmp_path / "ttyUSB9"),
                                          "--out", str(tmp_path / "cap"), "--json"])
    assert result.exit_code == 3, result.output
    assert json.loads(result.output)["state"] == "unknown"
    cap = load(tmp_path / "cap")
    assert cap.meta.outcome.exit_code == 3
    assert [ev.dir for ev in cap.events] == ["error"]
