"""The ``posfleet`` console script: agent, server, ca, diag, sim, report, demo.

Subcommands import their packages lazily, so ``posfleet agent run`` on a terminal never
loads the server's web stack.

Exit codes: 0 success; 1 runtime failure; 2 usage or configuration error (the message
names the field); diag commands: 3 device not found, 4 timeout, 5 protocol error, 6 fault.
"""

from __future__ import annotations

import asyncio
import getpass
import importlib
import importlib.util
import json
import os
import signal
import sys
import threading
from pathlib import Path

import click

from . import __version__


def _setup_logging(level: str = "INFO", tz: str | None = None) -> None:
    from agent.logs import setup

    setup(level, tz)


class _Lazy(click.Group):
    def __init__(self, *args, modules: dict[str, str], **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._modules = modules

    """A click group whose subcommands live in modules imported only when used.

    ``modules`` maps a subcommand name to ``"package.module"`` (attribute ``command``) or
    ``"package.module:attribute"``."""

    @staticmethod
    def _split(target: str) -> tuple[str, str]:
        module, _, attr = target.partition(":")
        return module, attr or "command"

    def list_commands(self, ctx: click.Context) -> list[str]:
        present = {n for n, m in self._modules.items() if importlib.util.find_spec(self._split(m)[0]) is not None}
        return sorted(set(super().list_commands(ctx)) | present)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        needs = _NEEDS.get(name) if ctx.parent is None else None
        if needs and importlib.util.find_spec(needs[0]) is None:
            return _absent(name, *needs)
        if name in self._modules:
            module, attr = self._split(self._modules[name])
            if importlib.util.find_spec(module) is not None:
                return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
        return super().get_command(ctx, name)


# Top-level commands whose package the terminal's Debian package leaves out (packaging/build-agent-deb.sh): the
# package each needs, and what it is.
_NEEDS = {"server": ("server", "the fleet server"), "report": ("server", "the fleet server"),
          "demo": ("server", "the fleet server"), "ca": ("pki", "the fleet CA"),
          "sim": ("simulator", "the simulator")}


def _absent(name: str, package: str, what: str) -> click.Command:
    """``posfleet <name>`` where its package is not installed (a terminal): say so and exit 2, not a traceback."""

    def fail(args: tuple[str, ...]) -> None:
        click.echo(f"posfleet {name}: {what} is not installed here (Python package {package!r} is missing). This "
                   "looks like a terminal's posfleet-agent package, which carries only the agent and the engineer's "
                   "diag commands; run 'posfleet " + name + "' where the fleet server is installed "
                   "(docs/deployment.md).", err=True)
        sys.exit(2)

    return click.Command(name, callback=fail, help=f"({what}: not installed here)", hidden=True,
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                           "help_option_names": []})


@click.group(cls=_Lazy, modules={"demo": "posfleet.demo"})
@click.version_option(__version__, prog_name="posfleet")
def main() -> None:
    """posfleet: fleet monitoring for medical-insurance POS terminals."""


def _problems(problems: list, config_path: str, fail: bool = True) -> bool:
    """Print the file and setting problems (``wire.pemfiles.Problem``) to stderr, errors first; with ``fail``, exit 2
    when one is fatal. Returns whether one was."""
    from wire.pemfiles import report, running_user

    fatal = any(p.fatal for p in problems)
    if problems:
        head = f"{config_path}: configuration error (files checked as user {running_user()}):\n" if fatal else ""
        click.echo(head + report(problems), err=True)
    if fatal and fail:
        sys.exit(2)
    return fatal


def _config_writable(config_path: str) -> list:
    """A warning when the agent cannot rewrite its own configuration (remote set_config, console config set)."""
    from wire.pemfiles import Problem, running_user

    p = Path(config_path).resolve()
    if os.access(p, os.W_OK) and os.access(p.parent, os.W_OK | os.X_OK):
        return []
    return [Problem("--config", str(p), f"this file or its folder is not writable by user {running_user()}: remote "
                                        "set_config and the console's config changes will fail", fatal=False)]


# ---------------------------------------------------------------- agent
@main.group()
def agent() -> None:
    """The edge agent that runs on each terminal."""



