"""The scenario oracle: availability figures counted straight from a scenario, with no server in the loop.

For every unit it builds the samples a perfect agent would send (one every ``sample_interval_s`` from the
scenario start, each covering ``[t, t + interval)`` and describing the state at ``t``), applying the faults as
the table in scenario-format.md says:

- ``power_off`` / ``agent_down``: no sample at all (no data);
- ``network_down``: network not ok; ``high_latency``: network not ok if ``rtt_ms`` > the latency threshold (400 ms);
- printer faults, ``idcard_reader_fault``, ``modem_unresponsive``, ``storage_readonly``: device not intact;
- ``sim_missing``: device not intact and network not ok.

Those samples go through the real counter (:func:`server.availability.count_unit`) with the institution's
service hours (else the scenario's default) and the unit's status history, so what the server must reproduce
slot for slot is exactly :func:`count_scenario`'s per-slot result. :func:`oracle` shapes the figures like the
future API answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from counting import (
    DEFAULT_THRESHOLD,
    Figures,
    Sample,
    UnitCount,
    as_fraction,
    combine,
    contract_tier,
    count_unit,
)
from counting.counter import DEFAULT_LAST_TIER, DEFAULT_TIERS

from .scenario import FAULTS, Scenario, Unit

LATENCY_THRESHOLD_MS = 400
GROUP_BY = ("unit", "institution", "county", "fleet")


def unit_samples(
    scenario: Scenario, unit: Unit, latency_threshold_ms: int = LATENCY_THRESHOLD_MS
) -> list[Sample]:
    """The samples a perfect agent on ``unit`` would deliver over the scenario period."""
    interval = scenario.sample_interval_s
    start_s = int(scenario.start.timestamp())
    end_s = int(scenario.end.timestamp())
    events = [(int(e.start.timestamp()), int(e.end.timestamp()), e) for e in scenario.events_for(unit.sn)]
    samples: list[Sample] = []
    for t in range(start_s, end_s, interval):
        active = [e for a, b, e in events if a <= t < b]
        if not active:
            samples.append(Sample(t, interval, True, True))
            continue
        intact = ok = True
        silent = False
        reasons: set[str] = set()
        for e in active:
            device, network = FAULTS[e.fault]
            if device == "no_data":
                silent = True
                break
            if device == "no":
                intact = False
                reasons.add(e.fault)
            if network == "no" or (network == "latency" and (e.rtt_ms or 0) > latency_threshold_ms):
                ok = False
                reasons.add(e.fault)
        if silent:
            continue
        samples.append(Sample(t, interval, intact, ok, ",".join(sorted(reasons)) or None))
    return samples


def count_scenario(
    scenario: Scenario,
    *,
    latency_threshold_ms: int = LATENCY_THRESHOLD_MS,
    threshold: float | str | Fraction = DEFAULT_THRESHOLD,
) -> dict[str, UnitCount]:
    """Per-unit counts (with per-slot drill-down) over the scenario period, keyed by SN."""
    out: dict[str, UnitCount] = {}
    for unit in scenario.units:
        out[unit.sn] = count_unit(
            scenario.start,
            scenario.end,
            unit_samples(scenario, unit, latency_threshold_ms),
            hours=scenario.hours_for(unit),
            status_history=[(c.at, c.status) for c in unit.status],
            tz=scenario.tz,
            threshold=threshold,
            unit=unit.sn,
        )
    return out


def oracle(
    scenario: Scenario,
    *,
    group_by: str = "unit",
    latency_threshold_ms: int = LATENCY_THRESHOLD_MS,
    threshold: float | str | Fraction = DEFAULT_THRESHOLD,
    tiers: Sequence[tuple[Any, int, Any]] = DEFAULT_TIERS,
    last_tier: tuple[int, Any] = DEFAULT_LAST_TIER,
    ndigits: int = 6,
) -> dict[str, Any]:
    """Figures for the scenario, shaped like the fleet server's answer.

    ``{"period": {...}, "groups": [...], "fleet": {..., "units", "flagged_units", "tier", "final_payment"}}``;
    rates are floats rounded to ``ndigits`` (flags and tiers are decided on the exact values).
    """
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by: expected one of {', '.join(GROUP_BY)}, got {group_by!r}")
    thr = as_fraction(threshold)
    counts = count_scenario(scenario, latency_threshold_ms=latency_threshold_ms, threshold=thr)
    per_unit = {sn: uc.figures for sn, uc in counts.items()}
    inst_of = {u.sn: scenario.institution(u.institution) for u in scenario.units}

    groups: list[dict[str, Any]] = []
    if group_by == "unit":
        for sn in sorted(per_unit):
            inst = inst_of[sn]
            groups.append(
                {"unit": sn, "institution": inst.code, "county": inst.county, **per_unit[sn].to_dict(ndigits)}
            )
    elif group_by == "institution":
        for inst in sorted(scenario.institutions, key=lambda i: i.code):
            members = [f for sn, f in per_unit.items() if inst_of[sn].code == inst.code]
            fig = combine(*members, threshold=thr)
            groups.append(
                {"institution": inst.code, "name": inst.name, "county": inst.county, **fig.to_dict(ndigits)}
            )
    elif group_by == "county":
        for county in sorted({i.county for i in scenario.institutions}):
            members = [f for sn, f in per_unit.items() if inst_of[sn].county == county]
            groups.append({"county": county, **combine(*members, threshold=thr).to_dict(ndigits)})

    fleet: Figures = combine(*per_unit.values(), threshold=thr)
    tier = contract_tier(fleet.device_rate, fleet.network_rate, tiers, last_tier)
    fleet_out = {
        **fleet.to_dict(ndigits),
        "tier": tier.tier if tier else None,
        "final_payment": float(tier.final_payment) if tier else None,
    }
    if group_by == "fleet":
        groups.append({"fleet": scenario.name, **fleet.to_dict(ndigits)})
    return {
        "period": {
            "scenario": scenario.name,
            "from": scenario.start.isoformat(),
            "to": scenario.end.isoformat(),
            "timezone": scenario.timezone,
            "slot_s": 60,
            "sample_interval_s": scenario.sample_interval_s,
            "threshold": float(thr),
            "latency_threshold_ms": latency_threshold_ms,
            "group_by": group_by,
        },
        "groups": groups,
        "fleet": fleet_out,
    }
