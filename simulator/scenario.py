"""Fleet scenarios: strict parsing of the scenario JSON (docs: scenario-format.md) into typed objects.

:func:`load_scenario` accepts a path or an already-decoded mapping and either returns a :class:`Scenario` or
raises :class:`ScenarioError` listing every problem found, each naming the field path, e.g.
``units[1].modem: unknown profile 'foo'`` or ``events[3].end: not after start``. Unknown keys are errors.

Besides the documented fields, an optional top-level ``description`` (free text) is accepted.
Times are ISO 8601 with a UTC offset; scenario ``start``/``end`` and event times must fall on minute
boundaries. Profile names are checked against ``firmware_profiles/{modems,printers,readers}/*.toml``
(a folder with no profiles yet is not checked).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from counting.hours import ServiceHours, zone
from drivers import profiles

#: fault -> (effect on device intact, effect on network ok), as the table in scenario-format.md:
#: "no_data" (no samples at all), "no", "as_measured", or "latency" (no if rtt_ms > the latency threshold)
FAULTS: dict[str, tuple[str, str]] = {
    "power_off": ("no_data", "no_data"),
    "agent_down": ("no_data", "no_data"),
    "network_down": ("as_measured", "no"),
    "high_latency": ("as_measured", "latency"),
    "printer_paper_out": ("no", "as_measured"),
    "printer_cover_open": ("no", "as_measured"),
    "printer_offline": ("no", "as_measured"),
    "idcard_reader_fault": ("no", "as_measured"),
    "modem_unresponsive": ("no", "as_measured"),
    "sim_missing": ("no", "no"),
    "storage_readonly": ("no", "as_measured"),
}
STATUSES = ("in_service", "spare", "in_repair", "retired")
INSTITUTION_TYPES = (
    "health_centre",
    "village_clinic",
    "community_site",
    "community_health_centre",
    "community_health_station",
    "hospital",
    "pharmacy",
    "insurance_office",
)
#: unit field -> profile kind in drivers.profiles
PROFILE_FIELDS = {"modem": "modem", "printer": "printer", "idcard": "reader"}
ALL_UNITS = "*"

_SN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ScenarioError(ValueError):
    """The scenario is not valid; ``errors`` holds ``(field path, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(f"{p}: {m}" if p else m for p, m in self.errors))


@dataclass(frozen=True)
class Institution:
    code: str
    name: str
    county: str
    type: str | None
    service_hours: ServiceHours | None  # None: the scenario's default


@dataclass(frozen=True)
class StatusChange:
    at: datetime
    status: str


@dataclass(frozen=True)
class Unit:
    sn: str
    institution: str
    model: str
    modem: str
    printer: str
    idcard: str
    status: tuple[StatusChange, ...] = ()


@dataclass(frozen=True)
class Event:
    index: int  # position in the scenario's events list
    unit: str  # an SN or "*"
    fault: str
    start: datetime
    end: datetime  # excluded
    rtt_ms: int | None = None

    def applies_to(self, sn: str) -> bool:
        return self.unit == ALL_UNITS or self.unit == sn


@dataclass(frozen=True)
class Scenario:
    name: str
    timezone: str
    tz: tzinfo
    start: datetime
    end: datetime
    sample_interval_s: int
    service_hours: ServiceHours
    institutions: tuple[Institution, ...]
    units: tuple[Unit, ...]
    events: tuple[Event, ...]
    description: str | None = None

    def institution(self, code: str) -> Institution:
        for inst in self.institutions:
            if inst.code == code:
                return inst
        raise KeyError(code)

    def unit(self, sn: str) -> Unit:
        for u in self.units:
            if u.sn == sn:
                return u
        raise KeyError(sn)

    def hours_for(self, unit: Unit) -> ServiceHours:
        """The unit's institution's hours, else the scenario default."""
        return self.institution(unit.institution).service_hours or self.service_hours

    def events_for(self, sn: str) -> list[Event]:
        return [e for e in self.events if e.applies_to(sn)]


