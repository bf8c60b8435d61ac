"""No unmasked ID card data ever reaches a capture folder.

Source: the emulator's synthetic cards (simulator/emulators/idcard.py), read over a pty with
the capture recorder on; every file written is searched for the full name, ID number,
address, birth date, issuing authority and photo bytes, as text, UCS-2LE/UTF-8 bytes and hex.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from drivers.capture import Event, Outcome, Recorder, load, make_meta
from drivers.errors import ProtocolError, Timeout
from drivers.idcard import IdCardReader, load_profile
from posfleet.cli_diag_capture import command
from simulator.emulators import idcard
from simulator.emulators.pty import PtyDevice
from simulator.emulators.replay import serve

pytestmark = pytest.mark.timeout(20)


def secrets_of(card: idcard.SyntheticCard) -> list[str]:
    t = card.text
    out = [t.name, t.id_number, t.address, t.birth, t.authority, t.english_name, t.pass_number,
           t.id_number[4:14]]
    if card.appended_address:
        out.append(card.appended_address)
    return [s for s in out if s]


def forms(secret: str) -> list[bytes]:
    out = [secret.encode("utf-8")]
    for enc in ("utf-16-le", "utf-8"):
        raw = secret.encode(enc)
        out += [raw, raw.hex().encode(), raw.hex(" ").encode()]
    return out


def assert_folder_clean(folder: Path, card: idcard.SyntheticCard) -> None:
    photo_body = card.photo[2:66]
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(files) == {"transcript.jsonl", "meta.json"}
    streams = {"traffic": b"".join(ev.data for ev in load(folder).events), **files}
    for where, blob in streams.items():
        for secret in secrets_of(card):
            for form in forms(secret):
                assert form not in blob, f"{where} leaks {secret!r} as {form[:40]!r}"
        assert photo_body not in blob and photo_body.hex().encode() not in blob, f"{where} leaks photo bytes"


def test_the_check_would_catch_a_leak(tmp_path):
    """Guard for the guard: a capture folder holding a raw read reply is caught."""
    card = idcard.SyntheticCard.resident()
    raw = Event(0, 0.0, "rx", card.text_block().hex())
    (tmp_path / "transcript.jsonl").write_bytes(msgspec.json.encode(raw) + b"\n")
    meta = make_meta("idcard", "generic-sam", "/dev/null", Outcome("ok", "", 0))
    (tmp_path / "meta.json").write_bytes(msgspec.json.encode(meta))
    with pytest.raises(AssertionError, match="traffic leaks"):
        assert_folder_clean(tmp_path, card)


@pytest.mark.parametrize("kind", ["resident", "hk_mo_tw", "foreigner"])
def test_a_card_read_capture_holds_no_personal_data(tmp_path, kind):
    card = getattr(idcard.SyntheticCard, kind)()
    dev = idcard.serve(card=card)
    try:
        result = CliRunner().invoke(command, ["--kind", "idcard", "--port", dev.path, "--read-card",
                                              "--out", str(tmp_path), "--note", f"card {card.text.id_number}"])
    finally:
        dev.stop()
    assert result.exit_code == 0, result.output
    for secret in secrets_of(card):
        assert secret not in result.output
    assert_folder_clean(tmp_path, card)


def test_appended_address_and_a_noisy_line_are_redacted_too(tmp_path):
    card = idcard.SyntheticCard.resident()
    card.appended_address = "四川省成都市测试区新址路9号"
    dev = idcard.serve(card=card)
    dev.emulator.faults.add("garbage")  # type: ignore[attr-defined]
    rec = Recorder("idcard")
    with rec.attach(IdCardReader(dev.path)) as reader:
        assert reader.read_placed_card() is not None
        assert reader.read_address() == "四川省成都市***"
    dev.stop()
    rec.save(tmp_path, make_meta("idcard", "generic-sam", dev.path, Outcome("ok", "", 0)))
    assert_folder_clean(tmp_path, card)


def test_a_read_reply_with_a_bad_checksum_is_redacted_and_still_bad(tmp_path):
    """The driver refuses the frame, but the bytes carried the card: they are redacted, and the
    replayed frame fails its checksum exactly as the recorded one did."""
    card = idcard.SyntheticCard.resident()
    dev = idcard.serve(card=card)
    rec = Recorder("idcard")
    with rec.attach(IdCardReader(dev.path)) as reader:
        assert reader.find_card()
        reader.select_card()
        dev.emulator.faults.add("bad_checksum")  # type: ignore[attr-defined]
        with pytest.raises(ProtocolError, match="checksum"):
            reader.read_card()
    dev.stop()
    rec.save(tmp_path, make_meta("idcard", "generic-sam", dev.path, Outcome("fault", "", 5)))
    assert_folder_clean(tmp_path, card)
    rdev = serve(tmp_path)
    try:
        with IdCardReader(rdev.path) as again:
            assert again.find_card()
            again.select_card()
            with pytest.raises(ProtocolError, match="checksum"):
                again.read_card()
    finally:
        rdev.stop()
    rdev.emulator.verify()  # type: ignore[attr-defined]


class CutShortReader(idcard.IdCardEmulator):
    """A reader that stops sending half-way through a card read's reply."""

    def _read(self, *, fingerprint: bool) -> bytes:
        return super()._read(fingerprint=fingerprint)[:600]


def test_a_read_cut_short_keeps_only_the_frame_header(tmp_path):
    """The reply stops mid-frame (driver times out): what arrived of the card is blanked."""
    card = idcard.SyntheticCard.resident()
    dev = PtyDevice(CutShortReader(card)).start()
    rec = Recorder("idcard")
    with rec.attach(IdCardReader(dev.path, profile_with_read_timeout(0.5))) as reader:
        assert reader.find_card()
        reader.select_card()
        with pytest.raises(Timeout):
            reader.read_card()
    dev.stop()
    rec.save(tmp_path, make_meta("idcard", "generic-sam", dev.path, Outcome("fault", "", 4)))
    traffic = b"".join(ev.data for ev in load(tmp_path).events if ev.dir == "rx")
    assert len(traffic) > 600, "the test needs part of the read reply on the line"
    assert_folder_clean(tmp_path, card)


def profile_with_read_timeout(seconds: float):  # type: ignore[no-untyped-def]
    prof = load_profile("generic-sam")
    return msgspec.structs.replace(prof, timeouts=msgspec.structs.replace(prof.timeouts, read=seconds))
