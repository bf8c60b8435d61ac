"""The real ID card driver against its emulator twin over a pty (replies arrive in chunks)."""

from __future__ import annotations

import shutil
import threading
import time

import msgspec
import pytest

from drivers.errors import DeviceFault, DeviceNotFound, NotSupported, ProtocolError, Timeout
from drivers.idcard import IdCardReader, codec, load_profile
from drivers.idcard.device import IdCardProfile
from drivers.profiles import ProfileError, load, profiles_root
from drivers.transport import Transport
from simulator.emulators.idcard import DEFAULT_SAM_ID, SyntheticCard, serve


@pytest.fixture
def device():
    pty = serve(card=SyntheticCard.resident())
    yield pty
    pty.stop()


@pytest.fixture
def reader(device):
    r = IdCardReader(device.path)
    r.open()
    yield r
    r.close()


def with_timeouts(**timeouts: float) -> IdCardProfile:
    p = load_profile()
    return msgspec.structs.replace(p, timeouts=msgspec.structs.replace(p.timeouts, **timeouts))


def with_features(**features: object) -> IdCardProfile:
    p = load_profile()
    return msgspec.structs.replace(p, features=msgspec.structs.replace(p.features, **features))


# --- healthy reader -------------------------------------------------------------------------------------
def test_check_ok_and_sam_id(reader, device):
    result = reader.check()
    assert result.state == "ok", result
    assert device.emulator.received == ["SAM status"]  # the check never touches a card
    assert reader.sam_status() is True
    assert codec.same_sam_id(reader.sam_id(), DEFAULT_SAM_ID)


def test_read_resident_card_masked(reader):
    card = reader.read_placed_card()
    assert card is not None
    assert (card.type, card.name_masked, card.id_masked) == ("resident", "申**", "1101**********1284")
    assert card.gender == "female" and card.nation == "01" and card.birth_year == 1990
    assert card.valid_to == "20400101" and card.address_masked == "北京市东城区***"
    assert card.id_checksum_ok and card.id_birth_ok and card.photo_present
    assert not card.fingerprint_present


def test_card_must_be_lifted_and_replaced_after_a_read(reader, device):
    assert reader.read_placed_card() is not None
    assert reader.find_card() is False  # same card still lying there
    device.emulator.lift()
    assert reader.find_card() is False
    device.emulator.place()
    assert reader.read_placed_card() is not None


def test_select_without_find_is_a_fault(reader):
    with pytest.raises(DeviceFault) as info:
        reader.select_card()
    assert info.value.code == "0x81"


def test_no_card_then_card_placed_while_waiting():
    pty = serve(card=None)
    try:
        with IdCardReader(pty.path) as r:
            assert r.find_card() is False
            assert r.read_placed_card() is None
            timer = threading.Timer(0.4, pty.emulator.place, args=(SyntheticCard.hk_mo_tw(),))
            timer.start()
            assert r.wait_for_card(timeout=3.0) is True
            timer.join()
            r.select_card()
            card = r.read_card()
            assert card.type == "hk_mo_tw" and card.name_masked == "蓝**" and card.id_masked.startswith("8100")
            assert card.id_checksum_ok and card.nation == ""
            assert r.wait_for_card(timeout=0.5) is False  # already read: lift and re-place
    finally:
        pty.stop()


@pytest.mark.parametrize(
    ("card", "expect"),
    [
        (SyntheticCard.long_term(), {"type": "resident", "valid_to": "长期", "gender": "male", "nation": "03"}),
        (SyntheticCard.foreigner(), {"type": "foreigner", "name_masked": "测**", "id_checksum_ok": None}),
    ],
)
def test_other_card_kinds(card, expect):
    pty = serve(card=card)
    try:
        with IdCardReader(pty.path) as r:
            got = r.read_placed_card()
        assert got is not None
        assert {k: getattr(got, k) for k in expect} == expect
    finally:
        pty.stop()


def test_unknown_card_type_is_rejected_not_misread():
    pty = serve(card=SyntheticCard(text=SyntheticCard.resident().text, type_mark="Y"))
    try:
        with IdCardReader(pty.path) as r, pytest.raises(ProtocolError, match="unknown card type"):
            r.read_placed_card()
    finally:
        pty.stop()


@pytest.mark.parametrize("fp_len", [0, 512, 1024])
def test_fingerprint_reads_when_the_profile_allows(fp_len):
    card = SyntheticCard.resident()
    card.fingerprint_len = fp_len
    pty = serve(card=card)
    try:
        with IdCardReader(pty.path, with_features(fingerprint=True)) as r:
            assert r.find_card()
            r.select_card()
            got = r.read_card(fingerprint=True)
        assert got.fingerprint_present is (fp_len > 0) and got.name_masked == "申**"
    finally:
        pty.stop()


def test_fingerprint_refused_by_generic_profile(reader, device):
    with pytest.raises(NotSupported, match="fingerprint"):
        reader.read_card(fingerprint=True)
    assert device.emulator.received == []  # nothing sent


def test_appended_address_absent_then_present(reader, device):
    assert reader.read_placed_card() is not None
    assert reader.read_address() is None  # SW3 0x91
    device.emulator.card.appended_address = "北京市东城区新测试路99号"
    assert reader.read_address() == "北京市东城区***"


