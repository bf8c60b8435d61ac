"""The real printer driver against its emulator twin on a pty, for both generic profiles
and every fault switch."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from drivers.errors import DeviceFault, DeviceNotFound, ProtocolError, Timeout
from drivers.printer import Printer, codec
from simulator.emulators.printer import PrinterEmulator, serve

PROFILES = ["generic-58mm", "generic-80mm"]


@pytest.fixture(params=PROFILES)
def rig(request):
    emu = PrinterEmulator(request.param)
    dev = serve(request.param, emu)
    printer = Printer(dev.path, request.param)
    try:
        yield printer, emu
    finally:
        printer.close()
        dev.stop()


def test_healthy_printer_is_ok_and_fast(rig):
    printer, emu = rig
    started = time.monotonic()
    result = printer.check()
    assert result.state == "ok"
    assert result.detail["paper"] == "ok" and result.detail["cover_open"] is False
    # four one-byte queries, not four read-16-and-wait-for-timeout
    assert time.monotonic() - started < printer.profile.timeouts.status * 2
    assert emu.transcript.count(b"\x10\x04") == 4


@pytest.mark.parametrize(
    ("fault", "reason", "paper", "cover"),
    [
        ("printer_paper_out", "paper out", "out", False),
        ("printer_cover_open", "cover open", "ok", True),
        ("cutter_error", "cutter error", "ok", False),
    ],
)
def test_faults_the_printer_reports(rig, fault, reason, paper, cover):
    printer, emu = rig
    emu.faults.add(fault)
    result = printer.check()
    assert (result.state, result.reason) == ("fault", reason)
    assert result.detail["paper"] == paper and result.detail["cover_open"] is cover
    assert result.detail["online"] is False
    emu.faults.discard(fault)
    assert printer.check().state == "ok"


def test_paper_near_end_is_ok_but_says_so(rig):
    printer, emu = rig
    emu.faults.add("paper_near_end")
    result = printer.check()
    assert result.state == "ok"
    assert result.detail["paper"] == "near_end"
    assert "near end" in result.detail["note"]


def test_offline_printer_is_not_answering_within_the_timeout_never_paper_ok(rig):
    printer, emu = rig
    emu.faults.add("printer_offline")
    limit = printer.profile.timeouts.status
    started = time.monotonic()
    result = printer.check()
    elapsed = time.monotonic() - started
    assert (result.state, result.reason) == ("fault", "printer not answering")
    assert "paper" not in result.detail
    assert limit <= elapsed < limit + 0.5
    with pytest.raises(Timeout):
        printer.status()
    emu.faults.discard("printer_offline")
    assert printer.check().state == "ok"


def test_slow_reply_within_timeout_still_counts(rig):
    printer, emu = rig
    emu.faults.add("slow")
    emu.slow_s = printer.profile.timeouts.status / 3
    assert printer.status().paper == "ok"


def test_reply_later_than_timeout_is_not_answering_and_does_not_poison_the_next_read(rig):
    printer, emu = rig
    emu.faults |= {"slow", "paper_near_end"}
    emu.slow_s = printer.profile.timeouts.status + 0.2
    with printer:  # port held open (opening a port flushes its input, so keep it open)
        assert printer.check().reason == "printer not answering"
        time.sleep(0.3)  # the late byte arrives now and sits in the port
        emu.faults = {"printer_paper_out"}
        result = printer.check()
    assert result.reason == "paper out"
    # every byte answers its own query: a shifted read would show the printer online
    assert result.detail["online"] is False and result.detail["errors"] == []


def test_extra_bytes_after_each_reply_are_skipped(rig):
    printer, emu = rig
    emu.faults |= {"extra_bytes", "paper_near_end"}
    for _ in range(3):  # the junk of one query must not be read as the next query's answer
        status = printer.status()
        assert status.paper == "near_end" and status.online and status.errors == []


def test_strict_profile_calls_extra_bytes_a_protocol_error(rig):
    import msgspec

    printer, emu = rig
    strict = msgspec.structs.replace(
        printer.profile, quirks=msgspec.structs.replace(printer.profile.quirks, tolerate_stray_bytes=False)
    )
    emu.faults.add("extra_bytes")
    with Printer(printer.url, strict) as p, pytest.raises(ProtocolError):
        p.status()


def test_asb_packets_do_not_confuse_status_reads(rig):
    printer, emu = rig
    with printer:
        printer.send(codec.asb_enable(0xFF))
        time.sleep(0.1)  # the printer pushes its state once on enable
        emu.faults.add("paper_near_end")  # ... and again on each change
        time.sleep(0.1)
        status = printer.status()
    assert status.paper == "near_end" and status.online


def test_unplugged_port_is_unknown_not_fault(rig):
    printer, emu = rig
    printer.open()
    emu.faults.add("unplug")
    time.sleep(0.1)
    result = printer.check()
    assert result.state == "unknown"
    assert result.reason == "printer port unavailable"
    with pytest.raises(DeviceNotFound):
        printer.status()


def test_missing_port():
    printer = Printer("/dev/does-not-exist-printer")
    assert printer.check().state == "unknown"
    with pytest.raises(DeviceNotFound):
        printer.status()


def test_no_test_page_on_a_printer_without_paper(rig):
    printer, emu = rig
    emu.faults.add("printer_paper_out")
    with pytest.raises(DeviceFault) as info:
        printer.print_test_page("HN00010001", datetime(2026, 11, 2, 9, 30))
    assert info.value.code == "paper out"
    assert emu.printed.lines == [] and emu.printed.cuts == []


def test_stalled_printer_keeps_data_and_prints_after_cover_closed(rig):
    # the real head buffers data while the cover is open and still answers DLE EOT
    printer, emu = rig
    emu.faults.add("printer_cover_open")
    with printer:
        printer.send(b"\x1b\x40\x1c\x26" + codec.encode_line("合计：￥3.00") + b"\n")
        assert printer.status().cover_open
        time.sleep(0.1)
        assert emu.printed.lines == []
        emu.faults.clear()
        assert printer.paper_sensor() == "ok"  # GS r is answered once the data is processed
    assert emu.printed.lines == ["合计：￥3.00"]


def test_baudrate_override_and_profile_defaults():
    assert Printer("loop://").baudrate == 115200
    assert Printer("loop://", baudrate=9600).baudrate == 9600
    assert Printer("loop://", "generic-80mm").profile.columns == 48


def test_profiles_refuse_unknown_keys_and_name_the_field(tmp_path):
    from drivers.printer import load_profile
    from drivers.profiles import ProfileError

    folder = tmp_path / "printers"
    folder.mkdir()
    (folder / "typo.toml").write_text('inherits = "generic-58mm"\n[features]\nqr_code = "native"\n')
    base = load_profile("generic-58mm").__class__  # same struct the driver validates with
    (folder / "generic-58mm.toml").write_text(
        (Path(__file__).resolve().parents[2] / "firmware_profiles/printers/generic-58mm.toml").read_text()
    )
    with pytest.raises(ProfileError, match=r"features"):
        load_profile("typo", root=tmp_path)
    assert base.__struct_config__.forbid_unknown_fields


def test_usb_printer_node_through_a_plain_device_transport() -> None:
    """usblp:// opens a character device that is not a tty (the kernel's /dev/usb/lp0) with raw reads and
    writes; here the device is the emulator's pty, driven through that same non-tty code path."""
    from simulator.emulators.printer import serve

    dev = serve("generic-58mm")
    try:
        with Printer("usblp://" + dev.path, "generic-58mm") as p:
            assert p.status().online and p.check().state == "ok"
            dev.emulator.faults.add("printer_paper_out")
            assert p.check().reason == "paper out"
    finally:
        dev.stop()


def test_usb_printer_node_missing_is_device_not_found() -> None:
    from drivers.errors import DeviceNotFound

    with pytest.raises(DeviceNotFound):
        Printer("usblp:///dev/usb/lp-none", "generic-58mm").open()
