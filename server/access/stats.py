"""Service statistics, deployment coverage and the map's figures (issue 18, tender items 16-28).

Services come from the terminals' hourly aggregates, rolled up per county and day and per institution and month
as they arrive (``server/storage/access.py``), so a year is ~365 rows per county and 12 per institution whatever
the fleet's size. "People served" is the number of identity checks (each check is one person at the counter;
the terminal never sends who). Coverage is read from the registry (deployed terminals and their registration
times) and the institutions.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field

from ..answers import timed
from ..auth.openapi import Open
from ..registry.models import FieldError
from ..storage.access import COUNTS

PERIOD_DAYS = {"week": 7, "month": 30, "half_year": 182, "year": 365}
METHODS = ("face", "idcard", "evoucher", "other")


class Point(Open):
    date: str
    services: int
    people: int


class MethodShare(Open):
    method: str
    count: int
    share: float | None


class TopInstitution(Open):
    institution: str
    name: str
    county: str
    services: int


class LevelServices(Open):
    level: str = Field(description="the institutions' level (provincial, prefectural, county_level, township, "
                                   "village; '': not given)")
    services: int
    share: float | None


class Services(Open):
    period: str
    by: str
    first_day: str
    last_day: str
    totals: dict[str, int]
    series: list[Point]
    identity_checks: list[MethodShare]
    top_institutions: list[TopInstitution]
    by_level: list[LevelServices] = Field(description="services per level of the institutions that gave them, "
                                                      "whole months as top_institutions")


class CoverageGroup(Open):
    key: str
    institutions: int
    covered: int
    rate: float | None


class CountyOverTime(Open):
    county: str
    institutions: int
    covered: list[int] = Field(description="institutions covered at the end of each month of over_time")


class Coverage(Open):
    by_type: list[CoverageGroup]
    by_level: list[CoverageGroup]
    by_county: list[CoverageGroup]
    over_time: list[dict[str, Any]]
    county_over_time: list[CountyOverTime]
    new_deployments: list[dict[str, Any]]
    ranking: list[CoverageGroup]


class MapArea(Open):
    name: str
    region: str
    units: int
    online: int
    institutions: int


class MapFigures(Open):
    counties: list[MapArea]
    cities: list[MapArea]
    map: str


def _today(app: Any) -> date:
    return datetime.fromtimestamp(app.state.clock.now(), ZoneInfo(app.state.settings.timezone)).date()


def _day_number(d: date) -> int:
    return (d - date(1970, 1, 1)).days


async def services(app: Any, counties: list[str] | None, period: str, by: str, end: str | None) -> dict[str, Any]:
    if end is None:
        last = _today(app)
    else:
        try:
            last = date.fromisoformat(end)
        except ValueError as err:
            raise FieldError("end", f"not a date YYYY-MM-DD: {end!r}") from err
        if not 2000 <= last.year <= 2099:
            raise FieldError("end", "outside 2000..2099")
    first = last - timedelta(days=PERIOD_DAYS[period] - 1)
    store = app.state.access.store
    days = await store.service_days(_day_number(first), _day_number(last), counties)
    buckets: dict[str, list[int]] = {}
    d = first
    while d <= last:  # every day (or month) of the period, zero where nothing was served
        buckets.setdefault(d.isoformat() if by == "day" else d.isoformat()[:7], [0] * len(COUNTS))
        d += timedelta(days=1)
    totals = [0] * len(COUNTS)
    for day, values in days:
        key = (date(1970, 1, 1) + timedelta(days=day)).isoformat()
        key = key if by == "day" else key[:7]
        acc = buckets.setdefault(key, [0] * len(COUNTS))
        for i, v in enumerate(values):
            acc[i] += v
            totals[i] += v
    series = [{"date": k, "services": v[0], "people": sum(v[1:]), **dict(zip(COUNTS[1:], v[1:], strict=True))}
              for k, v in sorted(buckets.items())]
    checks = sum(totals[1:])
    shares = [{"method": m, "count": totals[1 + i], "share": round(totals[1 + i] / checks, 4) if checks else None}
              for i, m in enumerate(METHODS)]
    months = (first.year * 100 + first.month, last.year * 100 + last.month)
    top = await store.top_institutions(*months, counties, 10)
    levels = await store.services_by_level(*months, counties)
    level_total = sum(n for _, n in levels)
    return {
        "period": period, "by": by, "first_day": first.isoformat(), "last_day": last.isoformat(),
        "totals": {"services": totals[0], "people": checks, **dict(zip(COUNTS[1:], totals[1:], strict=True))},
        "series": series, "identity_checks": shares,
        "top_institutions": [{"institution": code, "name": name, "county": county, "services": n}
                             for code, n, name, county in top],
        "by_level": [{"level": lv, "services": n, "share": round(n / level_total, 4) if level_total else None}
                     for lv, n in levels],
        "months_note": "top institutions and by_level count whole months: the period's first and last months in full",
    }


def _group(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    total: Counter[str] = Counter()
    covered: Counter[str] = Counter()
    for r in rows:
        k = r.get(key) or ""
        total[k] += 1
        covered[k] += 1 if r["units"] else 0
    return [{"key": k, "institutions": total[k], "covered": covered[k],
             "rate": round(covered[k] / total[k], 4) if total[k] else None} for k in sorted(total)]


async def coverage(app: Any, counties: list[str] | None, filters: dict[str, Any], months: int) -> dict[str, Any]:
    """The coverage figures, kept per scope, filters, months and day until the rows they come from are read again
    (the registry or the institutions changed: ``registry_version``): 4-44 ms of CPU a request, every request."""
    access = app.state.access
    rows_key, rows = await access.coverage_rows_keyed(filters.get("model"))  # shared: read, never changed here
    today = _today(app)
    key = ("coverage", rows_key, None if counties is None else tuple(counties), tuple(sorted(filters.items())),
           months, today)
    got = access.answer(key)
    if got is None:
        got = _coverage(app, rows, counties, filters, months, today)
        access.keep_answer(key, got)
    return got  # type: ignore[no-any-return]


def _coverage(app: Any, rows: list[dict[str, Any]], counties: list[str] | None, filters: dict[str, Any],
              months: int, today: date) -> dict[str, Any]:
    keep = [r for r in rows
            if (counties is None or r["county"] in counties)
            and all(not filters.get(k) or r.get(k) == filters[k] for k in ("type", "level", "region", "county"))]
    by_county = _group(keep, "county")
    tz = ZoneInfo(app.state.settings.timezone)
    month_list = []
    y, m = today.year, today.month
    for _ in range(months):
        month_list.append((y, m))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    month_list.reverse()
    firsts = sorted(r["first_ts"] for r in keep if r["first_ts"] is not None)
    over_time = []
    for y, m in month_list:
        end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=tz).timestamp()
        covered = bisect_left(firsts, end)  # institutions whose first terminal came before the month's end
        over_time.append({"month": f"{y:04d}-{m:02d}", "institutions": len(keep), "covered": covered,
                          "rate": round(covered / len(keep), 4) if keep else None})
    ends = [datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=tz).timestamp() for y, m in month_list]
    by_place: dict[str, list[float]] = {}
    for r in keep:
        by_place.setdefault(r["county"] or "", []).append(r["first_ts"] if r["first_ts"] is not None else float("inf"))
    county_over_time = []
    for county in sorted(by_place):  # coverage per county over the months: each county's own line
        f = sorted(by_place[county])
        county_over_time.append({"county": county, "institutions": len(f), "covered": [bisect_left(f, e) for e in ends]})
    times = sorted(ts for r in keep for ts in r["times"])
    new: dict[str, int] = {}
    for y, m in month_list:  # terminals registered within each month of the window
        start = datetime(y, m, 1, tzinfo=tz).timestamp()
        end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=tz).timestamp()
        new[f"{y:04d}-{m:02d}"] = bisect_left(times, end) - bisect_left(times, start)
    return {
        "by_type": _group(keep, "type"),
        "by_level": _group(keep, "level"),
        "by_county": by_county,
        "over_time": over_time,
        "county_over_time": county_over_time,  # covered institutions at the end of each month of over_time
        "new_deployments": [{"month": o["month"], "units": new.get(o["month"], 0)} for o in over_time],
        "ranking": sorted(by_county, key=lambda g: (-(g["rate"] or 0), -g["covered"], g["key"])),
    }


async def map_figures(app: Any, counties: list[str] | None) -> dict[str, Any]:
    areas = [a for a in await app.state.access.map_rows() if counties is None or a["name"] in counties]
    cities: dict[str, dict[str, Any]] = {}
    for a in areas:
        c = cities.setdefault(a["region"], {"name": a["region"], "region": a["region"], "units": 0, "online": 0,
                                            "institutions": 0})
        for k in ("units", "online", "institutions"):
            c[k] += a[k]
    return timed({"counties": sorted(areas, key=lambda a: (a["region"], a["name"])),
                  "cities": sorted(cities.values(), key=lambda a: a["name"]),
                  "map": "/dashboard/static/province-map.json"}, app.state.settings.timezone)
