"""``posfleet oracle SCENARIO``: availability figures counted straight from a scenario file.

Exit codes: 0 figures printed; 2 invalid scenario or usage (each problem on stderr, naming the field).
"""

from __future__ import annotations

import json
import sys

import click


@click.command("oracle")
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json/--table", "as_json", default=True, help="JSON (the default) or a plain text table.")
@click.option(
    "--group-by",
    type=click.Choice(["unit", "institution", "county", "fleet"]),
    default="unit",
    show_default=True,
    help="One row per unit, institution, county, or one for the whole fleet.",
)
@click.option(
    "--threshold", default="0.95", show_default=True, help="Availability threshold (a unit below is flagged)."
)
@click.option(
    "--latency-ms",
    default=400,
    show_default=True,
    type=int,
    help="Round trip above which the network is not ok.",
)
def command(scenario: str, as_json: bool, group_by: str, threshold: str, latency_ms: int) -> None:
    """Count device intact and network availability figures for SCENARIO (a scenario JSON file)."""
    from counting import as_fraction
    from simulator.oracle import oracle
    from simulator.scenario import ScenarioError, load_scenario

    try:
        thr = as_fraction(threshold)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--threshold") from err
    try:
        parsed = load_scenario(scenario)
    except ScenarioError as err:
        for path, message in err.errors:
            click.echo(f"{scenario}: {path}: {message}" if path else f"{scenario}: {message}", err=True)
        sys.exit(2)
    result = oracle(parsed, group_by=group_by, threshold=thr, latency_threshold_ms=latency_ms)
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        click.echo(_table(result, group_by))


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.3f}%"


def _table(result: dict, group_by: str) -> str:
    head = f"{group_by:<14} {'service':>8} {'intact':>8} {'net ok':>8} {'no data':>8} {'device':>9} {'network':>9}  flag"
    lines = [head]
    rows = [(str(g[group_by]), g) for g in result["groups"]] + [("FLEET", result["fleet"])]
    for key, g in rows:
        flag = "FLAGGED" if g["flagged"] else ""
        if "units" in g and group_by != "unit":
            flag = f"{g['flagged_units']}/{g['units']} units flagged {flag}".rstrip()
        lines.append(
            f"{key:<14} {g['service_slots']:>8} {g['intact_slots']:>8} {g['network_ok_slots']:>8} "
            f"{g['no_data_slots']:>8} {_pct(g['device_rate']):>9} {_pct(g['network_rate']):>9}  {flag}"
        )
    fleet = result["fleet"]
    lines.append(f"contract tier: {fleet['tier'] if fleet['tier'] is not None else '-'}")
    return "\n".join(lines)


main = command