def _in_child(fn):  # type: ignore[no-untyped-def]
    """``fn()`` (picklable result) run in a forked child that then exits: what it imports stays out of this process."""
    import os
    import pickle

    if not hasattr(os, "fork"):
        return fn()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no threads exist yet in the CLI at this point
        os.close(r)
        code = 0
        try:
            data = pickle.dumps((True, fn()))
        except BaseException as err:  # noqa: BLE001 - carried to the parent, raised there
            data, code = pickle.dumps((False, err)), 1
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value


@agent.command("run")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="agent TOML file")
def agent_run(config_path: str) -> None:
    """Run the agent until SIGTERM/SIGINT."""
    from agent.config import ConfigError, check_files, load
    from agent.release import launch

    try:
        cfg = load(config_path)
    except ConfigError as err:
        raise click.UsageError(str(err)) from err
    # every file checked before anything starts: exit 2 naming the setting and the path (issue 13); in a child
    # process, so the cryptography library the checks parse certificates with (~8 MB of RSS for good) never
    # enters the agent's own memory (benchmarks/bench_agent_day.py)
    _problems(_in_child(lambda: check_files(cfg, running=True)) + _config_writable(config_path), config_path)
    _setup_logging(cfg.log.level)
    try:  # an agent release installed by a software update runs instead of this code (exec, same PID)
        launch(cfg.path(cfg.data_dir), ["agent", "run", "--config", str(Path(config_path).resolve())])
    except (OSError, ValueError) as err:
        click.echo(f"agent releases: {err}; running the installed agent", err=True)
    from agent.main import Agent
    from agent.warmup import warm_up

    warm_up()  # before any of the agent's threads exist
    try:
        a = Agent(cfg, config_path=Path(config_path).resolve())
    except ConfigError as err:  # e.g. a key that the configured passphrase does not open
        raise click.UsageError(str(err)) from err
    except OSError as err:  # checked above; changed since? say which file
        raise click.UsageError(f"{err.filename}: {err.strerror}" if err.filename else str(err)) from err
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: a.stop())
    a.run()


@agent.command("check-config")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
def agent_check_config(config_path: str) -> None:
    """Validate a configuration file and the files it names (exist, readable by this user, certificates and key
    parse and match, not expired); print it with secrets hidden, and every problem on stderr (then exit 2).

    Run it as the agent's user (runuser -u posfleet -- posfleet agent check-config ...): as root every file is
    readable."""
    from agent.config import ConfigError, check_files, load

    try:
        cfg = load(config_path)
    except ConfigError as err:
        raise click.UsageError(str(err)) from err
    click.echo(json.dumps(cfg.redacted(), indent=2, ensure_ascii=False))
    if _problems(check_files(cfg) + _config_writable(config_path), config_path, fail=False):
        sys.exit(2)


@agent.command("enroll")
@click.option("--sn", required=True, help="terminal serial number (becomes the certificate CN)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def agent_enroll(sn: str, out_dir: str) -> None:
    """Make the terminal's private key and a CSR; only the CSR leaves the terminal."""
    from agent.enroll import make_key_and_csr

    try:
        key, csr = make_key_and_csr(sn, Path(out_dir))
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    click.echo(f"key: {key} (stays here)\ncsr: {csr} (send this to the fleet CA)")


# ---------------------------------------------------------------- server
@main.group(cls=_Lazy, modules={"command": "posfleet.cli_commands:command", "db": "posfleet.cli_db:db",
                                 "user": "posfleet.cli_users:user"})
def server() -> None:
    """The fleet server."""


def _server_settings(config_path: str):  # type: ignore[no-untyped-def]
    from server.settings import SettingsError, load

    try:
        return load(config_path)
    except SettingsError as err:
        raise click.UsageError(str(err)) from err


@server.command("run")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--log-level", default="INFO")
@click.option("--api-workers", type=click.IntRange(1, 32), default=None,
              help="processes answering the API on the port: the primary plus N-1 API-only ones "
                   "(default: http.api_workers, 1)")
@click.option("--api-only", is_flag=True, hidden=True)
@click.option("--port", type=int, default=None, hidden=True)
def server_run(config_path: str, log_level: str, api_workers: int | None, api_only: bool, port: int | None) -> None:
    """Run the fleet server (API + MQTT ingest; with --api-workers N, N-1 more processes serve the API)."""
    from server.serve import run
    from server.settings import check_files

    settings = _server_settings(config_path)
    # every file checked before anything starts: exit 2 naming the setting and the path (issue 13); an API-only
    # worker binds the port its primary holds (SO_REUSEPORT), so only the primary tries it first
    _problems(check_files(settings, listen=not api_only and port is None), config_path)
    _setup_logging(log_level, settings.timezone)  # the fleet's zone, as the API and the CLI show times
    run(settings, config_path, log_level, api_workers, api_only, port)


@server.command("check-config")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
def server_check_config(config_path: str) -> None:
    """Validate the settings and the files they name (the broker CA, the server's certificate and key, the
    database's folder, the command-signing key); print the settings, and every problem on stderr (then exit 2).

    Run it as the server's user (runuser -u posfleet -- posfleet server check-config ...)."""
    from server.settings import check_files

    settings = _server_settings(config_path)
    shown = settings.model_dump()
    if shown["mqtt"]["share_group"]:
        shown["mqtt"]["share_group"] = "***"
    click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
    if _problems(check_files(settings), config_path, fail=False):
        sys.exit(2)


@server.group("token")
def server_token() -> None:
    """API tokens."""


@server_token.command("create")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(["admin", "engineer", "viewer", "auditor"]), required=True)
@click.option("--owner", default="", help="the named user responsible for the script that uses it")
@click.option("--scope", default="province", show_default=True,
              help="province, or comma-separated city:NAME / county:NAME")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=None,
              help="refused after this many days (default: never)")
