"""``posfleet diag idcard``: check an ID card reader on the spot (masked output only)."""

from __future__ import annotations

import json
from typing import Any

import click

from drivers.errors import DeviceNotFound, DriverError, ProtocolError, Timeout
from drivers.profiles import ProfileError

EXIT_PASS = 0
EXIT_NOT_FOUND = 3
EXIT_TIMEOUT = 4
EXIT_PROTOCOL = 5
EXIT_FAULT = 6


def _exit_code(err: DriverError) -> int:
    if isinstance(err, DeviceNotFound):
        return EXIT_NOT_FOUND
    if isinstance(err, Timeout):
        return EXIT_TIMEOUT
    if isinstance(err, ProtocolError):
        return EXIT_PROTOCOL
    return EXIT_FAULT  # DeviceFault, NotSupported


def _human(result: dict[str, Any]) -> list[str]:
    lines = [
        f"SAM status: {'OK' if result['sam_ok'] else 'FAULT'}",
        f"SAM ID:     {result['sam_id'] or '-'}",
    ]
    card = result.get("card")
    if card is not None:
        if card["present"]:
            lines.append(f"card:       {card['type']} {card['name_masked']} {card['id_masked']}")
        elif card["present"] is None:
            lines.append("card:       not tried (SAM not OK)")
        else:
            lines.append("card:       none on the reader (place a card; lift and re-place after a read)")
    return lines


@click.command(
    "idcard",
    epilog="\b\nExit codes:\n  0  pass\n  3  reader not found (port missing or busy)\n"
    "  4  timeout (reader or SAM not answering)\n  5  protocol error (garbled replies)\n"
    "  6  fault (the SAM reports an error)",
)
@click.option("--port", required=True, help="Serial port or pyserial URL, e.g. /dev/ttyUSB0.")
@click.option("--profile", default="generic-sam", show_default=True, help="Reader firmware profile.")
@click.option("--baud", type=int, default=None, help="Override the profile's baud rate.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--read", is_flag=True, help="Also read a card on the reader (masked name and ID only).")
@click.pass_context
def command(ctx: click.Context, port: str, profile: str, baud: int | None, as_json: bool, read: bool) -> None:
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
        code = _exit_code(err)
        message = redact_text(str(err))
        if as_json:
            payload: dict[str, Any] = {"sam_id": None, "sam_ok": False, "error": message, "exit_code": code}
            if read:  # the same keys as a run that worked, unknown values null
                payload["card"] = {"present": None, "type": None, "name_masked": None, "id_masked": None}
            click.echo(json.dumps(payload, ensure_ascii=False))
        else:
            click.echo(f"FAIL: {message}", err=True)
        ctx.exit(code)
        return

    code = EXIT_PASS if result["sam_ok"] else EXIT_FAULT
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
    else:
        for line in _human(result):
            click.echo(line)
        click.echo("PASS" if code == EXIT_PASS else "FAIL: SAM reports an error")
    ctx.exit(code)
