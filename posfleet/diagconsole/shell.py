"""``posfleet diag connect``: an interactive shell on a terminal's diagnostic console.

Standard library only: ``cmd`` for the loop and help, ``readline`` for history (kept in
``~/.posfleet_console_history``) and tab completion of commands and configuration keys.
The line syntax is the one ``posfleet diag remote`` takes::

    status | selftest print=no | logs lines=50 grep=modem | config show
    config set link.host "mqtt.example.cn" minutes=15 | outbox clear seq=42
    reenrol [out=FILE] | reenrol install cert=@FILE | auth FILE | json | quit
"""

from __future__ import annotations

import cmd
import json
import shlex
from pathlib import Path
from typing import IO, Any

import click

from posfleet.cli_diag_common import DEFAULT_LANG, say

from . import render
from .client import ConsoleClient, ConsoleError, NoAnswer, PortError, Refused, SessionClosed

HISTORY = Path.home() / ".posfleet_console_history"
LOCAL = ("auth", "json", "quit", "exit", "help")


class ParseError(ValueError):
    """The line is not a console command; the message says what is expected (in English; :meth:`says` gives it in
    the output's language from the label table)."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(say("en", key, **values))
        self.key, self.values = key, values

    def says(self, lang: str) -> str:
        return say(lang, self.key, **self.values)


def command_names(client: ConsoleClient) -> list[str]:
    from wire.console import COMMANDS

    names = [c["name"] for c in client.info.get("commands") or []]
    return names or list(COMMANDS)


def parse(words: list[str], names: list[str]) -> tuple[str, dict[str, Any]]:
    """Words of a command line -> (command, args). ``@FILE`` as a value reads the file."""
    if not words:
        raise ParseError("console.parse.empty")
    if len(words) >= 2 and f"{words[0]} {words[1]}" in names:
        name, rest = f"{words[0]} {words[1]}", words[2:]
    elif words[0] in names:
        name, rest = words[0], words[1:]
    elif words[0] == "config" and len(words) == 1:
        name, rest = "config show", []
    else:
        raise ParseError("console.parse.unknown", command=repr(" ".join(words[:2])))
    args: dict[str, Any] = {}
    if name == "config set":
        if len(rest) < 2 or "=" in rest[0]:
            raise ParseError("console.parse.config_set")
        args["key"], args["value"] = rest[0], rest[1]
        rest = rest[2:]
    for word in rest:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise ParseError("console.parse.option", word=repr(word))
        if value.startswith("@"):
            try:
                value = Path(value[1:]).read_text(encoding="utf-8")
            except OSError as err:
                raise ParseError("console.parse.file", key=key, file=value[1:], error=err.strerror) from err
        args[key] = value
    return name, args


def _flat_keys(obj: Any, prefix: str = "") -> list[str]:
    if isinstance(obj, dict):
        out: list[str] = []
        for k, v in obj.items():
            out += _flat_keys(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [prefix]


class Runner:
    """Run parsed commands with one client; used by the shell and by ``remote``."""

    def __init__(self, client: ConsoleClient, credential: str | None = None) -> None:
        self.client = client
        self.credential = credential

    def connect(self) -> dict[str, Any]:
        info = self.client.hello()
        if self.credential:
            self.client.auth(self.credential)
        return info

    def run(self, name: str, args: dict[str, Any]) -> Any:
        local = {k: args.pop(k) for k in ("out",) if k in args and name == "reenrol"}
        try:
            data = self.client.call(name, args)
        except SessionClosed:
            self.connect()  # idle timeout or the agent restarted: a new session, same credential
            data = self.client.call(name, args)
        if name == "reenrol" and isinstance(data, dict) and data.get("csr"):
            out = Path(local.get("out") or f"{data.get('sn', 'terminal')}.csr")
            out.write_text(data["csr"])
            data = {**data, "saved_to": str(out)}
        return data


class ConsoleShell(cmd.Cmd):
    def __init__(self, runner: Runner, *, as_json: bool = False, stdin: IO[str] | None = None,
                 stdout: IO[str] | None = None, lang: str = DEFAULT_LANG) -> None:
        super().__init__(stdin=stdin, stdout=stdout)
        self.lang = lang
        if stdin is not None:
            self.use_rawinput = False
        self.runner = runner
        self.as_json = as_json
        self._config_keys: list[str] = []
        self._set_prompt()

    # output -------------------------------------------------------------------------
    def _echo(self, text: str, err: bool = False, fg: str | None = None) -> None:
        click.echo(click.style(text, fg=fg) if fg else text, file=self.stdout, err=err and self.stdout is None)

    def _set_prompt(self) -> None:
        c = self.runner.client
        who = f" [{c.engineer['engineer']}]" if c.engineer else ""
        self.prompt = f"{c.info.get('sn', '?')}{who}> "

    def preloop(self) -> None:
        info = self.runner.client.info
        county = say(self.lang, "console.shell.county", county=info["county"]) if info.get("county") else ""
        self._echo(say(self.lang, "console.shell.connected", sn=info.get("sn"), county=county,
                       version=info.get("version"), session=info.get("session"), idle=info.get("idle_minutes")))

    def emptyline(self) -> bool:
        return False

    def precmd(self, line: str) -> str:
        """A `config set` of a secret setting stays out of the history file."""
        from wire.console import SECRET_KEY

        words = line.split()
        if self.use_rawinput and words[:2] == ["config", "set"] and len(words) > 3 and SECRET_KEY.search(words[2]):
            try:
                import readline

                n = readline.get_current_history_length()
                if n:
                    readline.remove_history_item(n - 1)
            except (ImportError, ValueError):
                pass
        return line

    # commands -------------------------------------------------------------------------
    def default(self, line: str) -> bool:
        if line.strip() == "EOF":
            return True
        try:
            name, args = parse(shlex.split(line), command_names(self.runner.client))
        except (ParseError, ValueError) as err:
            self._echo(err.says(self.lang) if isinstance(err, ParseError) else str(err), fg="yellow")
            return False
        self._run(name, args)
        return False

    def _run(self, name: str, args: dict[str, Any]) -> None:
        try:
            data = self.runner.run(name, args)
        except Refused as err:
            self._echo(say(self.lang, "console.failed", code=err.code, error=err), fg="red")
            return
        except (NoAnswer, PortError) as err:
            self._echo(str(err), fg="red")
            return
        except ConsoleError as err:
            self._echo(str(err), fg="red")
            return
        if name == "config show" and isinstance(data, dict):
            self._config_keys = _flat_keys(data.get("config") or {})
        self._echo(json.dumps(data, ensure_ascii=False, indent=1) if self.as_json else render.render(name, data, self.lang))

    def do_help(self, arg: str) -> bool:
        """help: the terminal's commands and the shell's own."""
        self._run("help", {})
        self._echo(say(self.lang, "console.shell.help"))
        return False

    def do_auth(self, arg: str) -> bool:
        """auth FILE: prove an engineer credential to the terminal (needed for changing commands)."""
        if not arg.strip():
            self._echo(say(self.lang, "console.shell.auth_usage"), fg="yellow")
            return False
        try:
            data = self.runner.client.auth(arg.strip())
        except ConsoleError as err:
            self._echo(say(self.lang, "console.shell.refused", error=err), fg="red")
            return False
        self.runner.credential = arg.strip()
        self._echo(say(self.lang, "console.shell.authenticated", engineer=data["engineer"], scope=", ".join(data["scope"])),
                   fg="green")
        self._set_prompt()
        return False

    def do_json(self, arg: str) -> bool:
        """json: toggle JSON output."""
        self.as_json = not self.as_json
        self._echo(say(self.lang, "console.shell.json", state=say(self.lang, "console.shell.json." + ("on" if self.as_json
                                                                                                     else "off"))))
        return False

    def do_quit(self, arg: str) -> bool:
        """quit: close the session."""
        return True

    do_exit = do_quit
    do_EOF = do_quit

    # completion -------------------------------------------------------------------------
    def completenames(self, text: str, *ignored: Any) -> list[str]:
        firsts = {n.split()[0] for n in command_names(self.runner.client)} | set(LOCAL)
        return sorted(n for n in firsts if n.startswith(text))

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line[:begidx].split()
        names = command_names(self.runner.client)
        if len(words) == 1:
            return sorted({n.split()[1] for n in names if n.startswith(words[0] + " ") and
                           n.split()[1].startswith(text)})
        if words[:2] == ["config", "set"] and len(words) == 2:
            if not self._config_keys:
                try:
                    data = self.runner.run("config show", {})
                    self._config_keys = _flat_keys(data.get("config") or {})
                except ConsoleError:
                    return []
            return [k for k in self._config_keys if k.startswith(text) and not k.startswith("console.")]
        return []


def run_shell(runner: Runner, as_json: bool = False, lang: str = DEFAULT_LANG) -> None:
    import sys

    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline

            readline.set_completer_delims(" \t\n")
            if HISTORY.exists():
                readline.read_history_file(HISTORY)
        except (ImportError, OSError):
            interactive = False
    shell = ConsoleShell(runner, as_json=as_json, lang=lang)
    try:
        shell.cmdloop()
    except KeyboardInterrupt:
        click.echo("")
    finally:
        if interactive:
            try:
                import readline

                readline.set_history_length(1000)
                readline.write_history_file(HISTORY)
            except OSError:
                pass