def token_create(config_path: str, name: str, role: str, owner: str, scope: str, expires_days: int | None) -> None:
    """Create a token; it is printed once and stored only hashed. Audited (token.create)."""
    import time

    from server.audit import Audit
    from server.auth import Scope, create_token

    from .cli_users import operator

    try:
        Scope.parse(scope)
    except ValueError as err:
        raise click.BadParameter(str(err).partition(": ")[2], param_hint="--scope") from None
    expires = time.time() + expires_days * 86400 if expires_days else None

    async def work(st):  # type: ignore[no-untyped-def]
        token = await create_token(st, name, role, owner, scope, expires)
        await Audit(st, time.time).record(operator(), "token.create", name, role=role, detail={
            "owner": owner, "scope": Scope.parse(scope).text(), "expires": expires})
        return token

    _, token = _with_storage(config_path, work)
    click.echo(token)


def _with_storage(config_path: str, work):  # type: ignore[no-untyped-def]
    """(settings, ``await work(storage)``) on the server's storage named in ``config_path``."""
    from server.storage import open_storage

    settings = _server_settings(config_path)

    async def go():  # type: ignore[no-untyped-def]
        st = open_storage(settings.storage.url, settings.base_dir, readers=0)
        await st.open()
        try:
            return await work(st)
        finally:
            await st.close()

    return settings, asyncio.run(go())


def _local_time(ts: float | None, tz: str) -> str | None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return None if ts is None else datetime.fromtimestamp(ts, ZoneInfo(tz)).isoformat(timespec="seconds")


@server_token.command("list")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="one JSON object: {\"tokens\": [...]}")
def token_list(config_path: str, as_json: bool) -> None:
    """List tokens: name, role, when created, revoked or not (never the token or its hash)."""
    settings, rows = _with_storage(config_path, lambda st: st.list_tokens())
    tz = settings.timezone
    items = [{"name": r["name"], "role": r["role"], "created": _local_time(r["created"], tz),
              "revoked": r["revoked_at"] is not None, "revoked_at": _local_time(r["revoked_at"], tz),
              "owner": r["owner"], "scope": r["scope"], "expires": _local_time(r["expires"], tz),
              "last_used": _local_time(r["last_used"], tz), "last_client": r["last_client"]} for r in rows]
    _listing("tokens", items, as_json, "no tokens (create one with: posfleet server token create)",
             ("NAME", "ROLE", "CREATED", "OWNER", "SCOPE", "LAST USED", "STATE"),
             [(i["name"], i["role"], i["created"] or "", i["owner"] or "-", i["scope"],
               f"{i['last_used']} {i['last_client']}" if i["last_used"] else "never",
               f"revoked {i['revoked_at']}" if i["revoked"] else f"expires {i['expires']}" if i["expires"]
               else "in force") for i in items])


