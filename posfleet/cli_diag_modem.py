"""``posfleet diag modem``: ask the 4G modem what a field engineer needs to know, there and then."""

from __future__ import annotations

import json
import logging
from typing import Any

import click

from .cli_diag_common import (
    EXIT_FAULT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_TIMEOUT,
    Progress,
    exit_help,
    finish,
    lang_option,
    reason,
    say,
)

FALLBACK_PROFILE = "generic-3gpp"

HELP = """Query the 4G modem on PORT: SIM, identity, operator, registration, signal.

Without --profile the modem's model (its ATI / AT+CGMM answers) chooses the firmware profile; a model no
profile serves is checked with generic-3gpp and the output says which profiles exist. While the modem is
slow to answer, stderr says which command it waits for and for how long at most.

""" + exit_help((0, 2, 3, 4, 5, 6), c0="pass: the modem answers and its SIM is ready",
                c6="fault: the modem answers but reports a fault (no SIM, SIM locked, SIM failure, SIM state unknown)")

_EMPTY: dict[str, Any] = {
    "iccid": None,
    "imsi": None,
    "imei": None,
    "sim": None,
    "sim_error": None,
    "operator": {"mcc_mnc": None, "name": None, "carrier": None},
    "registration": {"state": None, "registered": None, "source": None, "technology": None, "tac": None,
                     "cell_id": None},
    "signal": {"csq": None, "rssi_dbm": None, "rsrp_dbm": None, "rsrq_db": None, "sinr": None, "rscp_dbm": None,
               "ecio_db": None, "raw": []},
    "manufacturer": None,
    "model": None,
    "firmware": None,
    "radio": None,
    "counters": None,
}
_ERROR_REASONS = {EXIT_NOT_FOUND: "modem port not found", EXIT_TIMEOUT: "modem not answering",
                  EXIT_PROTOCOL: "modem answers garbage"}