class _Checker:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def err(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def obj(self, value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...]) -> dict | None:
        if not isinstance(value, Mapping):
            self.err(path, f"expected an object, got {_kind(value)}")
            return None
        ok = True
        for key in value:
            if key not in required and key not in optional:
                self.err(_join(path, str(key)), f"unknown field (expected {', '.join(required + optional)})")
        for key in required:
            if key not in value:
                self.err(_join(path, key), "missing")
                ok = False
        return dict(value) if ok else None

    def text(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.err(path, f"expected a non-empty string, got {_kind(value)}")
            return None
        return value

    def when(self, value: Any, path: str, *, minute: bool) -> datetime | None:
        if not isinstance(value, str):
            self.err(path, f"expected an ISO 8601 time like 2026-11-02T08:00:00+08:00, got {_kind(value)}")
            return None
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            self.err(path, f"{value!r} is not an ISO 8601 time (e.g. 2026-11-02T08:00:00+08:00)")
            return None
        if dt.tzinfo is None or dt.utcoffset() is None:
            self.err(path, f"{value!r} has no UTC offset (write e.g. {value}+08:00)")
            return None
        if minute and (dt.second or dt.microsecond):
            self.err(path, f"{value!r} is not on a minute boundary")
            return None
        return dt

    def hours(self, value: Any, path: str, tz: tzinfo) -> ServiceHours | None:
        try:
            return ServiceHours.parse(value, tz)
        except ValueError as err:
            self.err(path, str(err))
            return None

    def integer(self, value: Any, path: str, lo: int, hi: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.err(path, f"expected a whole number, got {_kind(value)}")
            return None
        if not lo <= value <= hi:
            self.err(path, f"{value} is out of range ({lo}..{hi})")
            return None
        return value

    def items(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            self.err(path, f"expected a list, got {_kind(value)}")
            return []
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"{value!r}" if len(value) <= 40 else "a string"
    return {dict: "an object", list: "a list", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ScenarioError([("", f"key {key!r} given twice in one object")])
        out[key] = value
    return out


def _known_profiles(root: Path | None) -> dict[str, list[str]]:
    return {field: profiles.available(kind, root) for field, kind in PROFILE_FIELDS.items()}


def load_scenario(
    source: str | Path | Mapping[str, Any],
    *,
    check_profiles: bool = True,
    profiles_root: Path | None = None,
) -> Scenario:
    """Parse and validate a scenario from a JSON file path or a decoded mapping."""
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ScenarioError([("", f"{path}: cannot read: {err}")]) from err
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as err:
            raise ScenarioError(
                [("", f"{path}: not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})")]
            ) from err
    else:
        data = source
    known = _known_profiles(profiles_root) if check_profiles else {}
    return _validate(data, known)


def _validate(data: Any, known_profiles: dict[str, list[str]]) -> Scenario:
    c = _Checker()
    top = c.obj(
        data,
        "",
        ("name", "start", "end", "institutions", "units"),
        ("description", "timezone", "sample_interval_s", "service_hours", "events"),
    )
    if top is None:
        # a required key is missing: still check the rest, to report every problem at once
        if not isinstance(data, Mapping):
            raise ScenarioError(c.errors)
        top = dict(data)

    name = c.text(top.get("name"), "name") if "name" in top else None
    description = top.get("description")
    if description is not None and not isinstance(description, str):
        c.err("description", f"expected a string, got {_kind(description)}")
    tz_name = top.get("timezone", "Asia/Shanghai")
    tz: tzinfo | None
    try:
        tz = zone(tz_name) if isinstance(tz_name, str) else None
        if tz is None:
            c.err("timezone", f"expected a zone name like 'Asia/Shanghai', got {_kind(tz_name)}")
    except ValueError:
        c.err("timezone", f"unknown time zone {tz_name!r}")
        tz = None
    tz_or_default = tz or zone(None)
    start = c.when(top.get("start"), "start", minute=True) if "start" in top else None
    end = c.when(top.get("end"), "end", minute=True) if "end" in top else None
    if start and end and end <= start:
        c.err("end", "not after start")
        start = end = None
    interval = c.integer(top.get("sample_interval_s", 60), "sample_interval_s", 1, 86400)
    default_hours = c.hours(top.get("service_hours"), "service_hours", tz_or_default)

    institutions: list[Institution] = []
    codes: set[str] = set()
    for i, raw in enumerate(c.items(top.get("institutions", []), "institutions")):
        p = f"institutions[{i}]"
        o = c.obj(raw, p, ("code", "name", "county"), ("type", "service_hours"))
        if o is None:
            continue
        code = c.text(o["code"], f"{p}.code")
        iname = c.text(o["name"], f"{p}.name")
        county = c.text(o["county"], f"{p}.county")
        itype = o.get("type")
        if itype is not None and (not isinstance(itype, str) or itype not in INSTITUTION_TYPES):
            c.err(
                f"{p}.type",
                f"unknown institution type {itype!r} (expected one of {', '.join(INSTITUTION_TYPES)})",
            )
        hours = (
            c.hours(o["service_hours"], f"{p}.service_hours", tz_or_default) if "service_hours" in o else None
        )
        if code is not None and code in codes:
            c.err(f"{p}.code", f"duplicate institution code {code!r}")
            continue
        if code is not None:
            codes.add(code)
        if code is None or iname is None or county is None:
            continue
        institutions.append(
            Institution(code, iname, county, itype if isinstance(itype, str) else None, hours)
        )
    if isinstance(top.get("institutions"), list) and not top["institutions"]:
        c.err("institutions", "no institutions")

    units: list[Unit] = []
    sns: set[str] = set()
    for i, raw in enumerate(c.items(top.get("units", []), "units")):
        p = f"units[{i}]"
        o = c.obj(raw, p, ("sn", "institution", "model", "modem", "printer", "idcard"), ("status",))
        if o is None:
            continue
        sn = o["sn"]
        if not isinstance(sn, str) or not _SN.match(sn):
            c.err(f"{p}.sn", f"expected a serial number (letters, digits, '-', '_', '.'), got {_kind(sn)}")
            sn = None
        elif sn in sns:
            c.err(f"{p}.sn", f"duplicate unit {sn!r}")
            sn = None
        else:
            sns.add(sn)  # known from here on, even if another field of the unit is wrong (no cascade errors)
        inst = c.text(o["institution"], f"{p}.institution")
        if inst is not None and inst not in codes:
            c.err(f"{p}.institution", f"unknown institution {inst!r}")
            inst = None
        model = c.text(o["model"], f"{p}.model")
        parts: dict[str, str | None] = {}
        for fld in PROFILE_FIELDS:
            val = c.text(o[fld], f"{p}.{fld}")
            names = known_profiles.get(fld) or []
            if val is not None and names and val not in names:
                c.err(f"{p}.{fld}", f"unknown profile {val!r} (known: {', '.join(names)})")
                val = None
            parts[fld] = val
        changes: list[StatusChange] = []
        for j, sraw in enumerate(c.items(o.get("status", []), f"{p}.status")):
            sp = f"{p}.status[{j}]"
            so = c.obj(sraw, sp, ("from", "status"), ())
            if so is None:
                continue
            at = c.when(so["from"], f"{sp}.from", minute=False)
            st = so["status"]
            if not isinstance(st, str) or st not in STATUSES:
                c.err(f"{sp}.status", f"unknown status {_kind(st)} (expected one of {', '.join(STATUSES)})")
                continue
            if at is None:
                continue
            if changes and at <= changes[-1].at:
                c.err(f"{sp}.from", "not after the previous status change")
                continue
            changes.append(StatusChange(at, st))
        if sn is None or inst is None or model is None or None in parts.values():
            continue
        units.append(
            Unit(
                sn,
                inst,
                model,
                parts["modem"] or "",
                parts["printer"] or "",
                parts["idcard"] or "",
                tuple(changes),
            )
        )
    if isinstance(top.get("units"), list) and not top["units"]:
        c.err("units", "no units")

    events: list[Event] = []
    for i, raw in enumerate(c.items(top.get("events", []), "events")):
        p = f"events[{i}]"
        o = c.obj(raw, p, ("unit", "fault", "start", "end"), ("rtt_ms",))
        if o is None:
            continue
        unit = o["unit"]
        if not isinstance(unit, str):
            c.err(f"{p}.unit", f"expected a unit SN or '*', got {_kind(unit)}")
            unit = None
        elif unit != ALL_UNITS and unit not in sns:
            c.err(f"{p}.unit", f"unknown unit {unit!r}")
            unit = None
        fault = o["fault"]
        if not isinstance(fault, str) or fault not in FAULTS:
            c.err(f"{p}.fault", f"unknown fault {_kind(fault)} (expected one of {', '.join(FAULTS)})")
            fault = None
        rtt = None
        if fault == "high_latency":
            if "rtt_ms" not in o:
                c.err(f"{p}.rtt_ms", "missing (required for high_latency)")
            else:
                rtt = c.integer(o["rtt_ms"], f"{p}.rtt_ms", 0, 600_000)
            if rtt is None:
                fault = None
        elif "rtt_ms" in o and fault is not None:
            c.err(f"{p}.rtt_ms", f"only for high_latency, not {fault}")
        es = c.when(o["start"], f"{p}.start", minute=True)
        ee = c.when(o["end"], f"{p}.end", minute=True)
        if es and ee and ee <= es:
            c.err(f"{p}.end", "not after start")
            continue
        if es and ee and start and end and (ee <= start or es >= end):
            c.err(p, "entirely outside the scenario period")
            continue
        if unit is None or fault is None or es is None or ee is None:
            continue
        events.append(Event(i, unit, fault, es, ee, rtt))

    if c.errors:
        raise ScenarioError(c.errors)
    assert name is not None and start is not None and end is not None and tz is not None
    assert interval is not None and default_hours is not None
    return Scenario(
        name=name,
        timezone=tz_name,
        tz=tz,
        start=start,
        end=end,
        sample_interval_s=interval,
        service_hours=default_hours,
        institutions=tuple(institutions),
        units=tuple(units),
        events=tuple(events),
        description=description,
    )
