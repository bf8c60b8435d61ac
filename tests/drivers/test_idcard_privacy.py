"""Personal data from an ID card never leaves the driver unmasked.

Reads the synthetic card with DEBUG logging captured, runs the diag command, provokes
errors in the middle of a read, and looks for the full name, ID number, address and birth
date (as text, as UCS-2LE bytes and as hex) in every log record, output and message.
"""

from __future__ import annotations

import json
import logging

import msgspec
import pytest
from click.testing import CliRunner

from drivers.errors import DriverError, ProtocolError, Timeout
from drivers.idcard import IdCardReader, RedactingFilter, load_profile
from posfleet.cli_diag_idcard import command
from simulator.emulators.idcard import SyntheticCard, serve

CARD = SyntheticCard.resident()
SECRETS = [CARD.text.name, CARD.text.id_number, CARD.text.address, CARD.text.birth]
NAME_MASKED, ID_MASKED = "申**", "1101**********1284"


def forms(secret: str) -> list[str]:
    """The ways a secret could show up in text: plain, and as bytes in repr or hex."""
    out = [secret]
    for enc in ("utf-16-le", "utf-8"):
        raw = secret.encode(enc)
        out += [repr(raw)[2:-1], raw.hex(), raw.hex(" ")]
    return [f for f in out if len(f) >= 4 or f == secret]


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        for form in forms(secret):
            assert form not in text, f"{where} leaks {form!r}"


@pytest.fixture
def device():
    pty = serve(card=CARD)
    yield pty
    pty.stop()


def test_forms_would_catch_a_leak():
    """Guard for the guard: an unmasked name or a raw text block is caught."""
    with pytest.raises(AssertionError):
        assert_clean(f"name={CARD.text.name}", "probe")
    with pytest.raises(AssertionError):
        assert_clean(repr(CARD.text_block()), "probe")


def test_card_read_and_diag_never_leak(device, caplog):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    with IdCardReader(device.path) as reader:
        card = reader.read_placed_card()
        assert card is not None
        seen += [repr(card), str(card), json.dumps(vars(card), ensure_ascii=False)]
        seen.append(repr(vars(reader)))  # nothing unmasked kept on the driver object
        device.emulator.lift()
        device.emulator.place()
        seen.append(json.dumps(reader.self_test(read=True), ensure_ascii=False))

    device.emulator.lift()
    device.emulator.place()
    runner = CliRunner()
    as_json = runner.invoke(command, ["--port", device.path, "--json", "--read"])
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.stdout)
    assert payload["card"] == {"present": True, "type": "resident", "name_masked": NAME_MASKED,
                               "id_masked": ID_MASKED}
    device.emulator.lift()
    device.emulator.place()
    human = runner.invoke(command, ["--port", device.path, "--read"])
    assert human.exit_code == 0, human.output
    assert NAME_MASKED in human.stdout and ID_MASKED in human.stdout
    seen += [as_json.output, human.output]

    logs = caplog.text + "".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert ID_MASKED in logs  # the read is logged, masked
    assert NAME_MASKED in seen[0] and ID_MASKED in seen[0]
    for i, text in enumerate([*seen, logs]):
        assert_clean(text, f"output #{i}")


def test_errors_in_the_middle_of_a_read_never_leak(caplog):
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    # long read reply trickling in 64-byte chunks; a read timeout shorter than the reply
    pty = serve(card=CARD, chunk=64, chunk_delay=0.03)
    p = load_profile()
    p = msgspec.structs.replace(p, timeouts=msgspec.structs.replace(p.timeouts, read=0.25))
    try:
        with IdCardReader(pty.path, p) as reader:
            assert reader.find_card()
            reader.select_card()
            with pytest.raises(Timeout) as timeout:
                reader.read_card()
            messages += [str(timeout.value), repr(timeout.value), repr(timeout.value.partial)]
    finally:
        pty.stop()

    # the read reply itself fails its checksum
    pty = serve(card=CARD)
    try:
        with IdCardReader(pty.path) as reader:
            assert reader.find_card()
            reader.select_card()
            pty.emulator.faults.add("bad_checksum")
            with pytest.raises(ProtocolError) as bad:
                reader.read_card()
            messages += [str(bad.value), repr(bad.value), repr(bad.value.raw)]
    finally:
        pty.stop()

    # a card of an unknown type: decoding is refused, and the refusal shows nothing either
    odd = serve(card=SyntheticCard(text=CARD.text, type_mark="Y"))
    try:
        with IdCardReader(odd.path) as reader, pytest.raises(DriverError) as unknown:
            reader.read_placed_card()
        messages += [str(unknown.value), repr(unknown.value)]
    finally:
        odd.stop()

    for i, text in enumerate([*messages, caplog.text]):
        assert_clean(text, f"message #{i}")


def test_diag_error_output_is_masked(device):
    device.emulator.faults.add("bad_checksum")
    result = CliRunner().invoke(command, ["--port", device.path, "--json", "--read"])
    assert result.exit_code == 5
    assert "checksum" in json.loads(result.stdout)["error"]
    assert_clean(result.output, "diag error output")


def test_redacting_filter_masks_ids_in_other_log_lines(caplog):
    log = logging.getLogger("tests.idcard.redact")
    handler_filter = RedactingFilter()
    log.addFilter(handler_filter)
    try:
        with caplog.at_level(logging.INFO, logger="tests.idcard.redact"):
            log.info("settlement for %s at %s", CARD.text.id_number, "clinic 469030-101")
    finally:
        log.removeFilter(handler_filter)
    assert ID_MASKED in caplog.text and "clinic 469030-101" in caplog.text
    assert CARD.text.id_number not in caplog.text


def test_log_redactor_masks_foreigner_permit_numbers_too() -> None:
    from drivers.idcard.mask import redact_text

    text = "reader said USA310087060512 and 11010519491231002X, SAM 05.01-20101103-0001234567"
    out = redact_text(text)
    assert "USA310087060512" not in out and "11010519491231002X" not in out
    assert "05.01-20101103-0001234567" in out, "a SAM id is not personal data"