@click.command("modem", help=HELP)
@click.option("--port", required=True, help="AT port: /dev/ttyUSB2, /dev/serial/by-id/..., socket://host:port")
@click.option("--profile", default=None, help="firmware profile name [default: chosen from the modem's model]")
@click.option("--baud", type=int, default=None, help="override the profile's baud rate")
@click.option("--wait", type=float, default=None, help="seconds to wait for the modem to answer AT "
              "(default: the profile's boot timeout)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
@lang_option
def command(port: str, profile: str | None, baud: int | None, wait: float | None, as_json: bool, lang: str) -> None:
    import msgspec

    from drivers import profiles
    from drivers.errors import DriverError, exit_code
    from drivers.modem import Modem, assess, load_profile
    from drivers.modem.device import profile_for_identity
    from drivers.profiles import ProfileError

    quiet = logging.getLogger("drivers")  # the command's own output says what matters; back as it was afterwards
    click.get_current_context().call_on_close(lambda level=quiet.level: quiet.setLevel(level))
    quiet.setLevel(logging.WARNING)

    def load(name: str) -> Any:
        prof = load_profile(name)
        if wait is not None:
            prof = msgspec.structs.replace(prof, timeouts=msgspec.structs.replace(prof.timeouts, boot=wait))
        return prof

    try:
        prof = load(profile or FALLBACK_PROFILE)
    except ProfileError as err:
        raise click.BadParameter(str(err), param_hint="--profile") from err

    progress = Progress(lang, "modem")
    out: dict[str, Any] = json.loads(json.dumps(_EMPTY))
    out.update(port=port, profile=prof.name, profile_source="given" if profile else "default")
    hints: list[str] = []
    known = ", ".join(profiles.available("modem"))
    code = EXIT_OK
    try:
        if profile is None:
            with Modem(port, prof, baudrate=baud) as modem:
                modem.on_wait = progress
                modem.init()
                ident = modem.identity()
            answer = " ".join(x for x in (ident.manufacturer, ident.model) if x) or "-"
            chosen = profile_for_identity(ident.manufacturer, ident.model, ident.revision)
            if chosen is None:
                out["profile_source"] = "fallback"
                example = next((p for p in profiles.available("modem") if p != FALLBACK_PROFILE), FALLBACK_PROFILE)
                hints.append(say(lang, "modem.hint.unknown_model", answer=answer, profiles=known, example=example))
            else:
                prof = load(chosen)
                out.update(profile=chosen, profile_source="detected")
        with Modem(port, prof, baudrate=baud) as modem:
            modem.on_wait = progress
            modem.init()
            status = modem.status()
        out.update(status.as_dict())
        result = assess(status)
        out["check"] = {"state": result.state, "reason": result.reason}
        if result.state != "ok":
            code = EXIT_FAULT
        elif status.iccid is None:
            hints.append(say(lang, "modem.hint.no_iccid", profile=out["profile"], profiles=known))
    except DriverError as err:
        code, out["error"] = exit_code(err), str(err)
        out["check"] = {"state": "unknown" if code == EXIT_NOT_FOUND else "fault",
                        "reason": _ERROR_REASONS.get(code, "error")}
    if hints:
        out["hints"] = hints
    finish(out, code, as_json=as_json, lines=lambda: _human(out, lang),
           err_lines=lambda: [f"{say(lang, 'word.hint')}: {h}" for h in hints])


def _fmt(v: Any, unit: str = "") -> str:
    return "-" if v is None else f"{v}{unit}"


def _signal(sig: dict[str, Any]) -> str:
    """CSQ, then the LTE figures, or on a 3G cell RSCP and Ec/Io (the LTE ones are then unknown by nature)."""
    parts = [f"CSQ {_fmt(sig['csq'])} ({_fmt(sig['rssi_dbm'], ' dBm')})"]
    three_g = sig.get("rscp_dbm") is not None or sig.get("ecio_db") is not None
    shown = (("RSCP", "rscp_dbm", " dBm"), ("Ec/Io", "ecio_db", " dB")) if three_g else \
        (("RSRP", "rsrp_dbm", " dBm"), ("RSRQ", "rsrq_db", " dB"), ("SINR", "sinr", " dB"))
    parts += [f"{label} {_fmt(sig.get(key), unit)}" for label, key, unit in shown]
    return ", ".join(parts)


def _human(d: dict[str, Any], lang: str) -> list[str]:
    check = d["check"]
    verdict = say(lang, "verdict.ok") if check["state"] == "ok" else \
        say(lang, "verdict.because", state=say(lang, "verdict." + check["state"]), reason=reason(lang, check["reason"]))
    how = {"detected": "modem.how.detected", "fallback": "modem.how.fallback"}.get(d["profile_source"])
    lines = [say(lang, "modem.title", port=d["port"], profile=d["profile"], how=say(lang, how) if how else "",
                 verdict=verdict)]
    if d.get("error"):
        lines.append(f"  {say(lang, 'word.error')}{'：' if lang == 'zh' else ': '}{d['error']}")
    op, reg, sig = d["operator"], d["registration"], d["signal"]
    sim = reason(lang, d["sim"]) if d["sim"] else "-"
    if d.get("sim_error"):
        sim += "; " + say(lang, "modem.sim_error", **d["sim_error"])
    rows = [
        ("modem.model", say(lang, "modem.model.value", manufacturer=_fmt(d["manufacturer"]), model=_fmt(d["model"]),
                            firmware=_fmt(d["firmware"]))),
        ("modem.imei", _fmt(d["imei"])),
        ("modem.sim", sim),
        ("modem.iccid", _fmt(d["iccid"])),
        ("modem.imsi", _fmt(d["imsi"])),
        ("modem.operator", f"{_fmt(op['name'])} ({_fmt(op['mcc_mnc'])}, {_fmt(op['carrier'])})"),
        ("modem.registration", say(lang, "modem.registration.value", state=reason(lang, reg["state"]),
                                   source=_fmt(reg["source"]), technology=_fmt(reg["technology"]),
                                   tac=_fmt(reg["tac"]), cell=_fmt(reg["cell_id"]))),
        ("modem.signal", _signal(sig)),
    ]
    if d.get("counters"):
        rows.append(("modem.data", say(lang, "modem.data.value", sent=d["counters"]["bytes_sent"],
                                       received=d["counters"]["bytes_received"])))
    from .diagconsole.render import width

    colon = "：" if lang == "zh" else ":"
    labels = [say(lang, key) + colon for key, _ in rows]
    col = max(width(x) for x in labels) + 1
    for label, (_, value) in zip(labels, rows, strict=True):
        lines.append(f"  {label + ' ' * (col - width(label))}{value}")
    return lines
