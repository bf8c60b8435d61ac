"""``posfleet diag modem``: ask the 4G modem what a field engineer needs to know, there and then."""

from __future__ import annotations

import json
import logging
from typing import Any

import click

EXIT_OK, EXIT_NOT_FOUND, EXIT_TIMEOUT, EXIT_PROTOCOL, EXIT_FAULT = 0, 3, 4, 5, 6

HELP = """Query the 4G modem on PORT: SIM, identity, operator, registration, signal.

\b
Exit codes:
  0  the modem answers and its SIM is ready
  2  bad usage (unknown profile, bad option)
  3  device not found (port missing, busy, no permission)
  4  timeout: the modem does not answer AT
  5  protocol error: the modem answers something that cannot be parsed
  6  fault: the modem answers but reports a fault (no SIM, SIM locked, SIM failure)
"""

_EMPTY: dict[str, Any] = {
    "iccid": None,
    "imsi": None,
    "imei": None,
    "sim": None,
    "operator": {"mcc_mnc": None, "name": None, "carrier": None},
    "registration": {"state": None, "registered": None, "source": None, "technology": None, "tac": None,
                     "cell_id": None},
    "signal": {"csq": None, "rssi_dbm": None, "rsrp_dbm": None, "rsrq_db": None, "sinr": None, "raw": []},
    "manufacturer": None,
    "model": None,
    "firmware": None,
    "radio": None,
    "counters": None,
}


@click.command("modem", help=HELP)
@click.option("--port", required=True, help="AT port: /dev/ttyUSB2, /dev/serial/by-id/..., socket://host:port")
@click.option("--profile", default="generic-3gpp", show_default=True, help="firmware profile name")
@click.option("--baud", type=int, default=None, help="override the profile's baud rate")
@click.option("--wait", type=float, default=None, help="seconds to wait for the modem to answer AT "
              "(default: the profile's boot timeout)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
def command(port: str, profile: str, baud: int | None, wait: float | None, as_json: bool) -> None:
    import msgspec

    from drivers.errors import DeviceFault, DeviceNotFound, DriverError, ProtocolError, Timeout
    from drivers.modem import Modem, assess, load_profile
    from drivers.profiles import ProfileError

    quiet = logging.getLogger("drivers")  # the command's own output says what matters; back as it was afterwards
    click.get_current_context().call_on_close(lambda level=quiet.level: quiet.setLevel(level))
    quiet.setLevel(logging.WARNING)
    try:
        prof = load_profile(profile)
    except ProfileError as err:
        raise click.BadParameter(str(err), param_hint="--profile") from err
    if wait is not None:
        prof = msgspec.structs.replace(prof, timeouts=msgspec.structs.replace(prof.timeouts, boot=wait))

    out: dict[str, Any] = json.loads(json.dumps(_EMPTY))
    out.update(port=port, profile=profile)
    code = EXIT_OK
    try:
        with Modem(port, prof, baudrate=baud) as modem:
            modem.init()
            status = modem.status()
        out.update(status.as_dict())
        result = assess(status)
        out["check"] = {"state": result.state, "reason": result.reason}
        if result.state != "ok":
            code = EXIT_FAULT
    except DeviceNotFound as err:
        code, out["error"] = EXIT_NOT_FOUND, str(err)
    except Timeout as err:
        code, out["error"] = EXIT_TIMEOUT, str(err)
    except ProtocolError as err:
        code, out["error"] = EXIT_PROTOCOL, str(err)
    except DeviceFault as err:
        code, out["error"] = EXIT_FAULT, str(err)
    except DriverError as err:
        code, out["error"] = EXIT_PROTOCOL, str(err)
    if "check" not in out:
        reason = {EXIT_NOT_FOUND: "modem port not found", EXIT_TIMEOUT: "modem not answering",
                  EXIT_PROTOCOL: "modem answers garbage"}.get(code, "error")
        out["check"] = {"state": "unknown" if code == EXIT_NOT_FOUND else "fault", "reason": reason}

    if as_json:
        click.echo(json.dumps(out, ensure_ascii=False))
    else:
        _print_human(out)
    raise SystemExit(code)


def _fmt(v: Any, unit: str = "") -> str:
    return "-" if v is None else f"{v}{unit}"


def _print_human(d: dict[str, Any]) -> None:
    check = d["check"]
    verdict = "OK" if check["state"] == "ok" else f"{check['state'].upper()}: {check['reason']}"
    click.echo(f"modem on {d['port']} (profile {d['profile']}): {verdict}")
    if d.get("error"):
        click.echo(f"  error:        {d['error']}")
    op, reg, sig = d["operator"], d["registration"], d["signal"]
    rows = [
        ("model", f"{_fmt(d['manufacturer'])} {_fmt(d['model'])}, firmware {_fmt(d['firmware'])}"),
        ("IMEI", _fmt(d["imei"])),
        ("SIM", _fmt(d["sim"])),
        ("ICCID", _fmt(d["iccid"])),
        ("IMSI", _fmt(d["imsi"])),
        ("operator", f"{_fmt(op['name'])} ({_fmt(op['mcc_mnc'])}, {_fmt(op['carrier'])})"),
        ("registration", f"{_fmt(reg['state'])} via {_fmt(reg['source'])}, {_fmt(reg['technology'])}, "
                         f"TAC {_fmt(reg['tac'])}, cell {_fmt(reg['cell_id'])}"),
        ("signal", f"CSQ {_fmt(sig['csq'])} ({_fmt(sig['rssi_dbm'], ' dBm')}), RSRP {_fmt(sig['rsrp_dbm'], ' dBm')}, "
                   f"RSRQ {_fmt(sig['rsrq_db'], ' dB')}, SINR {_fmt(sig['sinr'], ' dB')}"),
    ]
    if d.get("counters"):
        rows.append(("data", f"sent {d['counters']['bytes_sent']} B, received {d['counters']['bytes_received']} B"))
    for label, value in rows:
        click.echo(f"  {label + ':':<14}{value}")
