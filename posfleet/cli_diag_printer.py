"""``posfleet diag printer``: is the thermal printer there, does it have paper, can it print?"""

from __future__ import annotations

import json
import socket
import sys
from datetime import datetime

import click

EXIT_PASS = 0
EXIT_NOT_FOUND = 3
EXIT_TIMEOUT = 4
EXIT_PROTOCOL = 5
EXIT_FAULT = 6

HELP = """Check the ESC/POS thermal printer on PORT (a device path or pyserial URL).

Reads the real-time status (DLE EOT 1-4) and, with --test-page, prints the agent test
page (terminal SN, time, ruler, ASCII and Chinese samples, QR code, cut).

\b
Exit codes:
  0  pass: online, paper present (near end is reported), cover closed, no error
  3  not found: the port cannot be opened
  4  timeout: the printer is not answering
  5  protocol error: the printer answered bytes that are not a status reply
  6  fault: paper out, cover open, cutter or other printer error, or the test page failed
"""


def _agent_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("posfleet")
    except PackageNotFoundError:
        return ""


def _emit(as_json: bool, payload: dict[str, object], text: str) -> None:
    if as_json:
        click.echo(json.dumps(payload, ensure_ascii=False))
    else:
        click.echo(text)


@click.command("printer", help=HELP)
@click.option("--port", required=True, help="device path (/dev/ttyUSB0) or pyserial URL (socket://host:port)")
@click.option("--profile", default="generic-58mm", show_default=True, help="firmware profile name")
@click.option("--baud", type=int, default=None, help="override the profile's baud rate")
@click.option(
    "--json", "as_json", is_flag=True, help="print one JSON object: online, paper, cover_open, errors"
)
@click.option("--test-page", is_flag=True, help="also print the test page (only if the printer is ready)")
@click.option("--sn", default=None, help="terminal SN printed on the test page [default: host name]")
def command(
    port: str, profile: str, baud: int | None, as_json: bool, test_page: bool, sn: str | None
) -> None:
    from drivers.errors import DeviceFault, DeviceNotFound, ProtocolError, Timeout
    from drivers.printer.device import Printer, assess
    from drivers.profiles import ProfileError

    try:
        printer = Printer(port, profile, baudrate=baud)
    except ProfileError as err:
        raise click.BadParameter(str(err), param_hint="--profile") from err

    base: dict[str, object] = {"port": port, "profile": profile}
    not_answering: dict[str, object] = {"online": False, "paper": None, "cover_open": None}
    last: dict[str, object] = dict(not_answering)
    try:
        with printer:
            status = printer.status()
            last = status.as_dict()
            verdict = assess(status)
            payload = {**base, **status.as_dict(), "state": verdict.state, "reason": verdict.reason}
            note = verdict.detail.get("note")
            if verdict.state != "ok":
                _emit(as_json, payload, f"printer FAULT: {verdict.reason} ({_describe(status.as_dict())})")
                sys.exit(EXIT_FAULT)
            if test_page:
                printer.print_test_page(
                    sn or socket.gethostname(), datetime.now().astimezone(), _agent_version()
                )
                payload["test_page"] = "printed"
            text = f"printer ok: {_describe(status.as_dict())}" + (f"; {note}" if note else "")
            if test_page:
                text += "; test page printed"
            _emit(as_json, payload, text)
            sys.exit(EXIT_PASS)
    except DeviceNotFound as err:
        payload = {**base, **not_answering, "errors": ["not found"], "state": "unknown", "reason": str(err)}
        _emit(as_json, payload, f"printer NOT FOUND: {err}")
        sys.exit(EXIT_NOT_FOUND)
    except Timeout as err:
        payload = {**base, **not_answering, "errors": ["not answering"], "state": "fault", "reason": str(err)}
        _emit(as_json, payload, f"printer NOT ANSWERING: {err}")
        sys.exit(EXIT_TIMEOUT)
    except ProtocolError as err:
        payload = {
            **base,
            **not_answering,
            "errors": ["protocol error"],
            "state": "fault",
            "reason": str(err),
        }
        _emit(as_json, payload, f"printer PROTOCOL ERROR: {err}")
        sys.exit(EXIT_PROTOCOL)
    except DeviceFault as err:
        payload = {**base, **last, "state": "fault", "reason": str(err)}
        payload["errors"] = [*last.get("errors", []), err.code or "fault"]  # type: ignore[misc]
        _emit(as_json, payload, f"printer FAULT: {err}")
        sys.exit(EXIT_FAULT)


def _describe(st: dict[str, object]) -> str:
    parts = [
        "online" if st["online"] else "offline",
        f"paper {st['paper']}",
        "cover open" if st["cover_open"] else "cover closed",
    ]
    if st["errors"]:
        parts.append("errors: " + ", ".join(str(e) for e in st["errors"]))  # type: ignore[union-attr]
    return ", ".join(parts)
