"""``posfleet server db``: the database's schema status and upgrade, backup and restore, and a copy between
backends (server/storage/ops.py does the work)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click


def _url(config_path: str | None, url: str | None) -> tuple[str, str]:
    """(storage URL, folder relative SQLite paths are read from): ``--url``, else ``[storage] url`` of ``--config``."""
    if url:
        return url, ""
    if not config_path:
        raise click.UsageError("give --config server.toml or --url")
    from server.settings import SettingsError, load

    try:
        settings = load(config_path)
    except SettingsError as err:
        raise click.UsageError(str(err)) from err
    return settings.storage.url, settings.base_dir


def _which() -> list:  # the options every command but copy takes
    return [click.option("--config", "config_path", type=click.Path(dir_okay=False), help="server.toml"),
            click.option("--url", help="a storage URL instead of --config's [storage] url")]


def _options(f):  # type: ignore[no-untyped-def]
    for opt in reversed(_which()):
        f = opt(f)
    return f


def _fail(err: Exception) -> None:
    from server.storage.postgres import redact

    click.echo(f"posfleet server db: {redact(str(err))}", err=True)
    sys.exit(2)


@click.group()
def db() -> None:
    """The server's database: status, upgrade, backup, restore, copy between SQLite and PostgreSQL."""


@db.command("status")
@_options
def status(config_path: str | None, url: str | None) -> None:
    """Backend, schema version (the database's and this server's), rows per table (JSON). Opening the database
    upgrades it, as the server's start does."""
    from server.storage import ops

    u, base = _url(config_path, url)
    try:
        click.echo(json.dumps(asyncio.run(ops.status(u, base)), indent=2))
    except Exception as err:  # noqa: BLE001 - unreachable, refused, newer: say so, exit 2
        _fail(err)


@db.command("upgrade")
@_options
def upgrade(config_path: str | None, url: str | None) -> None:
    """Bring the database to this server's schema (the server also does it at start); refuses a newer one."""
    from server.storage import ops

    u, base = _url(config_path, url)
    try:
        before, after = asyncio.run(ops.upgrade(u, base))
    except Exception as err:  # noqa: BLE001
        _fail(err)
    click.echo(f"schema {before if before is not None else 'none'} -> {after}")


@db.command("backup")
@_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the backup file to write")
def backup(config_path: str | None, url: str | None, out: str) -> None:
    """A consistent backup while the server runs (SQLite online backup; PostgreSQL pg_dump --format=custom)."""
    from server.storage import ops

    u, base = _url(config_path, url)
    try:
        ops.backup(u, Path(out), base)
    except Exception as err:  # noqa: BLE001
        _fail(err)
    click.echo(f"backup written: {out}")


@db.command("restore")
@_options
@click.option("--from", "backup_file", required=True, type=click.Path(dir_okay=False, exists=True))
def restore(config_path: str | None, url: str | None, backup_file: str) -> None:
    """Put a backup back, with every server process stopped (SQLite: the file replaced, the old one kept as
    .before-restore; PostgreSQL: pg_restore --clean)."""
    from server.storage import ops

    u, base = _url(config_path, url)
    try:
        ops.restore(u, Path(backup_file), base)
    except Exception as err:  # noqa: BLE001
        _fail(err)
    click.echo("restored; start the server (it upgrades an older schema)")


@db.command("copy")
@click.option("--from", "src", required=True, help="source storage URL (sqlite:///PATH or postgresql://...)")
@click.option("--to", "dst", required=True, help="target storage URL: a new, empty database")
def copy(src: str, dst: str) -> None:
    """Copy a whole database into a new one of the other backend (the servers stopped), then check every table's
    rows and the availability roll-ups are the same on both."""
    from server.storage import ops

    try:
        rows = asyncio.run(ops.copy(src, dst, say=lambda s: click.echo(s, err=True)))
    except Exception as err:  # noqa: BLE001
        _fail(err)
    click.echo(f"copied and checked: {sum(rows.values()):,} rows in {len(rows)} tables, the same availability roll-ups")
