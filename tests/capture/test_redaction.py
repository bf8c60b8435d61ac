"""The ID card reply redactor as a pure function: literal frames and hypothesis properties.

Sources: frames built with drivers.idcard.codec.build_reply around the emulator's synthetic
cards (simulator/emulators/idcard.py), the same bytes the emulator puts on the wire; the
garbage-then-frame pattern is the emulator's ``garbage`` fault.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.capture import Event, redact_events, redact_reply_stream, synthetic_text_block
from drivers.errors import ProtocolError
from drivers.idcard import codec
from drivers.idcard.mask import mask_card
from simulator.emulators.idcard import SyntheticCard

READ = codec.READ_TEXT_PHOTO


def read_reply(card: SyntheticCard) -> bytes:
    text, photo = card.text_block(), card.photo
    return codec.build_reply(codec.SW3_OK, len(text).to_bytes(2, "big") + len(photo).to_bytes(2, "big") + text + photo)


def decoded(stream: bytes) -> tuple[int, int, list[bytes]]:
    dec = codec.FrameDecoder()
    frames = dec.feed(stream)
    return len(frames), dec.bad_frames, [f.body[:3] for f in frames]


def test_a_read_reply_keeps_its_length_and_checksum_and_masks_to_the_same_card():
    card = SyntheticCard.resident()
    raw = read_reply(card)
    clean = redact_reply_stream(raw, [(0, READ)])
    assert len(clean) == len(raw) and clean != raw
    (frame,) = codec.decode_frames(clean)  # checksum valid
    blocks = codec.split_read_reply(codec.parse_reply(frame))
    text = codec.decode_text_block(blocks.text)
    assert text.name == "申**" and text.address == "北京市东城区******" and text.authority == ""
    assert text.id_number != card.text.id_number and text.id_number[:4] + text.id_number[-4:] == "11011284"
    assert mask_card(text, photo_present=blocks.photo_present) == mask_card(card.text, photo_present=True)


def test_the_same_frame_answering_sam_status_is_left_alone_but_large_unknown_data_is_blanked():
    sam = codec.build_reply(codec.SW3_OK, bytes.fromhex("0500010017a29a0087d61200b168de3a"))
    assert redact_reply_stream(sam, [(0, codec.SAM_ID)]) == sam
    big = codec.build_reply(codec.SW3_OK, "某某某".encode("utf-16-le") * 4)
    clean = redact_reply_stream(big, [(0, codec.SAM_STATUS)])
    (frame,) = codec.decode_frames(clean)
    assert frame.body == bytes([0, 0, codec.SW3_OK]) + bytes(24)


def test_a_bad_checksum_stays_bad_and_noise_keeps_its_shape():
    card = SyntheticCard.hk_mo_tw()
    reply = bytearray(read_reply(card))
    reply[-1] ^= 0x5A
    noise = bytes.fromhex("aa 96 00 ff 13 55 aa aa") + codec.PREAMBLE + b"\xff\xff" + b"\xaa\xaa\xaa\x96"
    stream = noise + bytes(reply) + codec.build_reply(codec.SW3_OK)
    clean = redact_reply_stream(stream, [(0, READ), (len(stream) - 11, codec.SAM_STATUS)])
    assert decoded(clean) == decoded(stream) == (1, 1, [bytes([0, 0, codec.SW3_OK])])
    assert card.text.name.encode("utf-16-le") not in clean


def test_redact_events_keeps_chunk_boundaries_across_exchanges():
    """A read reply split over reads, finishing after the next request, is still redacted whole."""
    card = SyntheticCard.foreigner()
    reply = read_reply(card)
    events = [
        Event(0, 0.0, "tx", codec.build_command(*READ).hex()),
        Event(1, 0.1, "rx", reply[:300].hex()),
        Event(2, 3.0, "tx", codec.build_command(*codec.SAM_STATUS).hex()),
        Event(3, 3.1, "rx", reply[300:].hex()),
    ]
    clean = redact_events("idcard", events)
    assert [len(ev.data) for ev in clean] == [len(ev.data) for ev in events]
    joined = clean[1].data + clean[3].data
    assert card.text.english_name.encode("utf-16-le") not in joined
    assert card.photo[2:40] not in joined
    assert redact_events("modem", events) == events


def test_an_undecodable_text_block_stays_undecodable():
    block = bytearray(SyntheticCard.resident().text_block())
    block[30:32] = "7".encode("utf-16-le")  # gender code 7 does not exist
    try:
        codec.decode_text_block(bytes(block))
    except ProtocolError:
        pass
    else:  # pragma: no cover
        raise AssertionError("the fixture should not decode")
    fake = synthetic_text_block(bytes(block))
    assert len(fake) == codec.TEXT_LEN
    try:
        codec.decode_text_block(fake)
        raise AssertionError("the synthetic block decoded")
    except ProtocolError:
        pass
    assert "申测样".encode("utf-16-le") not in fake


frame_bodies = st.builds(
    lambda sw3, data: codec.build_reply(sw3, data),
    st.sampled_from([codec.SW3_OK, codec.SW3_FIND_OK, codec.SW3_READ_FAILED]),
    st.binary(max_size=300),
)
pieces = st.one_of(st.binary(max_size=40), frame_bodies, st.just(codec.PREAMBLE), st.just(read_reply(SyntheticCard.resident())))
owners_keys = st.sampled_from([None, READ, codec.READ_ADDRESS, codec.READ_TEXT_PHOTO_FP, codec.SAM_ID])


@settings(max_examples=300, deadline=None)
@given(st.lists(pieces, max_size=6), st.lists(st.tuples(st.integers(0, 2000), owners_keys), max_size=4),
       st.integers(0, 2))
def test_redaction_never_raises_and_the_driver_sees_the_same_frames(parts, owners, flip):
    stream = bytearray(b"".join(parts))
    if stream and flip:
        stream[len(stream) // (flip + 1)] ^= 0x21  # corrupt a byte somewhere
    owners = sorted(owners, key=lambda o: o[0])
    clean = redact_reply_stream(bytes(stream), owners)
    assert len(clean) == len(stream)
    assert decoded(clean) == decoded(bytes(stream))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=codec.TEXT_LEN, max_size=codec.TEXT_LEN))
def test_any_text_block_gives_a_block_that_decodes_exactly_when_the_original_did(block):
    fake = synthetic_text_block(block)
    assert len(fake) == codec.TEXT_LEN
    try:
        codec.decode_text_block(block)
        ok = True
    except ProtocolError:
        ok = False
    try:
        codec.decode_text_block(fake)
        assert ok, "an undecodable block became decodable"
    except ProtocolError:
        assert not ok, "a decodable block became undecodable"


cjk = st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5), max_size=15)
digits = st.text(st.sampled_from("0123456789"), min_size=8, max_size=8)


@st.composite
def resident_cards(draw):  # type: ignore[no-untyped-def]
    birth = draw(st.one_of(digits, st.just(""), st.just("1990-3-7")))
    first17 = draw(st.text(st.sampled_from("0123456789"), min_size=17, max_size=17))
    id_number = draw(st.sampled_from([first17 + codec.id_check_digit(first17),
                                      first17[:6] + (birth if birth.isdigit() else "19900101") + first17[14:],
                                      first17 + "0", ""]))
    if len(id_number) == 17:
        id_number += codec.id_check_digit(id_number)
    return codec.CardText(
        type=draw(st.sampled_from(["resident", "hk_mo_tw"])), name=draw(cjk), gender=draw(st.sampled_from("0129")),
        birth=birth, id_number=id_number, valid_from=draw(digits), valid_to=draw(st.sampled_from(["20400101", "长期"])),
        nation=draw(st.sampled_from(["01", "56", "97"])), address=draw(cjk.map(lambda s: s * 2)),
        authority=draw(cjk), pass_number=draw(st.sampled_from(["", "H98765432"])),
        issue_count=draw(st.sampled_from(["", "01"])),
    )


@settings(max_examples=300, deadline=None)
@given(resident_cards())
def test_any_card_masks_the_same_from_its_synthetic_block(card):
    block = codec.encode_text_block(card)
    original = codec.decode_text_block(block)
    fake = codec.decode_text_block(synthetic_text_block(block))
    assert mask_card(fake, photo_present=True) == mask_card(original, photo_present=True)
    if len(original.name) > 1:
        assert fake.name != original.name
    if len(original.id_number) == 18:
        assert fake.id_number != original.id_number
    if original.birth:
        assert fake.birth != original.birth
