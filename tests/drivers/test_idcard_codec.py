"""Pure codec of the ID card reader: literal frames, synthetic text blocks, properties.

Literal frames come from /work/shared/reference/peripherals.md section 2 ("REF §2.x"),
which collects them from qiwenming/IDCardDemo, hevz/hev-idcard-reader, HslCommunication
SAMSerial.cs and the Decard SDK example. Text blocks are SYNTHETIC (made-up people).
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import DeviceFault, DriverError, ProtocolError
from drivers.idcard import codec
from drivers.idcard.codec import CardText
from drivers.idcard.mask import mask_address, mask_id, mask_name, redact_text


def hx(s: str) -> bytes:
    return bytes.fromhex(s)


# --- frames: literals from REF §2.2 / §2.3 ---------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "data", "literal"),
    [
        (codec.RESET, b"", "AA AA AA 96 69 00 03 10 FF EC"),
        (codec.SAM_STATUS, b"", "AA AA AA 96 69 00 03 11 FF ED"),
        (codec.SAM_ID, b"", "AA AA AA 96 69 00 03 12 FF EE"),
        (codec.FIND_CARD, b"", "AA AA AA 96 69 00 03 20 01 22"),  # REF §2.2 worked example
        (codec.SELECT_CARD, b"", "AA AA AA 96 69 00 03 20 02 21"),
        (codec.READ_TEXT_PHOTO, b"", "AA AA AA 96 69 00 03 30 01 32"),
        (codec.READ_ADDRESS, b"", "AA AA AA 96 69 00 03 30 03 30"),
        (codec.READ_TEXT_PHOTO_FP, b"", "AA AA AA 96 69 00 03 30 10 23"),
        (codec.SET_RF_FRAME, b"\x50", "AA AA AA 96 69 00 04 61 FF 50 CA"),  # hev-idcard-reader
    ],
)
def test_command_frames_match_reference_table(key, data, literal):
    """REF §2.3 command table: our frames are byte-identical to what real readers accept."""
    assert codec.build_command(*key, data) == hx(literal)


def test_find_ok_reply_literal():
    """REF §2.3 'Find OK': SW3 0x9F with four zero data bytes."""
    [frame] = codec.decode_frames(hx("AA AA AA 96 69 00 08 00 00 9F 00 00 00 00 97"))
    reply = codec.parse_reply(frame)
    assert (reply.sw1, reply.sw2, reply.sw3, reply.data) == (0, 0, 0x9F, bytes(4))
    assert codec.expect(reply, "find", 0x9F, 0x80) is reply


def test_find_failed_reply_literal():
    """REF §2.3 'Find failed': SW3 0x80, no data."""
    [frame] = codec.decode_frames(hx("AA AA AA 96 69 00 04 00 00 80 84"))
    assert codec.parse_reply(frame).sw3 == codec.SW3_FIND_FAILED


def test_select_ok_reply_literal():
    """REF §2.3 'Select OK': header, 8 zero data bytes, CHK 9C."""
    raw = hx("AA AA AA 96 69 00 0C 00 00 90") + bytes(8) + hx("9C")
    [frame] = codec.decode_frames(raw)
    reply = codec.parse_reply(frame)
    assert reply.sw3 == 0x90 and reply.data == bytes(8)
    assert codec.build_reply(0x90, bytes(8)) == raw


def test_sam_id_reply_header_literal():
    """REF §2.3 'SAM ID': header AA AA AA 96 69 00 14 00 00 90 + 16 bytes + CHK."""
    data = codec.encode_sam_id("05.01-20101103-0001234567-0987654321")
    frame = codec.build_reply(0x90, data)
    assert frame[:10] == hx("AA AA AA 96 69 00 14 00 00 90") and len(frame) == 27


def test_vendor_timeout_frame_is_an_error_not_a_crash():
    """REF §2.4: a vendor emits non-standard frames starting AA AA AA 96 69 00 05 05 05."""
    raw = codec.build_frame(hx("05 05 05 00"))
    assert raw.startswith(hx("AA AA AA 96 69 00 05 05 05"))
    reply = codec.parse_reply(codec.decode_frames(raw)[0])
    with pytest.raises(ProtocolError, match="unknown SAM status 0x05"):
        codec.expect(reply, "read text+photo", 0x90)


def test_known_sam_error_raises_device_fault_with_code():
    """REF §2.4: 0x60 = SAM self-test failed."""
    reply = codec.parse_reply(codec.decode_frames(codec.build_reply(0x60))[0])
    with pytest.raises(DeviceFault, match="self-test failed") as info:
        codec.expect(reply, "SAM status", 0x90)
    assert info.value.code == "0x60"


# --- streaming decoder ---------------------------------------------------------------------------------
FIND_OK = hx("AA AA AA 96 69 00 08 00 00 9F 00 00 00 00 97")
FIND_FAILED = hx("AA AA AA 96 69 00 04 00 00 80 84")


def test_decoder_resyncs_after_garbage_and_broken_preamble():
    noise = hx("00 FF AA AA 13 AA AA AA 96") + hx("AA AA AA 96 69 FF FF")  # impossible LEN
    dec = codec.FrameDecoder()
    frames = dec.feed(noise + FIND_OK)
    assert [codec.parse_reply(f).sw3 for f in frames] == [0x9F]
    assert dec.discarded > 0


def test_decoder_waits_for_whole_frame_byte_by_byte():
    dec = codec.FrameDecoder()
    out = []
    for i, b in enumerate(FIND_OK):
        got = dec.feed(bytes([b]))
        if i < len(FIND_OK) - 1:
            assert got == []  # never a partial frame
        out += got
    assert len(out) == 1 and codec.parse_reply(out[0]).sw3 == 0x9F


def test_decoder_discards_bad_checksum_frame_and_keeps_going():
    bad = FIND_OK[:-1] + b"\x00"
    dec = codec.FrameDecoder()
    frames = dec.feed(bad + FIND_FAILED)
    assert dec.bad_frames == 1
    assert [codec.parse_reply(f).sw3 for f in frames] == [0x80]


def test_read_reply_1295_bytes_split_by_length_words():
    """REF §2.3: header AA AA AA 96 69 05 08 00 00 90 01 00 04 00, 256 text, 1024 photo, CHK."""
    text = codec.encode_text_block(RESIDENT)
    photo = b"WL" + bytes(1022)
    raw = codec.build_reply(0x90, hx("01 00 04 00") + text + photo)
    assert len(raw) == 1295
    assert raw[:14] == hx("AA AA AA 96 69 05 08 00 00 90 01 00 04 00")
    blocks = codec.split_read_reply(codec.parse_reply(codec.decode_frames(raw)[0]))
    assert blocks.text == text and blocks.photo_present and blocks.photo_len == 1024
    assert "WL" not in repr(blocks) and not hasattr(blocks, "photo")


@pytest.mark.parametrize(("fp_len", "total"), [(0, 1297), (512, 1809), (1024, 2321)])
def test_fingerprint_read_reply_variants(fp_len, total):
    """REF §2.3: 30 10 replies carry three length words; 1297/1809/2321 bytes."""
    text = codec.encode_text_block(RESIDENT)
    data = hx("01 00 04 00") + fp_len.to_bytes(2, "big") + text + b"WL" + bytes(1022) + bytes(fp_len)
    raw = codec.build_reply(0x90, data)
    assert len(raw) == total
    reply = codec.parse_reply(codec.decode_frames(raw)[0])
    blocks = codec.split_read_reply(reply, fingerprint=True)
    assert blocks.fingerprint_len == fp_len and blocks.text == text
    with pytest.raises(ProtocolError, match="do not add up"):
        codec.split_read_reply(reply, fingerprint=False)  # do not assume 1295 for 30 10


def test_read_reply_without_photo_prefix_reports_no_photo():
    data = hx("01 00 04 00") + codec.encode_text_block(RESIDENT) + bytes(1024)
    blocks = codec.split_read_reply(codec.Reply(0, 0, 0x90, data))
    assert blocks.photo_present is False


def test_truncated_read_reply_is_rejected_without_showing_text():
    data = hx("01 00 04 00") + codec.encode_text_block(RESIDENT) + b"WL"
    with pytest.raises(ProtocolError) as info:
        codec.split_read_reply(codec.Reply(0, 0, 0x90, data))
    assert "raw" not in str(info.value) and RESIDENT.name not in str(info.value)


# --- text blocks (SYNTHETIC people) ---------------------------------------------------------------------
RESIDENT = CardText(
    type="resident", name="申测样", gender="2", nation="01", birth="19900307",
    address="北京市东城区测试路1号测试小区2栋3单元401室", id_number="110101199003071284",
    authority="北京市公安局测试分局", valid_from="20200101", valid_to="20400101",
)


def test_resident_block_layout_offsets():
    """REF §2.5: UCS-2LE, space padded; name@0, gender@30, nation@32, birth@36, id@122."""
    block = codec.encode_text_block(RESIDENT)
    assert len(block) == 256
    assert block[0:6] == "申测样".encode("utf-16-le") and block[6:8] == b" \x00"
    assert block[30:32] == b"2\x00" and block[32:36] == "01".encode("utf-16-le")
    assert block[122:158] == RESIDENT.id_number.encode("utf-16-le")
    assert block[248:250] == b" \x00"  # no type mark: resident


def test_decode_resident_block():
    card = codec.decode_text_block(codec.encode_text_block(RESIDENT))
    assert card == RESIDENT
    assert codec.nation_name(card.nation) == "汉"
    assert codec.birth_year(card) == 1990
    assert "申测样" not in repr(card) and RESIDENT.id_number not in str(card)


def test_long_term_validity_kept_as_text():
    """REF §2.5: valid-to may be 长期 + padding; never int() it."""
    card = dataclasses.replace(RESIDENT, valid_to="长期")
    assert codec.decode_text_block(codec.encode_text_block(card)).valid_to == "长期"


def test_hk_macao_taiwan_permit_detected_by_J_mark():
    """REF §2.6: 'J' 0x00 at offset 248, pass number at 220, issue count at 238."""
    permit = dataclasses.replace(RESIDENT, type="hk_mo_tw", nation="", id_number="810000198511200414",
                                 pass_number="H98765432", issue_count="01")
    block = codec.encode_text_block(permit)
    assert block[248:250] == b"J\x00"
    card = codec.decode_text_block(block)
    assert card.type == "hk_mo_tw" and card.pass_number == "H98765432" and card.issue_count == "01"


def test_foreigner_card_detected_by_I_mark():
    """REF §2.6: 'I' 0x00 at 248; English name first, Chinese name at 158."""
    fr = CardText(type="foreigner", name="测外样", english_name="SAMPLE, TESTER", gender="1",
                  birth="19870605", id_number="USA310087060512", nationality="USA",
                  valid_from="20180101", valid_to="20280101", card_version="01", authority_code="1500")
    block = codec.encode_text_block(fr)
    assert block[248:250] == b"I\x00" and block[0:2] == b"S\x00"
    assert codec.decode_text_block(block) == fr


def test_unknown_type_letter_rejected():
    """REF §2.6: unconfirmed newer card types: log and reject unknown type letters."""
    block = bytearray(codec.encode_text_block(RESIDENT))
    block[248:250] = b"Y\x00"
    with pytest.raises(ProtocolError, match="unknown card type"):
        codec.decode_text_block(bytes(block))


def test_bad_gender_and_short_block_rejected():
    block = bytearray(codec.encode_text_block(RESIDENT))
    block[30:32] = b"7\x00"
    with pytest.raises(ProtocolError, match="gender"):
        codec.decode_text_block(bytes(block))
    with pytest.raises(ProtocolError, match="255 bytes"):
        codec.decode_text_block(bytes(block[:255]))


# --- ID numbers ----------------------------------------------------------------------------------------------
def test_id_check_digit_gb11643_example():
    """GB 11643 sample number (also the brief's mask example): check digit X."""
    assert codec.id_check_digit("11010519491231002") == "X"
    assert codec.id_checksum_ok("11010519491231002X")
    assert codec.id_checksum_ok("11010519491231002x")
    assert not codec.id_checksum_ok("110105194912310021")
    assert not codec.id_checksum_ok("1101051949123100")


def test_id_birth_date_consistency():
    assert codec.id_birth_matches("11010519491231002X", "19491231")
    assert not codec.id_birth_matches("11010519491231002X", "19491230")


# --- SAM ID -----------------------------------------------------------------------------------------------------
def test_sam_id_format_and_normalised_comparison():
    """REF §2.8: u16 LE, u16 LE, u32 LE x3 printed %02d.%02d-%08d-%010d-%010d."""
    raw = (5).to_bytes(2, "little") + (1).to_bytes(2, "little") + (20101103).to_bytes(4, "little") \
        + (1234567).to_bytes(4, "little") + (987654321).to_bytes(4, "little")
    text = codec.format_sam_id(raw)
    assert text == "05.01-20101103-0001234567-0987654321"
    assert codec.encode_sam_id(text) == raw
    assert codec.same_sam_id(text, "05.01-20101103-001234567-987654321")  # HslCommunication 9-digit pad
    assert codec.same_sam_id(text, "5.1-20101103-1234567")  # SDKs printing four parts
    assert not codec.same_sam_id(text, "05.01-20101103-0001234568-0987654321")
    with pytest.raises(ProtocolError):
        codec.format_sam_id(raw[:15])


# --- masking --------------------------------------------------------------------------------------------------------
def test_masks():
    assert mask_name("张三丰") == "张**"
    assert mask_name("欧阳娜娜") == "欧***"
    assert mask_id("11010519491231002X") == "1101**********002X"
    assert mask_address("北京市东城区测试路1号测试小区") == "北京市东城区***"
    assert mask_address("北京市东城区测试路") == "北京市东***"  # never more than half
    assert mask_address("北京") == "北***"


def test_redact_text_finds_ids_in_logs_and_json_but_not_iccids():
    line = 'read ok {"id": "11010519491231002X", "n": 1} again 110101199003071284.'
    out = redact_text(line)
    assert "11010519491231002X" not in out and "110101199003071284" not in out
    assert '"1101**********002X"' in out and "1101**********1284." in out
    iccid = "89860317422042871263"  # 20-digit ICCID from a modem log must stay readable
    assert redact_text(f"ICCID {iccid}") == f"ICCID {iccid}"


# --- properties -------------------------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 64), max_size=50))
def test_random_bytes_never_raise_anything_but_driver_errors(data, cuts):
    dec = codec.FrameDecoder()
    frames: list[codec.Frame] = []
    pos = 0
    for n in cuts:
        frames += dec.feed(data[pos : pos + n])
        pos += n
    frames += dec.feed(data[pos:])
    for frame in frames:
        try:
            reply = codec.parse_reply(frame)
            codec.expect(reply, "read", 0x90)
            blocks = codec.split_read_reply(reply)
            codec.decode_text_block(blocks.text)
        except DriverError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=256, max_size=256))