def _listing(kind: str, items: list[dict[str, object]], as_json: bool, empty: str, head: tuple[str, ...],
             rows: list[tuple[str, ...]]) -> None:
    """``{kind: items}`` as JSON, or a table of ``rows`` under ``head`` (columns padded), or ``empty``."""
    if as_json:
        click.echo(json.dumps({kind: items}, ensure_ascii=False, indent=1))
        return
    if not items:
        click.echo(empty)
        return
    table = [head, *rows]
    widths = [max(len(row[c]) for row in table) for c in range(len(head))]
    for row in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@server_token.command("revoke")
@click.argument("name")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
def token_revoke(name: str, config_path: str) -> None:
    """Revoke every token named NAME: refused at once by the running server (every process).

    Names need not be unique; all tokens with that name are revoked. Revoking again changes nothing."""
    import time

    from server.audit import Audit

    from .cli_users import operator

    async def work(st):  # type: ignore[no-untyped-def]
        done, before = await st.revoke_tokens(name, time.time())
        if done:
            await Audit(st, time.time).record(operator(), "token.revoke", name, detail={"revoked": done})
        return done, before

    _, (done, before) = _with_storage(config_path, work)
    if done == 0 and before == 0:
        raise click.BadParameter(f"no token named {name!r} (see: posfleet server token list)", param_hint="NAME")
    if done == 0:
        click.echo(f"token {name!r} was already revoked; nothing changed")
    elif before == 0:
        click.echo(f"revoked {done} token{'s' if done > 1 else ''} named {name!r}")
    else:
        click.echo(f"revoked {done} token{'s' if done > 1 else ''} named {name!r} ({before} already revoked)")


# ---------------------------------------------------------------- ca
@main.group(cls=_Lazy, modules={"command-key": "posfleet.cli_commands:command_key",
                                 "update-key": "posfleet.cli_commands:update_key",
                                 "sign-renewals": "posfleet.cli_renewals:sign_renewals"})
def ca() -> None:
    """The fleet certificate authority."""


def _passphrase() -> str:
    pw = os.environ.get("POSFLEET_CA_PASSPHRASE")
    if pw:
        return pw
    if not sys.stdin.isatty():
        raise click.UsageError("set POSFLEET_CA_PASSPHRASE or run on a terminal to be asked for the CA passphrase")
    return getpass.getpass("CA passphrase: ")


def _open_ca(directory: str):  # type: ignore[no-untyped-def]
    from pki.ca import CAError, FleetCA

    try:
        return FleetCA(directory, _passphrase())
    except CAError as err:
        raise click.ClickException(str(err)) from err


@ca.command("init")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False))
@click.option("--name", default="posfleet fleet CA")
def ca_init(directory: str, name: str) -> None:
    """Create the fleet CA (key encrypted with the passphrase)."""
    from pki.ca import CAError, FleetCA

    try:
        FleetCA.init(directory, _passphrase(), name)
    except CAError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"fleet CA created in {directory}")


@ca.command("issue-broker")
@click.option("--dir", "directory", required=True)
@click.option("--name", "names", multiple=True, default=["localhost", "127.0.0.1"], show_default=True)
def ca_issue_broker(directory: str, names: tuple[str, ...]) -> None:
    """Issue the broker's server certificate."""
    cert, key = _open_ca(directory).issue_broker(list(names))
    click.echo(f"{cert}\n{key}")


@ca.command("issue-server")
@click.option("--dir", "directory", required=True)
@click.option("--name", default="posfleet-server", show_default=True,
              help="the identity (= MQTT client id): one per ingest process, posfleet-server-<name> for the others")
def ca_issue_server(directory: str, name: str) -> None:
    """Issue a fleet server MQTT client certificate (then reload the broker: the ACL names each server identity)."""
    from pki.ca import CAError

    try:
        cert, key = _open_ca(directory).issue_server_client(name=name)
    except CAError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{cert}\n{key}")


