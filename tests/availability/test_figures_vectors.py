"""Availability figures summed from cached per-unit arrays (server/availability/vectors.py, decision 032) answer
exactly what the per-unit rows summed in Python answered, on both backends.

The reference below is the figures code as it stood before (issue 18's docs/performance-scope.md run 3): each
unit's sums over the period from ``rollup_sums`` (whole months, whole days, hour slices of day blobs), a
``Figures`` per unit, groups by ``combine``. The fleet is generated: institutions in counties and regions (one
county in two regions, one institution without county), spares without institution, a unit whose institution is
not in the table; hour counts written through the roll-up pass's own ``write_hour_counts`` across a month's end,
some unit-days missing, some hours without service (a unit out of service, outside service hours), a unit exactly
at the threshold. Periods: whole hours at random, from one hour to two months, and the time zone's DST days
(America/New_York: a 23-hour and a 25-hour day). Then the caches are put to the test: another process's writes,
a purge, a unit moved to another county.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from counting.counter import Figures, Sample, combine, count_unit
from server.availability.rollups import hours_in_day, midnight, plan_period, split_reasons
from server.availability.service import Availability, minutes_lost
from server.registry.service import Registry
from server.settings import parse
from server.storage import open_storage


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


async def reference(svc: Availability, start: int, end: int, group_by: str, *, county: str | None = None,
                    region: str | None = None, institution: str | None = None, sn: str | None = None,
                    within: frozenset[str] | None = None) -> dict[str, Any]:
    """The figures as ``Availability._figures`` computed them before the arrays (per unit, in Python)."""
    index = await svc.registry.index()
    scope = [u for u in index.values()
             if (within is None or u.sn in within) and (county is None or u.county == county)
             and (region is None or u.region == region)
             and (institution is None or u.institution == institution) and (sn is None or u.sn == sn)]
    counted_to = min(end, svc.rolled_to)
    if counted_to <= start:
        sums, counted_to = {}, max(counted_to, start)
    else:
        plan = plan_period(start, counted_to, svc.tz)
        narrow = [u.sn for u in scope] if len(scope) < 2000 else None
        sums = await svc.storage.rollup_sums(plan.months, plan.days, plan.parts, narrow)
    thr = svc.threshold
    units = {}
    for u in scope:
        sv, ok_dev, ok_net, nodata = sums.get(u.sn, (0, 0, 0, 0))
        f = Figures(sv, ok_dev, ok_net, nodata, units=1, threshold=thr, unit=u.sn)
        units[u.sn] = Figures(sv, ok_dev, ok_net, nodata, units=1, threshold=thr, unit=u.sn,
                              flagged_units=1 if f.flagged else 0)
    out: dict[str, Any] = {
        "from": datetime.fromtimestamp(start, svc.tz).isoformat(),
        "to": datetime.fromtimestamp(end, svc.tz).isoformat(),
        "counted_to": datetime.fromtimestamp(counted_to, svc.tz).isoformat(),
        "complete": counted_to >= end,
        "group_by": group_by,
        "threshold": float(thr),
    }
    out["fleet"] = svc.group_dict(combine(list(units.values()), threshold=thr), tier=True)
    if within is not None:
        out["fleet"]["tier"] = out["fleet"]["final_payment"] = None
    if group_by == "unit":
        out["items"] = [{"sn": u.sn, "institution": u.institution, "county": u.county, "region": u.region,
                         **svc.unit_dict(units[u.sn])} for u in sorted(scope, key=lambda x: x.sn)]
    elif group_by != "fleet":
        groups: dict[str, list[Figures]] = defaultdict(list)
        names: dict[str, dict[str, Any]] = {}
        for u in scope:
            key = {"institution": u.institution, "county": u.county, "region": u.region}[group_by] or ""
            groups[key].append(units[u.sn])
            if group_by == "institution":
                names[key] = {"name": u.institution_name, "county": u.county, "region": u.region,
                              "type": u.institution_type}
        out["items"] = [{group_by: k or None, **names.get(k, {}), **svc.group_dict(combine(v, threshold=thr))}
                        for k, v in sorted(groups.items())]
    return out


async def reference_flagged(svc: Availability, start: int, end: int, limit: int, **scope: Any) -> list[dict[str, Any]]:
    """The flagged list as ``Availability.flagged`` made it: every unit's figures, the flagged ones worst first."""
    fig = await reference(svc, start, end, "unit", **scope)
    flagged = [u for u in fig["items"] if u["flagged"]]
    flagged.sort(key=lambda u: (min(u["device_rate"] if u["device_rate"] is not None else 1,
                                    u["network_rate"] if u["network_rate"] is not None else 1), u["sn"]))
    return flagged[:limit]


