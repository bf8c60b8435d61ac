"""``posfleet diag capture``: record a redacted transcript of a peripheral's traffic.

Copy the folder it writes to ``tests/drivers/testcases/<model>/<case>/`` and the field
problem becomes a regression test: the replay emulator answers the real driver from it.
"""

from __future__ import annotations

from pathlib import Path

import click

from .cli_diag_common import exit_help, finish, lang_option, reason, say

HELP = """Run the checks of `posfleet diag KIND` on PORT and record the traffic.

Writes OUT/transcript.jsonl (every write and read, timed) and OUT/meta.json (kind,
profile, the checks' verdict). ID card data is redacted before anything is written:
a card read keeps only what the masked output shows, the photo is blanked.
The exit code is the verdict of the checks, as `posfleet diag KIND`.

""" + exit_help((0, 1, 2, 3, 4, 5, 6), c1="the capture could not be written",
                c2="bad usage (unknown profile, OUT already holds a capture, --read-card without idcard)",
                c3="device not found (nothing recorded beyond the failed open)")


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
@lang_option
def command(kind: str, port: str, profile: str | None, out_dir: Path, read_card: bool, baud: int | None,
            note: str, force: bool, as_json: bool, lang: str) -> None:
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

    def lines() -> list[str]:
        verdict = say(lang, "verdict.ok") if outcome.state == "ok" else \
            say(lang, "verdict.because", state=say(lang, "verdict." + outcome.state), reason=reason(lang, outcome.reason))
        out = [say(lang, "capture.title", kind=say(lang, f"kind.{kind}"), port=port, profile=profile, verdict=verdict)]
        if outcome.error:
            out.append(say(lang, "capture.error", error=outcome.error))
        out.append(say(lang, "capture.saved", requests=requests, events=len(events), out=out_dir))
        return out

    finish({"out": str(out_dir), "kind": kind, "profile": profile, "events": len(events), "requests": requests,
            "state": outcome.state, "reason": outcome.reason, "error": outcome.error}, outcome.exit_code,
           as_json=as_json, lines=lines)
