"""CLI for remote commands (issue 5).

* ``command_key`` -> ``posfleet ca command-key --dir CA --out DIR``: the server's command-signing key;
* ``update_key``  -> ``posfleet ca update-key --dir CA --out DIR``: the key that signs update packages;
* ``command``     -> ``posfleet server command ...``: send, show, package build/upload over the HTTP API.

Rotation: run ``command-key`` again into a new directory, point ``[commands] key_file`` and
``endorsement_file`` at it and restart the server; terminals accept every endorsed, unexpired key
not listed in their ``[commands] revoked_keys``.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import click


def _make_key(directory: str, out_dir: str, purpose: str, days: int, key_id: str) -> None:
    from posfleet.cli import _open_ca
    from server.commands.keys import make_key

    ca = _open_ca(directory)
    key_path, endo_path, st = make_key(ca, Path(out_dir), purpose, days, key_id)
    click.echo(f"key id: {st.key_id} (purpose {purpose}, valid {days} days)\nkey: {key_path} (keep it secret)\n"
               f"endorsement: {endo_path}")


@click.command("command-key")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False), help="the fleet CA directory")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650))
@click.option("--key-id", default="", help="default: command-<date>-<random>")
def command_key(directory: str, out_dir: str, days: int, key_id: str) -> None:
    """Make the server's command-signing key (Ed25519) and the fleet CA's endorsement of it."""
    _make_key(directory, out_dir, "command", days, key_id)


@click.command("update-key")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False), help="the fleet CA directory")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650))
@click.option("--key-id", default="")
def update_key(directory: str, out_dir: str, days: int, key_id: str) -> None:
    """Make the key that signs update packages (Ed25519) and the fleet CA's endorsement of it."""
    _make_key(directory, out_dir, "update", days, key_id)


@click.group("command")
def command() -> None:
    """Remote commands through the server's API (POSFLEET_URL and POSFLEET_TOKEN, or the options)."""


def _api(url: str | None, token: str | None) -> tuple[str, dict[str, str]]:
    url = url or os.environ.get("POSFLEET_URL", "http://127.0.0.1:8080")
    token = token or os.environ.get("POSFLEET_TOKEN", "")
    if not token:
        raise click.UsageError("give --token or set POSFLEET_TOKEN")
    return url.rstrip("/"), {"Authorization": f"Bearer {token}"}


_url = click.option("--url", default=None, help="server base URL (default $POSFLEET_URL)")
_token = click.option("--token", default=None, help="API token (default $POSFLEET_TOKEN)")


@command.command("send")
@_url
@_token
@click.option("--type", "ctype", required=True)
@click.option("--sn", "sns", multiple=True, help="repeat for several units")
@click.option("--county", default=None)
@click.option("--model", default=None)
@click.option("--params", default="{}", help="JSON object")
@click.option("--expires", "expires_s", type=int, default=None, help="seconds")
@click.option("--rate", "rate_per_min", type=float, default=None, help="units per minute")
@click.option("--abort-pct", type=float, default=None)
@click.option("--canary", type=int, default=0)
@click.option("--wave-size", type=int, default=0)
@click.option("--off-hours", is_flag=True)
@click.option("--confirm", is_flag=True, help="needed above the server's large fan-out threshold")
def send(url: str | None, token: str | None, ctype: str, sns: tuple[str, ...], county: str | None,
         model: str | None, params: str, expires_s: int | None, rate_per_min: float | None, abort_pct: float | None,
         canary: int, wave_size: int, off_hours: bool, confirm: bool) -> None:
    """Send a command to units (by SN, or by county/model from the registry)."""
    import httpx

    base, headers = _api(url, token)
    try:
        p = json.loads(params)
    except json.JSONDecodeError as err:
        raise click.UsageError(f"--params: not JSON: {err}") from err
    body: dict[str, object] = {"type": ctype, "params": p, "confirm": confirm, "off_hours": off_hours,
                               "canary": canary, "wave_size": wave_size}
    if county or model:
        body["filter"] = {k: v for k, v in (("county", county), ("model", model)) if v}
    elif len(sns) == 1:
        body["sn"] = sns[0]
    elif sns:
        body["sns"] = list(sns)
    else:
        raise click.UsageError("give --sn, --county or --model")
    for k, v in (("expires_s", expires_s), ("rate_per_min", rate_per_min), ("abort_pct", abort_pct)):
        if v is not None:
            body[k] = v
    r = httpx.post(f"{base}/api/v1/commands", json=body, headers=headers, timeout=30)
    click.echo(json.dumps(r.json(), ensure_ascii=False, indent=1))
    if r.status_code >= 400:
        sys.exit(1)


@command.command("show")
@_url
@_token
@click.argument("ident")
def show(url: str | None, token: str | None, ident: str) -> None:
    """Show a command (c...) or a job (j...) with its per-unit states."""
    import httpx

    base, headers = _api(url, token)
    path = "jobs" if ident.startswith("j") else "commands"
    r = httpx.get(f"{base}/api/v1/{path}/{ident}", headers=headers, timeout=30)
    click.echo(json.dumps(r.json(), ensure_ascii=False, indent=1))
    if r.status_code >= 400:
        sys.exit(1)


@command.command("package-build")
@click.option("--src", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--component", required=True)
@click.option("--version", "version", required=True)
@click.option("--model", "models", multiple=True, help="target model (repeat); none: every model")
@click.option("--health-check", required=True, help="command run in the new version's directory, e.g. ./healthcheck")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--endorsement", "endo_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def package_build(src: str, component: str, version: str, models: tuple[str, ...], health_check: str,
                  key_file: str, endo_file: str, out: str) -> None:
    """Build and sign an update package: OUT (.tar.gz) and OUT.sig."""
    import shlex

    from server.commands.keys import SigningKeyError, load_key
    from server.commands.packages import build_package, sign_package
    from wire.package import PackageError

    try:
        key = load_key(Path(key_file), Path(endo_file), "update")
        archive = build_package(Path(src), component, version, list(models), shlex.split(health_check), Path(out))
        digest, sig = sign_package(archive, key)
    except (SigningKeyError, PackageError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    Path(out + ".sig").write_bytes(sig)
    click.echo(f"{archive} sha256 {digest}\nsignature: {out}.sig (key {key.key_id})")


@command.command("package-stage-agent")
@click.option("--version", "version", required=True, help="the version the release will report")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="a new directory")
def package_stage_agent(version: str, out: str) -> None:
    """Write the source tree of an agent release (this installation's code, VERSION, run.py, healthcheck);
    then: package-build --src OUT --component agent --version VERSION --health-check ./healthcheck."""
    from server.commands.packages import stage_agent_release

    try:
        stage_agent_release(Path(out), version)
    except (OSError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{out}: agent {version}")


@command.command("package-upload")
@_url
@_token
@click.option("--package", "archive", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--endorsement", "endo_file", required=True, type=click.Path(exists=True, dir_okay=False))
def package_upload(url: str | None, token: str | None, archive: str, endo_file: str) -> None:
    """Upload a built package (its .sig next to it) to the server, which verifies it."""
    import httpx

    base, headers = _api(url, token)
    headers["X-Signature"] = base64.b64encode(Path(archive + ".sig").read_bytes()).decode()
    headers["X-Endorsement"] = base64.b64encode(Path(endo_file).read_bytes()).decode()
    r = httpx.post(f"{base}/api/v1/packages", content=Path(archive).read_bytes(), headers=headers, timeout=300)
    click.echo(json.dumps(r.json(), ensure_ascii=False, indent=1))
    if r.status_code >= 400:
        sys.exit(1)
