"""Catalogue T3, shanghai-day-boundaries, on the pure counter (counting/counter.py).

A whole year (2025) of minute fixtures for one unit in Asia/Shanghai, counted with the process's own time zone
(``TZ``, what a server's host or container sets) at UTC, Asia/Shanghai and America/New_York (which has DST): the
per-slot codes, the figures and the day roll-ups are identical in all three; the samples at 15:59:59Z and
16:00:00Z fall in different local days; every local day of the year has exactly 1,440 minute slots.

Weaker than the catalogue in one point: "all stored timestamps UTC" is a property of the server's tables (epoch
seconds), not of the counter, and is not asserted here. A counter that read a local day or hour from the host's
clock (``datetime.fromtimestamp(ts)`` without the fleet's zone, ``time.localtime``, ``date.today()``) gives other
days under UTC and New York and fails this test.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from counting.counter import Sample, count_unit, rollup

SHANGHAI = ZoneInfo("Asia/Shanghai")
YEAR_FROM = datetime(2025, 1, 1, tzinfo=SHANGHAI)
YEAR_TO = datetime(2026, 1, 1, tzinfo=SHANGHAI)
HOST_ZONES = ("UTC", "Asia/Shanghai", "America/New_York")


@pytest.fixture
def host_tz() -> Iterator[object]:
    """Set the process's time zone (``TZ`` + ``tzset``) for the duration of one call; restored afterwards."""
    saved = os.environ.get("TZ")

    def set_tz(name: str) -> None:
        os.environ["TZ"] = name
        time.tzset()

    yield set_tz
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


def _year_of_samples() -> list[Sample]:
    """Minute samples for all of 2025 (Shanghai), with gaps and faults so that the days differ from each other:
    each day a different run of minutes is missing, and the printer is out of paper for the first hour after
    noon on every fifth day."""
    start = int(YEAR_FROM.timestamp())
    out = []
    for k in range(int((YEAR_TO - YEAR_FROM).total_seconds()) // 60):
        day, minute = divmod(k, 1440)
        if (day * 37) % 1440 <= minute < (day * 37) % 1440 + day % 11:
            continue  # missing data
        intact = not (day % 5 == 0 and 720 <= minute < 780)
        network_ok = minute % 97 != 0
        out.append(Sample(ts=start + 60 * k, intact=intact, network_ok=network_ok))
    return out


def _count(samples: list[Sample]) -> tuple[bytes, tuple[int, int, int, int], list[tuple[str, tuple[int, ...]]]]:
    result = count_unit(YEAR_FROM, YEAR_TO, samples, hours="08:00-18:00", tz="Asia/Shanghai")
    days = [(r.start.isoformat(), (r.service_slots, r.intact_slots, r.network_ok_slots, r.no_data_slots))
            for r in rollup(result, "day")]
    return result.codes, result.figures.counts(), days


def test_a_year_counts_the_same_whatever_the_hosts_time_zone(host_tz) -> None:  # type: ignore[no-untyped-def]
    samples = _year_of_samples()
    results = {}
    for name in HOST_ZONES:
        host_tz(name)
        assert time.localtime(int(YEAR_FROM.timestamp())).tm_zone in {"UTC", "CST", "EST"}, name
        results[name] = _count(samples)
    codes, counts, days = results["Asia/Shanghai"]
    for name in HOST_ZONES:
        assert results[name][0] == codes, f"per-slot codes differ with TZ={name}"
        assert results[name][1] == counts, f"figures differ with TZ={name}: {results[name][1]} vs {counts}"
        assert results[name][2] == days, f"day roll-ups differ with TZ={name}"
    # the fixture is not trivial: faults and gaps are counted, every day has its 600 service slots
    assert len(days) == 365
    assert all(start.endswith("T00:00:00+08:00") for start, _ in days)
    assert all(c[0] == 600 for _, c in days)
    assert counts[0] == 365 * 600 and counts[1] < counts[0] and counts[2] < counts[0] and counts[3] > 0


def test_samples_either_side_of_16_utc_fall_in_different_local_days(host_tz) -> None:  # type: ignore[no-untyped-def]
    """15:59:59Z is 23:59:59 on Monday in Shanghai, 16:00:00Z is 00:00 on Tuesday: the slots holding the two instants
    belong to different local days, and samples taken in those two minutes (stamped on the minute, as the agent
    stamps them) are counted on Monday and on Tuesday respectively."""
    before = datetime(2025, 3, 3, 15, 59, 59, tzinfo=UTC)
    after = datetime(2025, 3, 3, 16, 0, 0, tzinfo=UTC)
    monday = datetime(2025, 3, 3, tzinfo=SHANGHAI)
    for name in HOST_ZONES:
        host_tz(name)
        empty = count_unit(monday, monday + timedelta(days=2), [], hours="00:00-24:00", tz="Asia/Shanghai")
        assert empty.slot_at(before).start.isoformat() == "2025-03-03T23:59:00+08:00", name
        assert empty.slot_at(after).start.isoformat() == "2025-03-04T00:00:00+08:00", name
        got = {}
        for label, ts in (("before", before.replace(second=0)), ("after", after)):
            result = count_unit(monday, monday + timedelta(days=2), [Sample(ts=ts)], hours="00:00-24:00",
                                tz="Asia/Shanghai")
            got[label] = [(r.start.date().isoformat(), r.intact_slots) for r in rollup(result, "day")]
        assert got == {"before": [("2025-03-03", 1), ("2025-03-04", 0)],
                       "after": [("2025-03-03", 0), ("2025-03-04", 1)]}, (name, got)


def test_every_local_day_of_a_year_has_1440_minutes(host_tz) -> None:  # type: ignore[no-untyped-def]
    for name in HOST_ZONES:
        host_tz(name)
        result = count_unit(YEAR_FROM, YEAR_TO, [], hours="00:00-24:00", tz="Asia/Shanghai")
        days = rollup(result, "day")
        assert len(days) == 365, name
        assert {r.service_slots for r in days} == {1440}, (name, sorted({r.service_slots for r in days}))
        assert {r.no_data_slots for r in days} == {1440}
        assert [r.start.date() for r in days] == [YEAR_FROM.date() + timedelta(days=i) for i in range(365)]
        assert len(result.codes) == 365 * 1440