def counts(rnd: random.Random, hour: int, faults: float) -> tuple[int, int, int, int]:
    """One unit-hour as the counter leaves it: service slots only in service hours; intact/ok/no data within them;
    ``faults``: the share of the unit's hours that lose something."""
    if not 8 <= hour < 18 or rnd.random() < 0.05:
        return (0, 0, 0, 0)
    s = 60 if rnd.random() < 0.9 else rnd.randrange(1, 60)  # a partial hour: a status change or hours at :30
    if rnd.random() >= faults:
        return (s, s, s, 0)
    nodata = rnd.randrange(0, s + 1)
    bad_dev = rnd.randrange(0, s - nodata + 1) // 2
    bad_net = rnd.randrange(0, s - nodata + 1) // 2
    return (s, s - nodata - bad_dev, s - nodata - bad_net, nodata)


async def fleet(storage: Any, tz: ZoneInfo, first: date, days: int, seed: int) -> list[str]:
    """Institutions, units and ``days`` of hour counts from ``first`` (written as the roll-up pass writes them)."""
    rnd = random.Random(seed)
    insts = []
    for k in range(24):
        county, region = f"县{k % 6}", f"市{k % 6 // 3}"
        if k == 5:
            region = "市9"  # 县5 has institutions in two regions
        insts.append({"code": f"I{k:03d}", "name": f"机构{k}", "county": "" if k == 7 else county,
                      "region": region, "type": ["village_clinic", "hospital"][k % 2]})
    await storage.upsert_institutions(insts)
    units = []
    for n in range(120):
        inst = None if n % 17 == 0 else ("GONE" if n == 50 else insts[rnd.randrange(len(insts))]["code"])
        units.append({"sn": f"HN{n:05d}", "institution": inst, "stock_type": "spare" if inst is None else "deployed"})
    await storage.upsert_registry_units(units, int(midnight(first, tz)), "test")
    sns = [u["sn"] for u in units]
    faults = {sn: rnd.choice([0.0, 0.01, 0.02, 0.05, 0.3]) for sn in sns}
    items = []
    for d in range(days):
        day = first + timedelta(days=d)
        nh = hours_in_day(day, tz)
        for sn in sns:
            if rnd.random() < 0.05:  # a unit-day never counted (registered later, or a gap)
                continue
            for h in range(nh):
                c = (60, 57, 60, 0) if sn == "HN00001" and 8 <= h < 18 else counts(rnd, h, faults[sn])  # 95 % exactly
                items.append((sn, day.toordinal(), h, nh, c))
        if len(items) > 20000:
            await storage.write_hour_counts(items)
            items = []
    if items:
        await storage.write_hour_counts(items)
    # a roll-up row of a unit not (or no longer) in the registry is in no answer
    await storage.write_hour_counts([("XX00001", first.toordinal(), 9, hours_in_day(first, tz), (60, 0, 0, 60))])
    return sns


async def service(url: str, tz: str, now: int) -> tuple[Availability, Any]:
    settings = parse({"storage": {"url": url}, "timezone": tz, "ingest_enabled": False})
    storage = open_storage(url, readers=2)
    await storage.open()
    clock = Clock(now)
    svc = Availability(settings, storage, Registry(settings, storage, clock.now), clock)
    await storage.meta_set("rolled_to", str(now))
    await svc.load()
    return svc, storage