def test_init_sequence_from_profile(device):
    p = load_profile()
    p = msgspec.structs.replace(p, init=["reset", "sam_status", "set_rf_frame"],
                                features=msgspec.structs.replace(p.features, rf_frame_size=0x50))
    with IdCardReader(device.path, p):
        pass
    assert device.emulator.received == ["reset SAM", "SAM status", "set RF frame size"]


def test_emulator_answers_bad_host_checksum_with_0x10(device):
    with Transport(device.path) as t:
        t.write(codec.build_command(0x11, 0xFF)[:-1] + b"\x00")
        raw = t.read_until(lambda b: len(codec.decode_frames(b)) > 0, 1.0, "bad frame")
    assert codec.parse_reply(codec.decode_frames(raw)[0]).sw3 == codec.SW3_BAD_CHECKSUM


# --- fault switches ---------------------------------------------------------------------------------------
def test_idcard_reader_fault_then_recovery(reader, device):
    device.emulator.faults.add("idcard_reader_fault")
    result = reader.check()
    assert (result.state, result.reason) == ("fault", "SAM not answering")
    with pytest.raises(Timeout) as info:
        reader.find_card()
    assert info.value.command == "find card" and info.value.seconds == 1.0
    device.emulator.faults.clear()
    assert reader.check().state == "ok"
    assert reader.read_placed_card() is not None


def test_sam_self_test_failed(reader, device):
    device.emulator.faults.add("sam_self_test_failed")
    result = reader.check()
    assert (result.state, result.reason, result.detail["sw3"]) == ("fault", "SAM self-test failed", "0x60")
    assert reader.sam_status() is False


def test_slow_reader_within_profile_timeouts(reader, device):
    device.emulator.faults.add("slow")
    start = time.monotonic()
    card = reader.read_placed_card()
    assert card is not None and card.name_masked == "申**"
    assert time.monotonic() - start >= 3 * device.emulator.slow_delay


def test_slow_reader_beyond_profile_timeout(device):
    device.emulator.faults.add("slow")
    with IdCardReader(device.path, with_timeouts(find=0.15)) as r:
        with pytest.raises(Timeout) as info:
            r.find_card()
        assert info.value.command == "find card" and info.value.seconds == 0.15
        device.emulator.faults.clear()
        time.sleep(device.emulator.slow_delay)  # the late reply arrives and must not be taken for the next
        assert r.sam_status() is True
        assert r.read_placed_card() is not None


def test_garbage_on_the_line_is_skipped(reader, device):
    device.emulator.faults.add("garbage")
    assert reader.check().state == "ok"
    card = reader.read_placed_card()
    assert card is not None and card.id_checksum_ok


def test_bad_checksum_replies(reader, device):
    device.emulator.faults.add("bad_checksum")
    result = reader.check()
    assert result.state == "fault" and "protocol error" in result.reason
    with pytest.raises(ProtocolError, match="checksum"):
        reader.find_card()
    device.emulator.faults.clear()
    assert reader.check().state == "ok"


def test_unplugged_reader(reader, device):
    assert reader.check().state == "ok"
    device.emulator.faults.add("unplug")
    time.sleep(0.1)
    result = reader.check()
    assert result.state == "unknown" and result.reason.startswith("port missing")
    with pytest.raises(DeviceNotFound):
        reader.sam_status()


def test_missing_port_is_unknown_not_fault():
    r = IdCardReader("/dev/does-not-exist-idcard")
    assert r.check().state == "unknown"
    with pytest.raises(DeviceNotFound):
        r.open()


# --- profile --------------------------------------------------------------------------------------------------
def test_generic_profile_values():
    p = load_profile("generic-sam")
    assert (p.line.baudrate, p.line.bytesize, p.line.parity, p.line.stopbits) == (115200, 8, "N", 1)
    assert p.features.fingerprint is False and p.find.poll_interval >= 0.3


def test_profile_unknown_key_and_inherits(tmp_path):
    (tmp_path / "readers").mkdir()
    shutil.copy(profiles_root() / "readers" / "generic-sam.toml", tmp_path / "readers")
    (tmp_path / "readers" / "slow-model.toml").write_text(
        'inherits = "generic-sam"\nmodel = "x"\n[timeouts]\nread = 5.0\n', encoding="utf-8")
    p = load("reader", "slow-model", IdCardProfile, root=tmp_path)
    assert p.timeouts.read == 5.0 and p.timeouts.find == 1.0
    (tmp_path / "readers" / "typo.toml").write_text(
        'inherits = "generic-sam"\n[timeouts]\nraed = 5.0\n', encoding="utf-8")
    with pytest.raises(ProfileError, match="timeouts.*raed"):
        load("reader", "typo", IdCardProfile, root=tmp_path)


def test_baudrate_override_and_unknown_profile():
    assert IdCardReader("loop://", baudrate=9600)._transport._settings["baudrate"] == 9600
    with pytest.raises(ProfileError, match="unknown reader profile"):
        IdCardReader("loop://", "no-such-reader")