@ca.command("sign")
@click.option("--dir", "directory", required=True)
@click.option("--csr", "csr_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False))
@click.option("--days", default=825, show_default=True)
def ca_sign(directory: str, csr_path: str, out_path: str, days: int) -> None:
    """Sign a terminal's CSR (CN = terminal SN)."""
    from pki.ca import CAError

    try:
        pem = _open_ca(directory).sign_csr(Path(csr_path).read_bytes(), days)
    except CAError as err:
        raise click.ClickException(str(err)) from err
    Path(out_path).write_bytes(pem)
    click.echo(out_path)


@ca.command("revoke")
@click.option("--dir", "directory", required=True)
@click.option("--cn", default="")
@click.option("--serial", type=int, default=None)
def ca_revoke(directory: str, cn: str, serial: int | None) -> None:
    """Revoke by CN or serial; rewrite crl.pem and the broker's ACL. Then reload the broker (SIGHUP,
    `systemctl reload posfleet-broker`): new connections with the certificate are refused, and a unit left with no
    certificate in force can no longer publish or receive, even on a session open since before."""
    from pki.ca import CAError

    try:
        hit = _open_ca(directory).revoke(serial, cn)
    except CAError as err:
        raise click.ClickException(str(err)) from err
    for r in hit:
        click.echo(f"revoked {r.cn} serial {r.serial}")
    click.echo("now reload the broker: systemctl reload posfleet-broker (or kill -HUP its pid)", err=True)


@ca.command("broker-config")
@click.option("--dir", "directory", required=True)
@click.option("--port", default=8883, show_default=True)
@click.option("--bind", default="0.0.0.0", show_default=True)
@click.option("--data-dir", default=None, help="mosquitto persistence directory")
@click.option("--user", default="", help="account mosquitto drops to (must read broker.key)")
def ca_broker_config(directory: str, port: int, bind: str, data_dir: str | None, user: str) -> None:
    """Write mosquitto.conf and the ACL: TLS only, client certificates required, identity = CN."""
    from pki.ca import write_broker_config

    path = write_broker_config(Path(directory), port, bind, Path(data_dir) if data_dir else None, user)
    click.echo(path)


# ---------------------------------------------------------------- diag
@main.group(cls=_Lazy, modules={
    "modem": "posfleet.cli_diag_modem",
    "printer": "posfleet.cli_diag_printer",
    "idcard": "posfleet.cli_diag_idcard",
    "connect": "posfleet.diagconsole.connect",
    "remote": "posfleet.diagconsole.remote",
    "credential": "posfleet.diagconsole.credential",
    "capture": "posfleet.cli_diag_capture",
})
def diag() -> None:
    """Engineers' local diagnostics of the peripherals (same drivers as the agent)."""


# ---------------------------------------------------------------- sim
@main.group(cls=_Lazy, modules={"oracle": "posfleet.cli_sim_oracle", "run": "posfleet.cli_sim_run"})
def sim() -> None:
    """The simulator: emulated peripherals and fleets."""


@sim.command("device")
@click.argument("kind", type=click.Choice(["modem", "printer", "idcard"]))
@click.option("--profile", default=None, help="firmware profile name")
@click.option("--fault", "faults", multiple=True, metavar="NAME",
              help="fault switch to start with (repeatable), e.g. printer_paper_out, sim_missing")
def sim_device(kind: str, profile: str | None, faults: tuple[str, ...]) -> None:
    """Run one emulated peripheral on a pseudo-terminal and print its path (Ctrl-C stops).

    A fault switch name typed on stdin (one a line) turns that switch on, or off if it was on;
    the switches now on are printed after each line.
    """
    from drivers.profiles import ProfileError

    mod = importlib.import_module(f"simulator.emulators.{kind}")
    known = sorted(mod.FAULTS)
    for name in faults:
        if name not in mod.FAULTS:
            raise click.BadParameter(f"unknown {kind} fault {name!r} (known: {', '.join(known)})",
                                     param_hint="--fault")
    default = {"modem": "generic-3gpp", "printer": "generic-58mm", "idcard": "generic-sam"}[kind]
    try:
        dev = mod.serve(profile or default)
    except ProfileError as err:
        raise click.BadParameter(str(err), param_hint="--profile") from err
    dev.emulator.faults.update(faults)
    dev.poke()
    click.echo(dev.path)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def toggle_from_stdin() -> None:
        for line in sys.stdin:
            name = line.strip()
            if not name:
                continue
            if name not in mod.FAULTS:
                click.echo(f"unknown {kind} fault {name!r} (known: {', '.join(known)})", err=True)
                continue
            switches = dev.emulator.faults
            if name in switches:
                switches.discard(name)
            else:
                switches.add(name)
            dev.poke()
            click.echo("faults: " + (", ".join(sorted(switches)) or "none"))

    threading.Thread(target=toggle_from_stdin, name="fault-switches", daemon=True).start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        dev.stop()


# ---------------------------------------------------------------- report
@main.group(cls=_Lazy, modules={"ops": "posfleet.cli_report"})
def report() -> None:
    """Reports for the contract: the operations service report."""
