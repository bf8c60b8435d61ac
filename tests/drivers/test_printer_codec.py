"""Pure ESC/POS codec: literal bytes from the reference, and property tests on garbage.

Sources named per test: "ref 3.1" etc. = /work/shared/reference/peripherals.md section;
"print801" = roll2021/print801:Printer/command/escp/monobyte.c (Command_1004), as quoted there;
"escpos 3.1" = python-escpos 3.1 behaviour as verified in the reference.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import DriverError, NotSupported, ProtocolError
from drivers.printer import codec

# -- DLE EOT --------------------------------------------------------------------------------


def test_base_value_0x12_is_a_healthy_printer():
    # ref 3.1 / print801: every reply is built from 0x12; four 0x12 = online, paper, cover shut, no error
    st_ = codec.status_from_bytes(b"\x12\x12\x12\x12")
    assert (st_.online, st_.paper, st_.cover_open, st_.errors) == (True, "ok", False, [])
    assert st_.printable


def test_print801_paper_end_0x7e_sets_near_end_and_end():
    # print801: when the roll runs out, DLE EOT 4 = 0x7E (near-end 0x0C and end 0x60 both set),
    # DLE EOT 2 has the paper-end stop bit (0x32) and DLE EOT 1 the offline bit (0x1A)
    sensor = codec.decode_paper_sensor(b"\x7e")
    assert sensor.near_end and sensor.end and sensor.paper == "out"
    st_ = codec.status_from_bytes(b"\x1a\x32\x12\x7e")
    assert st_.paper == "out"
    assert st_.online is False
    assert not st_.printable


def test_paper_near_end_0x1e():
    # ref 3.1: DLE EOT 4 bits 2+3 (0x0C) = near end -> 0x1E; still printable
    st_ = codec.status_from_bytes(b"\x12\x12\x12\x1e")
    assert st_.paper == "near_end"
    assert st_.printable


def test_cover_open_0x16_makes_printer_offline():
    # print801: cover open -> DLE EOT 2 = 0x16 and the offline bit in DLE EOT 1 (0x1A)
    st_ = codec.status_from_bytes(b"\x1a\x16\x12\x12")
    assert st_.cover_open and not st_.online
    assert codec.decode_offline_cause(b"\x16").cover_open


def test_error_causes_from_dle_eot_3():
    # ref 3.1 table, n=3: 0x04 recoverable, 0x08 autocutter, 0x20 unrecoverable, 0x40 auto-recoverable
    assert codec.status_from_bytes(b"\x1a\x52\x1a\x12").errors == ["autocutter"]
    assert codec.status_from_bytes(b"\x1a\x52\x32\x12").errors == ["unrecoverable"]
    assert codec.status_from_bytes(b"\x1a\x52\x16\x12").errors == ["recoverable"]
    assert codec.status_from_bytes(b"\x1a\x52\x52\x12").errors == ["auto_recoverable"]
    # error bit in n=2 but no cause in n=3: still an error, never silently fine
    assert codec.status_from_bytes(b"\x1a\x52\x12\x12").errors == ["unspecified"]


def test_dle_eot_1_bits():
    # ref 3.1 n=1: 0x04 drawer pin 3, 0x08 offline, 0x20 waiting recovery, 0x40 feed button
    p = codec.decode_printer(b"\x7e")
    assert p.drawer_pin3_high and p.offline and p.waiting_recovery and p.feed_pressed
    assert codec.decode_printer(b"\x12") == codec.PrinterByte(False, False, False, False)


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # escpos 3.1: empty read -> paper_status() 2 "adequate"; for us: no reply
        b"\x12\x12",  # two bytes: not one reply
        b"\x00",  # GS r "ok" byte: no fixed bits
        b"\x0c",  # GS r "paper end": must not be read as DLE EOT
        b"\xff",
        b"\x13",  # bit 0 set
        b"\x92",  # bit 7 set
        b"\x02",  # bit 4 missing
        b"\x10",  # ASB header (0xx1xx00), not a DLE EOT reply
    ],
)
def test_invalid_dle_eot_reply_is_rejected_never_paper_ok(raw):
    with pytest.raises(ProtocolError):
        codec.decode_paper_sensor(raw)
    with pytest.raises(ProtocolError):
        codec.decode_printer(raw)


def test_combined_status_needs_all_four_replies():
    with pytest.raises(ProtocolError):
        codec.status_from_bytes(b"\x12\x12\x12")
    with pytest.raises(ProtocolError):
        codec.status_from_bytes(b"")
    with pytest.raises(ProtocolError):
        codec.status_from_bytes(b"\x12\x12\x12\x00")


def test_request_bytes():
    # ref 3.1 / 3.2: DLE EOT n = 10 04 n, GS r n = 1D 72 n, GS a n = 1D 61 n
    assert [codec.dle_eot(n) for n in (1, 2, 3, 4)] == [
        b"\x10\x04\x01",
        b"\x10\x04\x02",
        b"\x10\x04\x03",
        b"\x10\x04\x04",
    ]
    assert codec.gs_r(1) == b"\x1d\x72\x01"
    assert codec.asb_enable(0xFF) == b"\x1d\x61\xff"
    with pytest.raises(ValueError):
        codec.dle_eot(5)


# -- GS r --------------------------------------------------------------------------------------


def test_gs_r_has_its_own_parser():
    # ref 3.2: GS r 1: 0x03 near end, 0x0C paper end, 0x00 ok (no fixed bits)
    assert codec.decode_gs_r_paper(b"\x00") == "ok"
    assert codec.decode_gs_r_paper(b"\x03") == "near_end"
    assert codec.decode_gs_r_paper(b"\x0c") == "out"
    assert codec.decode_gs_r_paper(b"\x0f") == "out"
    assert codec.decode_gs_r_drawer(b"\x01") is True
    # a DLE EOT reply byte (0x12) is not a GS r reply; an empty read is not "ok"
    for raw in (b"\x12", b"", b"\x00\x00"):
        with pytest.raises(ProtocolError):
            codec.decode_gs_r_paper(raw)


# -- ASB ---------------------------------------------------------------------------------------


def test_asb_print801_frames():
    # print801 sends 4 bytes on enable, byte 4 always 0x0F; byte 1 fixed 0xx1xx00
    ok = codec.decode_asb(b"\x10\x00\x00\x0f")
    assert ok.to_status().printable and ok.vendor == 0x0F
    cover = codec.decode_asb(b"\x38\x00\x00\x0f")  # offline 0x08 + cover 0x20
    assert cover.cover_open and cover.offline and not cover.to_status().printable
    paper = codec.decode_asb(b"\x18\x00\x0f\x0f")  # byte 3: near end 0x03 + end 0x0C
    assert paper.to_status().paper == "out"
    cutter = codec.decode_asb(b"\x18\x08\x00\x0f")
    assert cutter.to_status().errors == ["autocutter"]


@pytest.mark.parametrize(
    "raw", [b"", b"\x10\x00\x00", b"\x12\x00\x00\x0f", b"\x11\x00\x00\x0f", b"\x90\x00\x00\x0f"]
)
def test_asb_invalid_frames_rejected(raw):
    with pytest.raises(ProtocolError):
        codec.decode_asb(raw)


def test_framer_separates_asb_packets_from_dle_eot_replies():
    # ASB packet whose bytes 2..4 look like DLE EOT replies (0x12) must not be split up
    f = codec.StatusFramer()
    items = f.feed(b"\x10\x12\x12\x0f" + b"\x1e" + b"\x00")
    assert items == [("asb", b"\x10\x12\x12\x0f"), ("dle_eot", b"\x1e"), ("stray", b"\x00")]


# -- GB18030 text -------------------------------------------------------------------------------


def test_yen_goes_full_width_not_four_byte_gb18030():
    # escpos 3.1: "合计 ¥12.50" -> BA CF BC C6 20 81 30 84 36 ...: GBK fonts print garbage.
    # ref 3.3: use full-width ￥ (U+FFE5 -> A3 A4)
    out = codec.encode_line("合计 ¥12.50")
    assert out == bytes.fromhex("BA CF BC C6 20 A3 A4") + b"12.50"
    assert b"\x81\x30\x84\x36" not in out


def test_chinese_sample_encodes_punctuation_as_gb_codes():
    # ref 3.3: CJK punctuation alone is sent as "??" by MagicEncode; here it is A3 AC / A3 BA
    out = codec.encode_line("医保，合计：￥")
    assert out == bytes.fromhex("D2 BD B1 A3 A3 AC BA CF BC C6 A3 BA A3 A4")
    assert b"?" not in out


def test_gbk_profile_refuses_characters_it_cannot_print():
    with pytest.raises(NotSupported):
        codec.encode_line("\U00020000", "gbk")  # extension-B ideograph: GB18030 only


def test_display_width_and_columns():
    # ref 3.4: 58 mm = 384 dots = 32 columns, 80 mm = 576 dots = 48; Chinese = 2 columns
    assert codec.columns_for(384) == 32 and codec.columns_for(576) == 48
    assert codec.display_width("医保结算测试页，合计：￥12.50") == 29
    assert codec.display_width("ABC") == 3
    assert codec.ruler(32) == "-" * 32


def test_fit_and_wrap_never_split_a_chinese_character():
    assert codec.fit("中" * 20, 31) == "中" * 15
    assert codec.wrap("中" * 17, 32) == ["中" * 16, "中"]
    assert codec.wrap("a" + "中" * 16, 32) == ["a" + "中" * 15, "中"]


# -- properties -----------------------------------------------------------------------------------


@given(st.binary(max_size=8))
def test_garbage_never_raises_anything_but_driver_errors(raw):
    for decode in (
        codec.decode_printer,
        codec.decode_offline_cause,
        codec.decode_error_cause,
        codec.decode_paper_sensor,
        codec.status_from_bytes,
        codec.decode_gs_r_paper,
        codec.decode_gs_r_drawer,
        codec.decode_asb,
    ):
        try:
            decode(raw)
        except DriverError:
            pass


# every byte of the form 0xx1xx10: free bits 2, 3, 5, 6 set from a 4-bit number
valid_byte = st.integers(0, 15).map(lambda v: 0x12 | (v & 3) << 2 | (v >> 2) << 5)


@given(st.lists(valid_byte, min_size=4, max_size=4))
def test_valid_replies_always_decode_and_paper_ok_needs_clear_bits(bs):
    raw = bytes(bs)
    assert all(codec.is_dle_eot_byte(b) for b in raw)
    st_ = codec.status_from_bytes(raw)
    if st_.paper == "ok":
        assert raw[3] & 0x6C == 0 and raw[1] & 0x20 == 0
    if st_.printable:
        assert raw[0] & 0x08 == 0 and raw[1] & 0x04 == 0


@given(st.binary(max_size=64), st.integers(1, 7))
def test_framer_is_independent_of_chunking(data, step):
    whole = codec.StatusFramer().feed(data)
    f = codec.StatusFramer()
    chunked = []
    for i in range(0, len(data), step):
        chunked += f.feed(data[i : i + step])
    assert chunked == whole


@given(st.text(max_size=80), st.integers(2, 48))
def test_wrap_keeps_text_and_width(text, cols):
    lines = codec.wrap(text, cols)
    assert "".join(lines) == text
    assert all(codec.display_width(line) <= cols for line in lines)
