"""``posfleet server user ...``: named users for the dashboard (issue 18; docs/deployment.md "The first
administrator"). Every change is written to the audit trail with the operator's login name as actor."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from typing import Any

import click

ROLES = ["admin", "engineer", "viewer", "auditor"]


def operator() -> str:
    """Who ran the command, for the audit trail: ``cli:<login name>``."""
    try:
        name = os.getlogin()
    except OSError:
        import pwd

        name = pwd.getpwuid(os.getuid()).pw_name
    return f"cli:{name}"


def _run(config_path: str, work: Any) -> Any:
    """``await work(accounts, storage, settings)`` on the server's database."""
    from server.audit import Audit
    from server.auth.accounts import Accounts
    from server.storage import open_storage

    from .cli import _server_settings

    settings = _server_settings(config_path)

    async def go() -> Any:
        import time

        st = open_storage(settings.storage.url, settings.base_dir, readers=0)
        await st.open()
        try:
            return await work(Accounts(st, Audit(st, time.time)), st, settings)
        finally:
            await st.close()

    return asyncio.run(go())


def _password(env: str) -> str:
    pw = os.environ.get(env, "")
    if pw:
        return pw
    if not sys.stdin.isatty():
        raise click.UsageError(f"set {env} or run on a terminal to be asked for the password")
    first = getpass.getpass("password (10 characters or more): ")
    if getpass.getpass("again: ") != first:
        raise click.UsageError("the two passwords differ")
    return first


@click.group("user")
def user() -> None:
    """Named users of the dashboard: role, scope, password, two-factor."""


_CONFIG = click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))


@user.command("add")
@click.argument("name")
@_CONFIG
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--scope", default="province", show_default=True,
              help="province, or comma-separated city:NAME / county:NAME (the institutions' region / county)")
def user_add(name: str, config_path: str, role: str, scope: str) -> None:
    """Add a user; the password is asked for (or read from POSFLEET_USER_PASSWORD). Admins enrol two-factor
    at their first sign-in."""
    password = _password("POSFLEET_USER_PASSWORD")

    async def work(acc: Any, st: Any, settings: Any) -> dict[str, Any]:
        return await acc.add_user(name, role, scope, password, by=operator())  # type: ignore[no-any-return]

    try:
        made = _run(config_path, work)
    except ValueError as err:
        field, _, msg = str(err).partition(": ")
        raise click.BadParameter(msg or str(err),
                                 param_hint=field.upper() if field == "name" else f"--{field}") from None
    click.echo(f"added {made['role']} {made['name']} (scope {made['scope']})"
               + ("; two-factor is enrolled at the first sign-in" if role == "admin" else ""))


@user.command("list")
@_CONFIG
@click.option("--json", "as_json", is_flag=True, help="one JSON object: {\"users\": [...]}")
def user_list(config_path: str, as_json: bool) -> None:
    """Users: role, scope, two-factor, disabled or locked, last sign-in (never a password or secret)."""
    from .cli import _listing, _local_time

    async def work(acc: Any, st: Any, settings: Any) -> Any:
        return settings, await st.list_users()

    settings, rows = _run(config_path, work)
    tz = settings.timezone
    items = [{"name": u["name"], "role": u["role"], "scope": u["scope"], "two_factor": bool(u["totp_secret"]),
              "disabled": u["disabled"], "locked_until": _local_time(u["locked_until"] or None, tz),
              "last_login": _local_time(u["last_login"], tz)} for u in rows]
    _listing("users", items, as_json,
             "no users (add the first administrator with: posfleet server user add NAME --role admin)",
             ("NAME", "ROLE", "SCOPE", "2FA", "STATE", "LAST SIGN-IN"),
             [(i["name"], i["role"], i["scope"], "yes" if i["two_factor"] else "no",
               "disabled" if i["disabled"] else f"locked until {i['locked_until']}" if i["locked_until"] else "active",
               i["last_login"] or "never") for i in items])


def _one(config_path: str, name: str, call: str, **kw: Any) -> Any:
    async def work(acc: Any, st: Any, settings: Any) -> Any:
        return await getattr(acc, call)(name, **kw, by=operator())

    try:
        return _run(config_path, work)
    except KeyError:
        raise click.BadParameter(f"no user named {name!r} (see: posfleet server user list)",
                                 param_hint="NAME") from None


@user.command("disable")
@click.argument("name")
@_CONFIG
def user_disable(name: str, config_path: str) -> None:
    """Disable a user: refused at the next request, every session ended."""
    ended = _one(config_path, name, "set_disabled", disabled=True)
    click.echo(f"disabled {name}; {ended} session{'s' if ended != 1 else ''} ended")


@user.command("enable")
@click.argument("name")
@_CONFIG
def user_enable(name: str, config_path: str) -> None:
    """Enable a disabled user again (also lifts a lock-out)."""
    _one(config_path, name, "set_disabled", disabled=False)
    click.echo(f"enabled {name}")


@user.command("reset-2fa")
@click.argument("name")
@_CONFIG
def user_reset_2fa(name: str, config_path: str) -> None:
    """Forget a user's authenticator and recovery codes (a lost phone): they enrol again at the next sign-in."""
    ended = _one(config_path, name, "reset_2fa")
    click.echo(f"two-factor of {name} reset; {ended} session{'s' if ended != 1 else ''} ended")


@user.command("password")
@click.argument("name")
@_CONFIG
def user_password(name: str, config_path: str) -> None:
    """Set a user's password (asked for, or POSFLEET_USER_PASSWORD); their sessions end."""
    password = _password("POSFLEET_USER_PASSWORD")
    try:
        _one(config_path, name, "set_password", password=password)
    except ValueError as err:
        raise click.BadParameter(str(err).partition(": ")[2], param_hint="password") from None
    click.echo(f"password of {name} set")
