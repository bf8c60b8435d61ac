"""``posfleet diag printer``: is the thermal printer there, does it have paper, can it print?"""

from __future__ import annotations

import socket
from datetime import datetime

import click

from .cli_diag_common import (
    EXIT_FAULT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TIMEOUT,
    exit_help,
    finish,
    lang_option,
    reason,
    say,
)

HELP = """Check the ESC/POS thermal printer on PORT (a device path or pyserial URL).

Reads the real-time status (DLE EOT 1-4) and, with --test-page, prints the agent test
page (terminal SN, time, ruler, ASCII and Chinese samples, QR code, cut).

""" + exit_help((0, 2, 3, 4, 5, 6),
                c0="pass: online, paper present (near end is reported), cover closed, no error",
                c6="fault: paper out, cover open, cutter or other printer error, or the test page failed")


def _agent_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("posfleet")
    except PackageNotFoundError:
        return ""


@click.command("printer", help=HELP)
@click.option("--port", required=True, help="device path (/dev/ttyUSB0) or pyserial URL (socket://host:port)")
@click.option("--profile", default="generic-58mm", show_default=True, help="firmware profile name")
@click.option("--baud", type=int, default=None, help="override the profile's baud rate")
@click.option(
    "--json", "as_json", is_flag=True, help="print one JSON object: online, paper, cover_open, errors"
)
@click.option("--test-page", is_flag=True, help="also print the test page (only if the printer is ready)")
@click.option("--sn", default=None, help="terminal SN printed on the test page [default: host name]")
@lang_option
def command(
    port: str, profile: str, baud: int | None, as_json: bool, test_page: bool, sn: str | None, lang: str
) -> None:
    from drivers.errors import DriverError, exit_code
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
            desc = _describe(status.as_dict(), lang)
            if verdict.state != "ok":
                finish(payload, EXIT_FAULT, as_json=as_json,
                       lines=lambda: [say(lang, "printer.fault", reason=reason(lang, verdict.reason), desc=desc)])
            if test_page:
                printer.print_test_page(
                    sn or socket.gethostname(), datetime.now().astimezone(), _agent_version()
                )
                payload["test_page"] = "printed"
            text = say(lang, "printer.ok", desc=desc) + (f"; {reason(lang, note)}" if note else "")
            if test_page:
                text += "; " + say(lang, "printer.test_page")
            finish(payload, EXIT_OK, as_json=as_json, lines=lambda: [text])
    except DriverError as err:
        code, message = exit_code(err), str(err)  # the lambdas below outlive nothing, but read no except variable
        if code == EXIT_FAULT:  # the printer answered and reported a fault: what it said before stays
            payload = {**base, **last, "state": "fault", "reason": message}
            payload["errors"] = [*last.get("errors", []), getattr(err, "code", "") or "fault"]  # type: ignore[misc]
            finish(payload, code, as_json=as_json, lines=lambda: [say(lang, "printer.fault.plain", reason=message)])
        what, key = {EXIT_NOT_FOUND: ("not found", "printer.not_found"),
                     EXIT_TIMEOUT: ("not answering", "printer.timeout")}.get(code, ("protocol error", "printer.protocol"))
        payload = {**base, **not_answering, "errors": [what], "state": "unknown" if code == EXIT_NOT_FOUND else "fault",
                   "reason": message}
        finish(payload, code, as_json=as_json, lines=lambda: [say(lang, key, error=message)])


def _describe(st: dict[str, object], lang: str) -> str:
    paper = st["paper"]
    parts = [
        say(lang, "printer.online") if st["online"] else say(lang, "printer.offline"),
        say(lang, "printer.paper", paper=say(lang, f"paper.{paper}") if paper in ("ok", "near_end", "out") else paper),
        say(lang, "printer.cover_open") if st["cover_open"] else say(lang, "printer.cover_closed"),
    ]
    if st["errors"]:
        parts.append(say(lang, "printer.errors", errors=", ".join(str(e) for e in st["errors"])))  # type: ignore[union-attr]
    return ("，" if lang == "zh" else ", ").join(parts)