def test_random_text_blocks_raise_only_protocol_errors(block):
    try:
        card = codec.decode_text_block(block)
    except ProtocolError:
        return
    assert card.type in ("resident", "hk_mo_tw", "foreigner")
    codec.birth_year(card)
    codec.id_checksum_ok(card.id_number)


_GARBAGE = st.binary(max_size=40).map(lambda b: b.replace(b"\x69", b""))  # no 0x69: no preamble


@settings(max_examples=200, deadline=None)
@given(_GARBAGE, st.integers(0, 255), st.binary(max_size=2400), st.integers(1, 300))
def test_build_then_decode_round_trip(garbage, sw3, data, cut):
    raw = garbage + codec.build_reply(sw3, data)
    dec = codec.FrameDecoder()
    frames = dec.feed(raw[:cut]) + dec.feed(raw[cut:])
    assert len(frames) == 1
    reply = codec.parse_reply(frames[0])
    assert (reply.sw3, reply.data) == (sw3, data)


_FIELD = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xFFFF, exclude_categories=("Cs",)),
    max_size=8,
)


@settings(max_examples=100, deadline=None)
@given(_FIELD, st.sampled_from(sorted(codec.GENDERS)), st.from_regex(r"\A[0-9]{2}\Z"), _FIELD,
       st.from_regex(r"\A[0-9]{17}[0-9X]\Z"))
def test_text_block_round_trip(name, gender, nation, address, id_number):
    card = dataclasses.replace(RESIDENT, name=name, gender=gender, nation=nation, address=address,
                               id_number=id_number)
    assert codec.decode_text_block(codec.encode_text_block(card)) == card


@given(st.from_regex(r"\A[0-9]{17}[0-9X]\Z"), st.text(max_size=30), st.text(max_size=30))
def test_redact_text_never_leaves_an_id(id_number, before, after):
    out = redact_text(f"{before} {id_number} {after}")
    assert f" {id_number} " not in out
