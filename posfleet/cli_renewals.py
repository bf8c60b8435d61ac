"""``posfleet ca sign-renewals``: the CA's host signs the terminals' renewal requests the server holds, and revokes
the certificates they replaced (server/renewal.py, docs/decisions/026-certificate-renewal.md).

Run by root on the CA's host (the CA folder is root's), by hand or from a timer: the CA passphrase comes from
``POSFLEET_CA_PASSPHRASE``, a file (``--passphrase-file``: e.g. ``$CREDENTIALS_DIRECTORY/ca-passphrase`` from an
encrypted systemd credential, so it is never on disk in clear), or the terminal.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import click


async def sign_and_revoke(ca: Any, url: str, base_dir: str, days: int) -> dict[str, list[str]]:
    """Sign every ``requested`` renewal, revoke what every ``switched`` one replaced. What was done, by SN."""
    import time

    from pki.ca import CAError
    from server.storage import open_storage
    from server.storage import renewals as store

    done: dict[str, list[str]] = {"signed": [], "refused": [], "revoked": []}
    st = open_storage(url, base_dir, readers=1)
    await st.open()
    try:
        for rec in await store.every(st, "requested"):
            sn = rec["sn"]
            try:
                pem = ca.sign_csr(rec["csr"].encode(), days, expect_sn=sn)
            except CAError as err:
                rec.update(state="refused", error=str(err))
                done["refused"].append(f"{sn}: {err}")
            else:
                from cryptography import x509

                serial = format(x509.load_pem_x509_certificate(pem).serial_number, "x")
                rec.update(state="signed", cert=pem.decode(), serial=serial, signed=time.time(), sent=0)
                done["signed"].append(f"{sn}: {serial}")
            await store.put(st, sn, rec)
        for rec in await store.every(st, "switched"):
            sn, keep = rec["sn"], int(rec["serial"], 16)
            old = [r.serial for r in ca.issued() if r.kind == "terminal" and r.cn == sn and not r.revoked
                   and r.serial != keep]
            for serial in old:
                ca.revoke(serial=serial)
                done["revoked"].append(f"{sn}: {serial:x}")
            rec.update(state="done", revoked=[format(s, "x") for s in old], done=time.time())
            await store.put(st, sn, rec)
    finally:
        await st.close()
    return done


@click.command("sign-renewals")
@click.option("--dir", "directory", required=True, help="the fleet CA's folder")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="the server's server.toml (its database holds the requests)")
@click.option("--passphrase-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="read the CA passphrase from this file (e.g. a systemd credential)")
@click.option("--reload", "reload_cmd", default="",
              help="run this after a revocation so the broker reads the new CRL, e.g. "
                   "'systemctl reload posfleet-broker'")
def sign_renewals(directory: str, config_path: str, passphrase_file: str | None, reload_cmd: str) -> None:
    """Sign the terminals' certificate renewal requests the server holds; revoke the certificates that renewed
    terminals no longer use (then reload the broker: --reload)."""
    from pki.ca import CAError, FleetCA
    from server.settings import SettingsError, load

    try:
        settings = load(config_path)
    except SettingsError as err:
        raise click.UsageError(str(err)) from err
    if passphrase_file:
        passphrase = Path(passphrase_file).read_text(encoding="utf-8").rstrip("\n")
    else:
        from .cli import _passphrase

        passphrase = _passphrase()
    try:
        ca = FleetCA(directory, passphrase)
    except CAError as err:
        raise click.ClickException(str(err)) from err
    done = asyncio.run(sign_and_revoke(ca, settings.storage.url, settings.base_dir, settings.pki.cert_days))
    for what, items in done.items():
        for line in items:
            click.echo(f"{what} {line}")
    click.echo(f"{len(done['signed'])} signed, {len(done['refused'])} refused, {len(done['revoked'])} revoked")
    if done["revoked"]:
        if reload_cmd:
            r = subprocess.run(shlex.split(reload_cmd), check=False, env=os.environ.copy())
            if r.returncode:
                raise click.ClickException(f"{reload_cmd!r} exited {r.returncode}: reload the broker by hand")
        else:
            click.echo("now reload the broker: systemctl reload posfleet-broker (or kill -HUP its pid)", err=True)
