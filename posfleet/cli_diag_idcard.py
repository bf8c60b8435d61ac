"""``posfleet diag idcard``: check an ID card reader on the spot (masked output only)."""

from __future__ import annotations

from typing import Any

import click

from drivers.errors import DriverError, exit_code
from drivers.profiles import ProfileError

from .cli_diag_common import EXIT_FAULT, EXIT_OK, exit_help, finish, lang_option, reason, say


def _human(result: dict[str, Any], lang: str) -> list[str]:
    lines = [
        say(lang, "idcard.sam_status", state=say(lang, "verdict.ok" if result["sam_ok"] else "verdict.fault")),
        say(lang, "idcard.sam_id", sam_id=result["sam_id"] or "-"),
    ]
    if result.get("sam_error"):
        err = result["sam_error"]
        lines.append(say(lang, "idcard.sam_error", reason=reason(lang, err["reason"]), sw3=err["sw3"]))
    card = result.get("card")
    if card is not None:
        if card["present"]:
            lines.append(say(lang, "idcard.card", type=card["type"], name=card["name_masked"], id=card["id_masked"]))
        elif card["present"] is None:
            lines.append(say(lang, "idcard.card.not_tried"))
        else:
            lines.append(say(lang, "idcard.card.none"))
    if result["sam_ok"]:
        lines.append(say(lang, "idcard.pass"))
    else:
        lines.append(say(lang, "idcard.fail", reason=reason(lang, (result.get("sam_error") or {}).get("reason"))))
    return lines


@click.command(
    "idcard",
    epilog=exit_help((0, 2, 3, 4, 5, 6), c0="pass: the SAM answers OK (and a card was read, with --read)",
                     c3="reader not found (port missing or busy)", c4="timeout (reader or SAM not answering)",
                     c5="protocol error (garbled replies)",
                     c6="fault (the SAM reports an error: the JSON's sam_error names it)"),
)
@click.option("--port", required=True, help="Serial port or pyserial URL, e.g. /dev/ttyUSB0.")
@click.option("--profile", default="generic-sam", show_default=True, help="Reader firmware profile.")
@click.option("--baud", type=int, default=None, help="Override the profile's baud rate.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--read", is_flag=True, help="Also read a card on the reader (masked name and ID only).")
@lang_option
def command(port: str, profile: str, baud: int | None, as_json: bool, read: bool, lang: str) -> None:
    """Check a second-generation ID card reader: SAM status and ID, optionally a card read.

    Personal data is masked; the photo is never decoded.
    """
    from drivers.idcard import IdCardReader, redact_text

    try:
        reader = IdCardReader(port, profile, baudrate=baud)
    except ProfileError as err:
        raise click.BadParameter(str(err), param_hint="--profile") from err

    try:
        with reader:
            result = reader.self_test(read=read)
    except DriverError as err:
        message = redact_text(str(err))
        payload: dict[str, Any] = {"sam_id": None, "sam_ok": False, "error": message}
        if read:  # the same keys as a run that worked, unknown values null
            payload["card"] = {"present": None, "type": None, "name_masked": None, "id_masked": None}
        finish(payload, exit_code(err), as_json=as_json, lines=lambda: [],
               err_lines=lambda: [say(lang, "idcard.fail", reason=message)])
    finish(result, EXIT_OK if result["sam_ok"] else EXIT_FAULT, as_json=as_json, lines=lambda: _human(result, lang))
