"""The printer emulator itself: reference status bytes, encoding bugs it must expose, and
robustness to any byte stream (it is fed whatever a driver under test produces)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.printer import codec
from simulator.emulators.printer import PrinterEmulator

EMU = PrinterEmulator("generic-58mm")  # profile loaded once; fresh emulators reuse it


def fresh() -> PrinterEmulator:
    return PrinterEmulator(EMU.profile)


def test_status_bytes_match_print801():
    # roll2021/print801 Command_1004 (as quoted in peripherals.md 3.1): paper end -> 0x7E on n=4,
    # offline bit on n=1 for any offline cause, cover open 0x16 on n=2
    emu = fresh()
    assert emu.feed(b"\x10\x04\x01\x10\x04\x02\x10\x04\x03\x10\x04\x04") == b"\x12\x12\x12\x12"
    emu.faults = {"printer_paper_out"}
    assert emu.feed(b"\x10\x04\x04") == b"\x7e"
    assert emu.feed(b"\x10\x04\x01") == b"\x1a"
    emu.faults = {"printer_cover_open"}
    assert emu.feed(b"\x10\x04\x02") == b"\x16"
    emu.faults = {"paper_near_end"}
    assert emu.feed(b"\x1d\x72\x01") == b"\x03"  # GS r: no fixed bits


def test_data_held_while_the_cover_was_open_prints_before_anything_sent_after_closing():
    # a driver's GS r after the cover closes must find the held receipt already printed, whether or
    # not the emulator's tick ran in between (it does not, here)
    emu = fresh()
    emu.faults = {"printer_cover_open"}
    assert emu.feed(b"\x1b\x40" + codec.encode_line("合计：￥3.00") + b"\n\x10") is None
    assert emu.printed.lines == []
    emu.faults = set()
    assert emu.feed(b"\x04\x02\x1d\x72\x01") == b"\x12\x00"  # DLE EOT 2 split across feeds, then GS r
    assert emu.printed.lines == ["合计：￥3.00"]


def test_offline_printer_says_nothing():
    emu = fresh()
    emu.faults = {"printer_offline"}
    assert emu.feed(b"\x10\x04\x01\x1d\x72\x01") is None
    assert emu.tick() is None


def test_codepage_yen_on_a_chinese_mode_printer_comes_out_garbled():
    # peripherals.md 3.3: python-escpos sends "Total ¥12.50" as ESC t 0 + CP437 0x9D; in Chinese
    # mode that byte is a GB lead byte and eats what follows
    emu = fresh()
    emu.feed(b"\x1c\x26\x1bt\x00Total \x9d12.50\n")
    assert emu.printed.lines[-1] != "Total ¥12.50"
    assert "\ufffd" in emu.printed.lines[-1]
    emu.feed(b"\x1c\x2e\x1bt\x00Total \x9d12.50\n")  # FS . leaves Chinese mode: CP437 is right
    assert emu.printed.lines[-1] == "Total ¥12.50"


def test_gb18030_line_in_chinese_mode_reads_back():
    emu = fresh()
    emu.feed(b"\x1b\x40\x1c\x26" + codec.encode_line("合计：￥12.50 医保") + b"\n")
    assert emu.printed.lines == ["合计：￥12.50 医保"]


def test_long_line_wraps_at_the_head_width():
    emu = fresh()
    emu.feed(codec.encode_line("中" * 17) + b"\n")
    assert emu.printed.lines == ["中" * 16, "中"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 17))
def test_any_byte_stream_is_accepted_and_chunking_does_not_change_the_print(data, step):
    whole = fresh()
    whole.feed(data)
    chunked = fresh()
    for i in range(0, len(data), step):
        chunked.feed(data[i : i + step])
    assert chunked.printed.lines == whole.printed.lines
    assert chunked.printed.qr == whole.printed.qr
    assert chunked.printed.cuts == whole.printed.cuts
    assert bytes(chunked.transcript) == data
