"""``posfleet diag remote --port P COMMAND...``: run one console command and exit."""

from __future__ import annotations

import click

from posfleet.cli_diag_common import (
    EXIT_FAILED,
    EXIT_FAULT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    exit_help,
    finish,
    lang_option,
    say,
)

EXIT_NO_ANSWER = EXIT_TIMEOUT

HELP = """Run one command on the terminal's diagnostic console on PORT and exit.

\b
Commands (the same as in `posfleet diag connect`):
  status | selftest [print=no] [card=no] | netcheck | logs [lines=N] [grep=TEXT]
  config show | versions | outbox [limit=N] | help
  with --credential: config set KEY VALUE [minutes=N] | reboot | outbox clear seq=N
                     reenrol [out=FILE] | reenrol install cert=@FILE

With --json the object's "ok" is true exactly when the exit code is 0: a selftest or netcheck that ran
and found a fault says "ok": false with exit code 6 (its findings are still in "data").

""" + exit_help((0, 1, 2, 3, 4, 6, 7), c0="done (selftest: every peripheral ok; netcheck: network ok)",
                c1="the command ran and failed", c2="bad usage (unknown command, bad option)",
                c3="the serial port cannot be opened", c4="no answer from a console on that port",
                c6="selftest or netcheck found a fault")


@click.command("remote", help=HELP, context_settings={"ignore_unknown_options": True})
@click.option("--port", required=True, help="serial port to the terminal: /dev/ttyUSB0, /dev/ttyACM0, COM3")
@click.option("--baud", type=int, default=115200, show_default=True)
@click.option("--credential", type=click.Path(dir_okay=False, exists=True), default=None,
              help="engineer credential file (for changing commands)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
@lang_option
@click.argument("words", nargs=-1, required=True)
def command(port: str, baud: int, credential: str | None, as_json: bool, lang: str, words: tuple[str, ...]) -> None:
    from . import render
    from .client import ConsoleClient, ConsoleError, NoAnswer, PortError, Refused
    from .shell import ParseError, Runner, command_names, parse

    code = EXIT_OK
    out: dict[str, object] = {"port": port, "command": " ".join(_shown(words))}
    client = ConsoleClient(port, baud)
    name = ""
    try:
        with client:
            runner = Runner(client, credential)
            runner.connect()
            name, args = parse(list(words), command_names(client))
            data = runner.run(name, args)
            out["data"] = data
            verdict = data.get("verdict") if isinstance(data, dict) else None
            if name in ("selftest", "netcheck") and verdict not in ("all ok", "network ok"):
                code = EXIT_FAULT
    except ParseError as err:
        code, out["code"], out["error"] = EXIT_USAGE, "usage", str(err) if as_json else err.says(lang)
    except PortError as err:
        code, out["error"] = EXIT_NOT_FOUND, str(err)
    except NoAnswer as err:
        code, out["error"] = EXIT_NO_ANSWER, str(err)
    except Refused as err:
        code = {"refused": EXIT_REFUSED, "usage": EXIT_USAGE}.get(err.code, EXIT_FAILED)
        out.update(code=err.code, error=str(err))
    except ConsoleError as err:
        code, out["error"] = EXIT_FAILED, str(err)
    failed = [click.style(say(lang, "console.failed", code=out.get("code", "error"), error=out["error"]), fg="red")] \
        if "error" in out else []
    finish(out, code, as_json=as_json, lines=lambda: [render.render(name, out["data"], lang)] if "data" in out else [],
           err_lines=lambda: failed)


def _shown(words: tuple[str, ...]) -> list[str]:
    """The command line as echoed in the output: the value of a secret setting hidden."""
    from wire.console import SECRET_KEY

    shown = list(words)
    if shown[:2] == ["config", "set"] and len(shown) > 3 and SECRET_KEY.search(shown[2]):
        shown[3] = "***"
    return shown
