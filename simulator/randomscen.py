"""Scenarios made from a seed: for the exactness tests and the benchmarks of the virtual-time player.

:func:`random_scenario` makes a small fleet's hour or two with every fault kind, overlapping faults, latencies at
399, 400 and 401 ms and just under the probe wait, a status change and a fleet-wide fault. :func:`fleet_week`
makes the benchmark's fleet: N units over D days, service 08:00-18:00, one sample a minute, faults of every kind
spread over the service hours. The same seed gives the same scenario.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from .scenario import FAULTS

MODEMS = ("quectel-ec20", "simcom-sim7600", "huawei-me909s", "fibocom-l610")
PRINTERS = ("generic-58mm", "generic-80mm")
#: round trips around the 400 ms threshold, and one just under the agent's 5 s probe wait
LATENCIES = (399, 400, 401, 4900)


def _units(n: int, prefix: str, institutions: list[str]) -> list[dict[str, Any]]:
    return [{"sn": f"{prefix}{i + 1:04d}", "institution": institutions[i % len(institutions)], "model": "generic-pos",
             "modem": MODEMS[i % len(MODEMS)], "printer": PRINTERS[i % len(PRINTERS)], "idcard": "generic-sam"}
            for i in range(n)]


def _iso(t: datetime) -> str:
    return t.isoformat()


def random_scenario(seed: int, units: int = 5, hours: int = 1, *, storage_readonly: bool = True,
                    extra_faults: int = 10) -> dict[str, Any]:
    """A fleet of ``units`` over ``hours`` whole hours from 09:00 (service 09:00-18:00), with every fault kind
    (``storage_readonly`` only if asked: it needs root), the latencies of :data:`LATENCIES`, ``extra_faults`` more
    at random (so some overlap), one unit in repair for a while and one fault on every unit at once."""
    rng = random.Random(seed)
    start = datetime.fromisoformat("2026-06-02T09:00:00+08:00")
    minutes = 60 * hours
    insts = ["469005-001", "469005-101"]
    fleet = _units(units, f"HN9{seed % 100:02d}", insts)
    sns = [u["sn"] for u in fleet]
    events: list[dict[str, Any]] = []

    def event(sn: str, fault: str, rtt: int | None = None, length: tuple[int, int] = (2, 8)) -> None:
        a = rng.randrange(2, minutes - length[1] - 1)
        b = a + rng.randint(*length)
        e: dict[str, Any] = {"unit": sn, "fault": fault, "start": _iso(start + timedelta(minutes=a)),
                             "end": _iso(start + timedelta(minutes=b))}
        if rtt is not None:
            e["rtt_ms"] = rtt
        events.append(e)

    kinds = sorted(f for f in FAULTS if f != "high_latency" and (storage_readonly or f != "storage_readonly"))
    for fault in kinds:
        event(rng.choice(sns), fault)
    for rtt in LATENCIES:
        event(rng.choice(sns), "high_latency", rtt)
    for _ in range(extra_faults):
        fault = rng.choice(kinds + ["high_latency"])
        event(rng.choice(sns), fault, rng.choice(LATENCIES + (250, 650)) if fault == "high_latency" else None)
    event("*", rng.choice(["printer_paper_out", "idcard_reader_fault", "printer_cover_open"]), length=(2, 4))
    a = rng.randrange(5, minutes - 15)
    fleet[rng.randrange(units)]["status"] = [
        {"from": _iso(start + timedelta(minutes=a)), "status": "in_repair"},
        {"from": _iso(start + timedelta(minutes=a + rng.randint(3, 10))), "status": "in_service"}]
    return {
        "name": f"random {seed}: {units} units x {hours} h",
        "timezone": "Asia/Shanghai",
        "start": _iso(start), "end": _iso(start + timedelta(hours=hours)),
        "sample_interval_s": 60, "service_hours": "09:00-18:00",
        "institutions": [{"code": insts[0], "name": "文城镇卫生院", "county": "文昌", "type": "health_centre"},
                         {"code": insts[1], "name": "东郊村卫生室", "county": "文昌", "type": "village_clinic"}],
        "units": fleet, "events": events,
    }


def fleet_week(units: int = 100, days: int = 7, seed: int = 7, *, storage_readonly: bool = False,
               faults_per_unit_day: float = 1.0) -> dict[str, Any]:
    """The benchmark fleet: ``units`` units over ``days`` days from a Monday 00:00, service 08:00-18:00 every day,
    a sample a minute, and on average ``faults_per_unit_day`` faults per unit and day of every kind (latencies
    included; ``storage_readonly`` only if asked), each 2-60 minutes inside the service hours."""
    rng = random.Random(seed)
    start = datetime.fromisoformat("2026-11-02T00:00:00+08:00")
    insts = [f"4690{30 + i // 50:02d}-{i % 50 + 1:03d}" for i in range(max(1, units // 10))]
    fleet = _units(units, "HN5", insts)
    kinds = sorted(f for f in FAULTS if storage_readonly or f != "storage_readonly")
    events: list[dict[str, Any]] = []
    for _ in range(int(units * days * faults_per_unit_day)):
        day = rng.randrange(days)
        a = start + timedelta(days=day, hours=8, minutes=rng.randrange(0, 9 * 60))
        b = a + timedelta(minutes=rng.randint(2, 60))
        fault = rng.choice(kinds)
        e: dict[str, Any] = {"unit": rng.choice(fleet)["sn"], "fault": fault, "start": _iso(a), "end": _iso(b)}
        if fault == "high_latency":
            e["rtt_ms"] = rng.choice(LATENCIES + (250, 650, 1200))
        events.append(e)
    return {
        "name": f"{units} units x {days} days",
        "timezone": "Asia/Shanghai",
        "start": _iso(start), "end": _iso(start + timedelta(days=days)),
        "sample_interval_s": 60, "service_hours": "08:00-18:00",
        "institutions": [{"code": c, "name": f"卫生院 {c}", "county": "琼中", "type": "health_centre"} for c in insts],
        "units": fleet, "events": events,
    }


__all__ = ["LATENCIES", "fleet_week", "random_scenario"]
