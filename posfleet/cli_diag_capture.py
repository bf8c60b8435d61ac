"""``posfleet diag capture``: record a redacted transcript of a peripheral's traffic.

Copy the folder it writes to ``tests/drivers/testcases/<model>/<case>/`` and the field
problem becomes a regression test: the replay emulator answers the real driver from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

HELP = """Run the checks of `posfleet diag KIND` on PORT and record the traffic.

Writes OUT/transcript.jsonl (every write and read, timed) and OUT/meta.json (kind,
profile, the checks' verdict). ID card data is redacted before anything is written:
a card read keeps only what the masked output shows, the photo is blanked.

\b
Exit codes (the verdict of the checks, as `posfleet diag KIND`):
  0  pass
  1  the capture could not be written
  2  bad usage (unknown profile, OUT already holds a capture, --read-card without idcard)
  3  device not found (nothing recorded beyond the failed open)
  4  timeout: the device does not answer
  5  protocol error: the device answers something that cannot be parsed
  6  fault: the device answers and reports a fault
"""


@click.command("capture", help=HELP)
@click.option("--kind", type=click.Choice(["modem", "printer", "idcard"]), required=True)
@click.option("--port", required=True, help="device path (/dev/ttyUSB0) or pyserial URL")
@click.option("--profile", default=None, help="firmware profile [default: the kind's generic profile]")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="folder for transcript.jsonl and meta.json")
@click.option("--read-card", is_flag=True, help="idcard: also find, select and read a card (recorded masked)")
@click.option("--baud", type=int, default=None, help="override the profile's baud rate")
@click.option("--note", default="", help="free text kept in meta.json (what the engineer saw)")
@click.option("--force", is_flag=True, help="overwrite a capture already in OUT")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
def command(kind: str, port: str, profile: str | None, out_dir: Path, read_card: bool, baud: int | None,
            note: str, force: bool, as_json: bool) -> None:
    from drivers.capture import DEFAULT_PROFILES, META, TRANSCRIPT, Recorder, diagnose, make_meta
    from drivers.profiles import ProfileError

    if read_card and kind != "idcard":
        raise click.UsageError("--read-card only applies to --kind idcard")
    if not force and ((out_dir / TRANSCRIPT).exists() or (out_dir / META).exists()):
        raise click.UsageError(f"{out_dir} already holds a capture (use --force to overwrite it)")
    profile = profile or DEFAULT_PROFILES[kind]
    recorder = Recorder(kind)  # type: ignore[arg-type]
    try:
        outcome = diagnose(kind, port, profile, read_card=read_card, baudrate=baud,  # type: ignore[arg-type]
                           recorder=recorder)
    except ProfileError as err:
        raise click.BadParameter(str(err), param_hint="--profile") from err
    meta = make_meta(kind, profile, port, outcome, read_card=read_card, baudrate=baud,  # type: ignore[arg-type]
                     note=note)
    try:
        recorder.save(out_dir, meta)
    except OSError as err:
        raise click.ClickException(f"cannot write the capture to {out_dir}: {err.strerror or err}") from err
    events = recorder.events()
    requests = sum(1 for ev in events if ev.dir == "tx")
    if as_json:
        click.echo(json.dumps({"out": str(out_dir), "kind": kind, "profile": profile, "events": len(events),
                               "requests": requests, "state": outcome.state, "reason": outcome.reason,
                               "exit_code": outcome.exit_code, "error": outcome.error}, ensure_ascii=False))
    else:
        verdict = "OK" if outcome.state == "ok" else f"{outcome.state.upper()}: {outcome.reason}"
        click.echo(f"{kind} on {port} (profile {profile}): {verdict}")
        if outcome.error:
            click.echo(f"  error: {outcome.error}")
        click.echo(f"captured {requests} requests, {len(events)} events (redacted) to {out_dir}")
    raise SystemExit(outcome.exit_code)