def periods(rnd: random.Random, tz: ZoneInfo, first: date, days: int, n: int) -> list[tuple[int, int]]:
    """Whole-hour periods in and around the stored days: an hour, parts of a day, days, months, past the end."""
    out = []
    lo = midnight(first - timedelta(days=2), tz)
    hi = midnight(first + timedelta(days=days + 2), tz)
    hours = (hi - lo) // 3600
    for _ in range(n):
        a = rnd.randrange(0, hours - 1)
        b = rnd.choice([a + 1, rnd.randrange(a + 1, min(hours, a + 30) + 1), rnd.randrange(a + 1, hours + 1)])
        s, e = lo + 3600 * a, lo + 3600 * b
        # on a DST change, hour arithmetic in epoch seconds still lands on whole local hours
        out.append((s, e))
    out.append((midnight(first, tz), midnight(first + timedelta(days=days), tz)))  # every stored day
    m1 = date(first.year, first.month, 1) + timedelta(days=32)
    out.append((midnight(m1.replace(day=1), tz), midnight((m1 + timedelta(days=32)).replace(day=1), tz)))  # a month
    return out


@pytest.mark.parametrize("tz_name, first", [("Asia/Shanghai", date(2025, 1, 20)),
                                            ("America/New_York", date(2025, 2, 20))])  # 2025-03-09: 23 hours
async def test_every_answer_equals_the_per_unit_sums(url: str, tz_name: str, first: date) -> None:
    tz = ZoneInfo(tz_name)
    days = 45  # a month boundary and a whole month stored
    now = midnight(first + timedelta(days=days - 1), tz) + 15 * 3600  # the last day counted up to 15:00
    svc, storage = await service(url, tz_name, now)
    try:
        sns = await fleet(storage, tz, first, days, seed=len(tz_name))
        index = await svc.registry.index()
        region_units = frozenset(u.sn for u in index.values() if u.region == "市0")
        rnd = random.Random(18)
        scopes: list[dict[str, Any]] = [{}, {"county": "县5"}, {"county": ""}, {"region": "市9"},
                                        {"institution": "I003"}, {"institution": "GONE"}, {"sn": "HN00001"},
                                        {"sn": "NOPE"}, {"within": region_units},
                                        {"within": region_units, "county": "县1"}, {"within": frozenset(sns)}]
        checked = 0
        for k, (a, b) in enumerate(periods(rnd, tz, first, days, 40)):
            scope = scopes[k % len(scopes)]
            for group_by in ("fleet", "unit", "institution", "county", "region"):
                got = await svc.figures(a, b, group_by, **scope)
                want = await reference(svc, a, b, group_by, **scope)
                got.pop("complete"), want.pop("complete")
                assert got == want, (k, a, b, group_by, scope)
                assert list(got["fleet"]) == list(want["fleet"])  # the same keys in the same order (JSON)
                if group_by != "fleet":
                    assert [list(i) for i in got["items"]] == [list(i) for i in want["items"]]
                if group_by == "unit":  # ?flagged_only=true: the flagged units alone, the fleet's figures the same
                    only = await svc.figures(a, b, "unit", only_flagged=True, **scope)
                    assert only["items"] == [u for u in want["items"] if u["flagged"]]
                    assert only["fleet"] == want["fleet"]
                checked += 1
            listed = (await svc.flagged(a, b, limit=30, with_reasons=False, county=scope.get("county"),
                                        within=scope.get("within")))["items"]
            want_flagged = await reference_flagged(svc, a, b, 30, county=scope.get("county"),
                                                   within=scope.get("within"))
            assert [{k: v for k, v in u.items() if k != "below"} for u in listed] == want_flagged
        assert checked == 5 * 42
        # the data is not trivial: units flagged and not, the one at exactly 95 % not flagged
        whole = await svc.figures(midnight(first, tz), midnight(first + timedelta(days=days), tz), "unit")
        flags = Counter(u["flagged"] for u in whole["items"])
        assert flags[True] > 10 and flags[False] > 10
        exact = next(u for u in whole["items"] if u["sn"] == "HN00001")
        assert exact["flagged"] is False and Fraction(exact["intact_slots"], exact["service_slots"]) <= Fraction(95, 100)
    finally:
        await storage.close()


