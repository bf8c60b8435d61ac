"""``posfleet sim run SCENARIO``: play a fleet scenario with real agents, broker and server.

By default in virtual time (simulator/vplayer.py: the player owns the fleet's clock, one worker process per core;
docs/decisions/025-simulator-virtual-time.md); ``--real-time`` plays on the accelerated wall clock as before
(``--speed``, ``--night-speed``, ``--broker``, ``--server``), for the demo.

After counting, the server's per-unit figures are checked against the oracle's (``oracle_check`` in the report): a
unit that differs by more than availability.md's one slot at each fault edge means the machine did not keep up,
and is reported as an incident and a warning.

Exit codes: 0 played and the report written; 1 the run failed (setup, a process, the server never finished
counting); 2 invalid scenario or usage (each problem on stderr, naming the field).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click


def _speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError as err:
        raise click.BadParameter(f"expected a number or 'max', got {value!r}", param_hint="--speed") from err
    if speed <= 0:
        raise click.BadParameter("must be positive", param_hint="--speed")
    return speed


@click.command("run")
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=str))
@click.option("--real-time", "real_time", is_flag=True,
              help="Play on the accelerated wall clock (the demo) instead of in virtual time.")
@click.option("--workers", type=click.IntRange(min=1, max=64), default=None,
              help="Virtual time: worker processes sharing the units (default: one per core).")
@click.option("--speed", default="max", show_default=True,
              help="--real-time: simulated seconds per real second, or 'max': the fastest faithful speed here.")
@click.option("--night-speed", type=click.FloatRange(min=0, max=100_000), default=3600.0, show_default=True,
              help="Clock speed outside every institution's service hours, where no slot counts (0: as by day).")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the server's availability report (unit and fleet groupings) here as JSON.")
@click.option("--broker", "broker_url", default="",
              help="Use this running broker (mqtts://host:port) instead of starting one; needs --ca-dir.")
@click.option("--ca-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The fleet CA that broker trusts (passphrase in POSFLEET_CA_PASSPHRASE), to sign terminals.")
@click.option("--server", "server_url", default="",
              help="Use a running fleet server (admin token in POSFLEET_TOKEN; needs --broker): only in real time, "
                   "--speed 1, for a scenario that starts ahead of now, against a server on a real-time clock.")
@click.option("--storage", "storage_url", default="",
              help="The started server stores here (a postgresql:// URL of a new, empty database) instead of a "
                   "SQLite file in the work folder.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep certificates, logs, agent data and the server database here (default: a temporary "
                   "directory, removed afterwards).")
def command(scenario: str, real_time: bool, workers: int | None, speed: str, night_speed: float,
            report_file: Path | None, broker_url: str, ca_dir: Path | None, server_url: str, storage_url: str,
            workdir: Path | None) -> None:
    """Play SCENARIO (a scenario JSON file) and report the server's availability figures."""
    from agent.logs import setup
    from simulator.run import Options, Player, RunError, load
    from simulator.scenario import ScenarioError
    from simulator.vplayer import VirtualPlayer

    setup("INFO")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not real_time:
        given = [name for name, v in (("--broker", broker_url), ("--server", server_url), ("--ca-dir", ca_dir),
                                      ("--speed", speed != "max" or None)) if v]
        if given:
            click.echo(f"{scenario}: {', '.join(given)}: only with --real-time (a running server or broker keeps "
                       "its own clock; the virtual-time player starts its own)", err=True)
            sys.exit(2)
    elif workers is not None:
        click.echo(f"{scenario}: --workers: only in virtual time (without --real-time)", err=True)
        sys.exit(2)
    try:
        parsed, raw = load(scenario)
        opts = Options(speed=_speed(speed), night_speed=night_speed or None, workdir=workdir, broker_url=broker_url,
                       ca_dir=ca_dir, server_url=server_url, storage_url=storage_url, keep_workdir=workdir is not None,
                       progress=lambda text: click.echo(text, err=True))
        player = Player(parsed, raw, opts) if real_time else VirtualPlayer(parsed, raw, opts, workers=workers)
    except ScenarioError as err:
        for path, message in err.errors:
            click.echo(f"{scenario}: {path}: {message}" if path else f"{scenario}: {message}", err=True)
        sys.exit(2)
    except ValueError as err:
        click.echo(f"{scenario}: {err}", err=True)
        sys.exit(2)
    try:
        with player:
            result = player.run()
    except (RunError, OSError) as err:
        click.echo(f"simulation failed: {err}", err=True)
        sys.exit(1)
    text = json.dumps(result.report, ensure_ascii=False, indent=2)
    if report_file is not None:
        report_file.write_text(text + "\n", encoding="utf-8")
        click.echo(f"report written to {report_file}", err=True)
    else:
        click.echo(text)
    fleet = result.report["availability"]["fleet"]["fleet"]
    click.echo(f"fleet: device {fleet['device_rate']}, network {fleet['network_rate']}, tier {fleet['tier']}; "
               f"{len(result.incidents)} incident(s)", err=True)
    check = result.report["oracle_check"]
    if check["units_outside_tolerance"]:
        click.echo(f"WARNING: {check['units_outside_tolerance']} of {check['units']} units differ from the oracle "
                   "beyond the tolerance at fault edges: this run was not faithful (see the incidents)", err=True)
    else:
        click.echo(f"oracle check: all {check['units']} units agree with the scenario within the tolerance", err=True)


main = command
