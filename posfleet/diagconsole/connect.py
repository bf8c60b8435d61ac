"""``posfleet diag connect --port P``: the interactive console shell."""

from __future__ import annotations

import sys

import click

from posfleet.cli_diag_common import EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_TIMEOUT, lang_option, say


@click.command("connect")
@click.option("--port", required=True, help="serial port to the terminal: /dev/ttyUSB0, /dev/ttyACM0, COM3")
@click.option("--baud", type=int, default=115200, show_default=True)
@click.option("--credential", type=click.Path(dir_okay=False, exists=True), default=None,
              help="engineer credential file: authenticate at once (or later with `auth FILE`)")
@click.option("--json", "as_json", is_flag=True, help="show replies as JSON")
@lang_option
def command(port: str, baud: int, credential: str | None, as_json: bool, lang: str) -> None:
    """Open an interactive shell on a terminal's diagnostic console (history, completion, help).

    Exit codes: 0 closed normally; 3 the port cannot be opened; 4 no console answers on it;
    7 the credential was refused."""
    from .client import ConsoleClient, NoAnswer, PortError, Refused
    from .shell import Runner, run_shell

    client = ConsoleClient(port, baud)
    try:
        with client:
            runner = Runner(client, credential)
            runner.connect()
            run_shell(runner, as_json, lang)
    except PortError as err:
        click.echo(click.style(str(err), fg="red"), err=True)
        sys.exit(EXIT_NOT_FOUND)
    except NoAnswer as err:
        click.echo(click.style(str(err), fg="red"), err=True)
        sys.exit(EXIT_TIMEOUT)
    except Refused as err:
        click.echo(click.style(say(lang, "console.failed", code=err.code, error=err), fg="red"), err=True)
        sys.exit(EXIT_REFUSED)
