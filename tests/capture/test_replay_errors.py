"""Replay tells what went wrong and where: a driver that asks something else, garbage from the
host, a driver that stops early, a broken capture file.

Source: the committed emulator captures in tests/drivers/testcases/ and literal broken files.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import msgspec
import pytest

from drivers.capture import CaptureError, load
from drivers.errors import Timeout
from drivers.modem import Modem, load_profile
from drivers.transport import Transport
from simulator.emulators.replay import ReplayEmulator, ReplayError, serve

pytestmark = pytest.mark.timeout(20)

TESTCASES = Path(__file__).resolve().parent.parent / "drivers" / "testcases"
QUECTEL_OK = TESTCASES / "quectel-ec20" / "ok"
PRINTER_OK = TESTCASES / "generic-58mm" / "ok"


def quick_generic_modem(path: str) -> Modem:
    prof = load_profile("generic-3gpp")
    fast = msgspec.structs.replace(prof.timeouts, iccid=0.4, probe=0.3, sim_busy=0.2)
    return Modem(path, msgspec.structs.replace(prof, timeouts=fast))


def test_a_driver_that_asks_something_else_is_named_at_its_step(started):
    """The Quectel capture replayed with the generic profile: its ICCID read is AT+CRSM, not AT+QCCID."""
    dev = started(serve(QUECTEL_OK))
    with quick_generic_modem(dev.path) as modem:
        modem.init()
        with pytest.raises(Timeout):  # the replay goes silent, as a device that did not understand
            modem.status()
    emu: ReplayEmulator = dev.emulator  # type: ignore[assignment]
    with pytest.raises(ReplayError) as info:
        emu.verify()
    message = str(info.value)
    step = info.value.step
    assert step is not None and step.label == "AT+QCCID"
    assert f"diverged at step {step.index} (AT+QCCID): expected {b'AT+QCCID'.hex(' ')}" in message
    assert b"AT+CRSM".hex(" ") in message  # what the host sent instead
    assert str(QUECTEL_OK) in message


def test_garbage_from_the_host_names_the_first_step(started):
    dev = started(serve(PRINTER_OK))
    with Transport(dev.path) as port:
        port.write(b"\x00\xffjunk")
        assert port.drain(quiet=0.1, limit=0.5) == b""  # a confused device says nothing
    with pytest.raises(ReplayError, match=r"diverged at step 0 \(DLE EOT 1\): expected 10 04 01 \(3 bytes\), "
                                          r"host sent 00 ff 6a 75 6e 6b \(6 bytes\)"):
        dev.emulator.verify()


def test_a_driver_that_stops_early_is_told_which_step_it_never_asked(started):
    dev = started(serve(PRINTER_OK))
    with Transport(dev.path) as port:
        port.write(b"\x10\x04\x01")
        assert len(port.read_exact(1, 1.0, "DLE EOT 1")) == 1
    with pytest.raises(ReplayError, match=r"ended early: step 1 \(DLE EOT 2\) was never requested \(3 of 4"):
        dev.emulator.verify()


def test_a_request_split_across_writes_still_matches(started):
    dev = started(serve(PRINTER_OK))
    with Transport(dev.path) as port:
        for n in (1, 2, 3, 4):
            port.write(b"\x10")
            time.sleep(0.03)  # the emulator sees the first byte alone
            port.write(b"\x04" + bytes([n]))
            assert len(port.read_exact(1, 1.0, f"DLE EOT {n}")) == 1
    dev.emulator.verify()


def test_writing_past_the_end_of_the_recording_is_a_mismatch(started):
    dev = started(serve(PRINTER_OK))
    with Transport(dev.path) as port:
        for n in (1, 2, 3, 4):  # every recorded step answered (not a fixed sleep: under load the emulator lagged)
            port.write(b"\x10\x04" + bytes([n]))
            assert len(port.read_exact(1, 5.0, f"DLE EOT {n}")) == 1
        port.write(b"\x10\x04\x01")
        deadline = time.monotonic() + 10
        while True:  # the emulator notes the extra write when it reads it
            try:
                dev.emulator.verify()
            except ReplayError as err:
                if "after the last recorded step" in str(err) or time.monotonic() > deadline:
                    break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    with pytest.raises(ReplayError, match="after the last recorded step: expected nothing, host sent 10 04 01"):
        dev.emulator.verify()


def broken_copy(tmp_path: Path, transcript: bytes | None = None, meta: bytes | None = None) -> Path:
    folder = tmp_path / "case"
    shutil.copytree(PRINTER_OK, folder)
    if transcript is not None:
        (folder / "transcript.jsonl").write_bytes(transcript)
    if meta is not None:
        (folder / "meta.json").write_bytes(meta)
    return folder


def test_a_garbled_transcript_line_is_named(tmp_path):
    lines = (PRINTER_OK / "transcript.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = b"\x00\x17garbage from a bad copy\n"
    with pytest.raises(CaptureError, match=r"transcript.jsonl line 3: not a transcript event"):
        load(broken_copy(tmp_path, transcript=b"".join(lines)))


def test_bad_hex_and_unknown_fields_are_named(tmp_path):
    with pytest.raises(CaptureError, match=r"line 1: not a transcript event"):
        load(broken_copy(tmp_path, transcript=b'{"n":0,"t":0.0,"dir":"rx","hex":"zz"}\n'))
    shutil.rmtree(tmp_path / "case")
    with pytest.raises(CaptureError, match=r"line 1: Object contains unknown field `photo`"):
        load(broken_copy(tmp_path, transcript=b'{"n":0,"t":0.0,"dir":"rx","photo":"00"}\n'))


def test_an_unredacted_or_foreign_meta_is_refused(tmp_path):
    text = (PRINTER_OK / "meta.json").read_text()
    with pytest.raises(CaptureError, match="not marked redacted"):
        load(broken_copy(tmp_path, meta=text.replace('"redacted": true', '"redacted": false').encode()))
    shutil.rmtree(tmp_path / "case")
    with pytest.raises(CaptureError, match=r"meta.json: kind: Invalid enum value 'scanner'"):
        load(broken_copy(tmp_path, meta=text.replace('"kind": "printer"', '"kind": "scanner"').encode()))
    with pytest.raises(CaptureError, match="cannot read"):
        load(tmp_path / "nowhere")