async def test_the_kept_sums_follow_another_process_s_writes_a_purge_and_the_registry(url: str) -> None:
    tz = ZoneInfo("Asia/Shanghai")
    first, days = date(2025, 4, 25), 20  # April's last days and May
    now = midnight(first + timedelta(days=days), tz)
    svc, storage = await service(url, "Asia/Shanghai", now)
    other = open_storage(url, readers=2)  # another server process (the primary's roll-up pass)
    await other.open()
    try:
        await fleet(storage, tz, first, days, seed=3)
        quarter = (midnight(date(2025, 4, 1), tz), now)  # April and May up to now: a month, days, no part
        today = date(2025, 5, 14)
        for group_by in ("county", "unit"):
            assert await svc.figures(*quarter, group_by) == await reference(svc, *quarter, group_by)
        reads = svc._pieces.reads

        # the primary recounts an hour of May 14th (late data): the answer changes within a second
        await other.write_hour_counts([("HN00003", today.toordinal(), 10, 24, (60, 0, 0, 60))])
        await asyncio.sleep(1.1)  # VERSION_TTL_S: another process's write is noticed within it
        got = await svc.figures(*quarter, "unit")
        assert got == await reference(svc, *quarter, "unit")
        assert next(u for u in got["items"] if u["sn"] == "HN00003")["no_data_slots"] >= 60
        # ... and only that day's sums were read again, not April's nor the other May days'
        assert svc._pieces.reads - reads == 1

        # a unit moves to an institution of another county: the counties' figures follow at once
        moved = next(u for u in (await svc.registry.index()).values() if u.county == "县1")
        await storage.upsert_registry_units([{"sn": moved.sn, "institution": "I002"}], now, "test")
        svc.registry.invalidate()
        by_county = await svc.figures(*quarter, "county")
        assert by_county == await reference(svc, *quarter, "county")

        # the purge drops April and older: sums over them are zeros now, as the rows are gone
        april = (midnight(date(2025, 4, 25), tz), midnight(date(2025, 5, 1), tz))
        assert (await svc.figures(*april, "fleet"))["fleet"]["service_slots"] > 0
        await other.purge_rollups(date(2025, 5, 1).toordinal())
        await asyncio.sleep(1.1)
        assert (await svc.figures(*april, "fleet"))["fleet"]["service_slots"] == 0
        assert await svc.figures(*quarter, "region") == await reference(svc, *quarter, "region")
    finally:
        await other.close()
        await storage.close()


def reference_minutes(uc: Any, outage: dict[int, Any]) -> Counter[str]:
    """``Availability.reasons``' walk before :func:`minutes_lost`: every counted slot in order."""
    out: Counter[str] = Counter()
    for s in uc.slots(counted_only=True):
        if s.device == "no_data":
            out["no_data"] += 1
            continue
        dev, net = split_reasons(s.reason)
        if s.device == "not_intact":
            for r in dev or ["device_fault"]:
                out[r] += 1
        if s.network == "not_ok":
            for r in net or ["network"]:
                key = r if not r.startswith("rtt=") else "latency"
                if key == "link_down" and int(s.start.timestamp()) in outage:
                    key = "link_down_carrier_outage"
                out[key] += 1
    return out


def test_minutes_lost_by_reason_are_the_slot_walk_s_in_the_same_order() -> None:
    tz = ZoneInfo("Asia/Shanghai")
    start = datetime(2025, 3, 3, tzinfo=tz)
    reasons = [None, "printer=paper_out", "link_down", "rtt=512ms", "idcard=unknown,link_down",
               "modem=missing,rtt=480ms", "printer=cover_open,storage=full"]
    for seed in range(40):
        rnd = random.Random(seed)
        t = int(start.timestamp()) + rnd.randrange(0, 3600)
        samples = []
        while t < start.timestamp() + 2 * 86400:
            if rnd.random() < 0.9:
                why = rnd.choice(reasons)
                intact = why is None or not any(r for r in why.split(",") if "=" in r and not r.startswith("rtt"))
                net = why is None or ("link_down" not in why and "rtt" not in why)
                samples.append(Sample(t, rnd.choice([60, 60, 120, 30]), intact, net, why))
            t += rnd.choice([60, 60, 60, 300, 3600])
        history = [(int(start.timestamp()) + 86400 + 3600 * 11, "in_repair"),
                   (int(start.timestamp()) + 86400 + 3600 * 14, "in_service")] if seed % 2 else []
        uc = count_unit(start, start + timedelta(days=2), samples, status_history=history, tz=tz)
        down = [int(start.timestamp()) + 60 * m for m in range(0, 2 * 1440, 7)]
        outage = {m: {"county": "x"} for m in down}
        got, want = minutes_lost(uc, outage), reference_minutes(uc, outage)
        assert got == want
        assert list(dict(got.most_common())) == list(dict(want.most_common()))  # the answer's key order
        assert sum(want.values()) > 100
