"""``posfleet diag credential issue|revoke``: engineer credentials, on the fleet CA's host.

``issue`` makes the engineer's key pair and has the fleet CA endorse {name, counties, expiry,
public key, id}; the output file (key + endorsement, mode 0600) goes on the engineer's
laptop. ``revoke`` adds an id to ``engineer-revoked.json`` in the CA directory and prints the
``set_config`` change that carries the whole list to the terminals with their configuration
updates (``[console] revoked``); the file itself can also be shipped (``[console] revoked_file``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import click

REVOKED_FILE = "engineer-revoked.json"
ISSUED_FILE = "engineers.json"


def issue(ca: Any, engineer: str, scope: list[str], days: float, out: Path, *, now: float | None = None) -> dict[str, Any]:
    """Issue a credential with the open FleetCA ``ca``; write it to ``out``; return the endorsement."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from wire.credentials import VERSION, Endorsement, sign_endorsement

    engineer = engineer.strip()
    scope = [s.strip() for s in scope if s.strip()]
    if not engineer:
        raise ValueError("engineer: a name is needed")
    if not scope:
        raise ValueError("scope: at least one county (or * for all)")
    if not 0 < days <= 366:
        raise ValueError("days: between 1 and 366")
    issued = int(now if now is not None else dt.datetime.now(dt.UTC).timestamp())
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    e = Endorsement(v=VERSION, id=secrets.token_hex(8), engineer=engineer, scope=scope, issued=issued,
                    expires=int(issued + days * 86400), public_key=base64.b64encode(pub).decode())
    cred = sign_endorsement(ca.key, e)
    doc = {
        "engineer": engineer, "id": e.id, "scope": scope,
        "expires": dt.datetime.fromtimestamp(e.expires, dt.UTC).isoformat(),
        "credential": {"endorsement": cred.endorsement, "signature": cred.signature},
        "private_key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
    index_path = Path(ca.dir) / ISSUED_FILE
    rows = json.loads(index_path.read_text()) if index_path.exists() else []
    rows.append({"id": e.id, "engineer": engineer, "scope": scope, "issued": e.issued, "expires": e.expires})
    index_path.write_text(json.dumps(rows, ensure_ascii=False, indent=1))
    return {"id": e.id, "engineer": engineer, "scope": scope, "issued": e.issued, "expires": e.expires}


def revoke(ca_dir: Path, ident: str) -> Path:
    """Add a credential id (or every credential of an engineer, by name) to the revocation list."""
    index_path = ca_dir / ISSUED_FILE
    rows = json.loads(index_path.read_text()) if index_path.exists() else []
    ids = {r["id"] for r in rows if ident in (r["id"], r["engineer"])}
    if not ids:
        raise ValueError(f"no credential issued here matches {ident!r}")
    path = ca_dir / REVOKED_FILE
    revoked = set(json.loads(path.read_text())["revoked"]) if path.exists() else set()
    revoked |= ids
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"revoked": sorted(revoked)}, indent=1))
    tmp.replace(path)
    return path


def _passphrase() -> str:
    import getpass

    pw = os.environ.get("POSFLEET_CA_PASSPHRASE")
    if pw:
        return pw
    if not sys.stdin.isatty():
        raise click.UsageError("set POSFLEET_CA_PASSPHRASE or run on a terminal to be asked for the CA passphrase")
    return getpass.getpass("CA passphrase: ")


@click.group("credential")
def command() -> None:
    """Engineer credentials for the diagnostic console (run where the fleet CA lives)."""


@command.command("issue")
@click.option("--ca-dir", required=True, type=click.Path(file_okay=False, exists=True), help="the fleet CA directory")
@click.option("--engineer", required=True, help="the engineer's name (shown in every audit record)")
@click.option("--scope", required=True, help="counties, comma-separated (* for every county)")
@click.option("--days", type=float, default=30, show_default=True, help="valid for this many days")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="credential file for the laptop")
def issue_cmd(ca_dir: str, engineer: str, scope: str, days: float, out: str) -> None:
    """Make an engineer's key pair and have the fleet CA endorse it."""
    from pki.ca import CAError, FleetCA

    try:
        ca = FleetCA(ca_dir, _passphrase())
        info = issue(ca, engineer, scope.replace("，", ",").split(","), days, Path(out))
    except CAError as err:
        raise click.ClickException(str(err)) from err
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    expires = dt.datetime.fromtimestamp(info["expires"], dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    click.echo(f"credential {info['id']} for {info['engineer']}: counties {', '.join(info['scope'])}, "
               f"valid until {expires}\nwritten to {out} (keep it private: it holds the engineer's key)")


@command.command("revoke")
@click.option("--ca-dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.argument("ident")
def revoke_cmd(ca_dir: str, ident: str) -> None:
    """Revoke a credential by id (or all of an engineer's, by name)."""
    try:
        path = revoke(Path(ca_dir), ident)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    ids = json.loads(path.read_text())["revoked"]
    params = json.dumps({"changes": {"console.revoked": ids}}, ensure_ascii=False)
    click.echo(f"revocation list: {path} ({len(ids)} revoked)\n"
               "send it to the terminals with a configuration update (the whole list each time):\n"
               f"  posfleet server command send --type set_config --county COUNTY --params '{params}'\n"
               "or ship the file to where their [console] revoked_file points")
