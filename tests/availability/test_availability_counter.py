"""The counting rule of availability.md, on tables counted by hand."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from counting import (
    Figures,
    Sample,
    combine,
    contract_tier,
    count_unit,
    figures_from_rollups,
    rollup,
)

SH = ZoneInfo("Asia/Shanghai")


def at(day: int, hh: int = 0, mm: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hh, mm, tzinfo=SH)


def minutes(start: datetime, end: datetime, **kw) -> list[Sample]:
    """One 60 s sample per minute in [start, end), as a perfect agent sends them."""
    n = int((end - start).total_seconds() // 60)
    return [Sample(start + timedelta(minutes=k), 60, **kw) for k in range(n)]


def test_full_day_perfect_agent():
    f = count_unit(at(2), at(3), minutes(at(2), at(3))).figures
    assert f.counts() == (600, 600, 600, 0)
    assert f.device_rate == 1 and f.network_rate == 1 and not f.flagged


def test_boundaries_0800_counted_1800_not():
    # only two samples: 08:00 (inside) and 18:00 (outside); 07:59 too (outside)
    samples = [Sample(at(2, 7, 59), 60), Sample(at(2, 8, 0), 60, intact=False), Sample(at(2, 18, 0), 60)]
    r = count_unit(at(2), at(3), samples)
    assert r.figures.counts() == (600, 0, 1, 599)
    assert r.slot_at(at(2, 8, 0)).counted and r.slot_at(at(2, 8, 0)).device == "not_intact"
    assert r.slot_at(at(2, 17, 59)).counted and r.slot_at(at(2, 17, 59)).device == "no_data"
    s18 = r.slot_at(at(2, 18, 0))
    assert not s18.counted and s18.excluded == "outside_service_hours" and s18.device == "intact"


def test_weekday_hours_with_a_day_without_hours():
    # Mon 2 .. Sun 8 November 2026, clinic open mon-fri 08:00-17:30, sat 08:00-12:00, Sunday closed
    hours = {"mon-fri": "08:00-17:30", "sat": "08:00-12:00"}
    r = count_unit(at(2), at(9), minutes(at(2), at(9)), hours=hours)
    assert r.figures.service_slots == 5 * 570 + 240
    sunday = count_unit(at(8), at(9), minutes(at(8), at(9)), hours=hours).figures
    assert sunday.counts() == (0, 0, 0, 0)
    assert sunday.device_rate is None and sunday.network_rate is None and not sunday.flagged


def test_status_change_mid_day():
    # in service until 12:30, in repair until 15:00, back in service after
    history = [(at(3, 12, 30), "in_repair"), (at(3, 15, 0), "in_service")]
    r = count_unit(at(3), at(4), minutes(at(3), at(4)), status_history=history)
    assert r.figures.service_slots == 600 - 150
    assert r.slot_at(at(3, 12, 29)).counted
    assert r.slot_at(at(3, 12, 30)).excluded == "in_repair"
    assert r.slot_at(at(3, 15, 0)).counted


def test_spare_swapped_in_counts_only_from_the_swap():
    history = [(at(3, 10, 0), "in_service")]
    r = count_unit(at(3), at(4), minutes(at(3), at(4)), status_history=history, initial_status="spare")
    assert r.figures.service_slots == 480
    assert r.slot_at(at(3, 9, 0)).excluded == "spare"


def test_overlapping_faults_and_overlapping_samples():
    # 09:00-10:00 network down; 09:30-10:30 printer paper out; each minute sampled by the live agent, and
    # 09:45-09:50 also covered by a replayed 5-minute sample that says all is well: bad news wins
    samples = []
    for s in minutes(at(2, 8), at(2, 18)):
        t = s.ts
        net_bad = at(2, 9) <= t < at(2, 10)
        paper = at(2, 9, 30) <= t < at(2, 10, 30)
        samples.append(
            Sample(t, 60, intact=not paper, network_ok=not net_bad, reason="paper" if paper else None)
        )
    samples.append(Sample(at(2, 9, 45), 300, True, True))
    r = count_unit(at(2), at(3), samples)
    assert r.figures.counts() == (600, 600 - 60, 600 - 60, 0)
    both = r.slot_at(at(2, 9, 47))
    assert (both.device, both.network, both.reason) == ("not_intact", "not_ok", "paper")


def test_late_data_out_of_order_gives_the_same_counts_and_slots():
    samples = []
    for s in minutes(at(2), at(4)):
        down = at(3, 9) <= s.ts < at(3, 11, 30)  # buffered during the outage, delivered later
        samples.append(s._replace(network_ok=not down))
    in_order = count_unit(at(2), at(4), samples)
    shuffled = samples[:]
    random.Random(7).shuffle(shuffled)
    late = count_unit(at(2), at(4), shuffled)
    assert late.figures == in_order.figures
    assert late.codes == in_order.codes
    assert in_order.figures.counts() == (1200, 1200, 1200 - 150, 0)


def test_empty_period_and_no_samples():
    empty = count_unit(at(2, 8), at(2, 8), minutes(at(2), at(3))).figures
    assert empty.counts() == (0, 0, 0, 0) and empty.device_rate is None and not empty.flagged
    nothing = count_unit(at(2), at(3), []).figures
    assert nothing.counts() == (600, 0, 0, 600)
    assert nothing.device_rate == 0 and nothing.flagged


def test_period_spanning_months():
    start, end = at(30, month=10), at(2, month=11)  # 30 Oct .. 2 Nov 2026: three days
    r = count_unit(start, end, minutes(start, end))
    assert r.figures.service_slots == 3 * 600
    days = rollup(r, "day")
    assert [row.start.date().isoformat() for row in days] == ["2026-10-30", "2026-10-31", "2026-11-01"]
    assert [row.service_slots for row in days] == [600, 600, 600]


def test_epoch_seconds_and_seconds_off_the_minute():
    # a sample at 08:00:30 covering 60 s covers only the slot starting at 08:01
    t = int(at(2, 8, 0).timestamp()) + 30
    r = count_unit(at(2, 8), at(2, 8, 3), [Sample(t, 60, intact=False)], hours="00:00-24:00")
    assert [s.device for s in r.slots()] == ["no_data", "not_intact", "no_data"]
    r2 = count_unit(at(2, 8), at(2, 8, 3), [Sample(float(t), 60.0, intact=False)], hours="00:00-24:00")
    assert r2.codes == r.codes


def test_dst_zone_slots_stay_on_the_minute():
    ny = ZoneInfo("America/New_York")  # 2026-03-08 02:00 -> 03:00
    start, end = datetime(2026, 3, 8, tzinfo=ny), datetime(2026, 3, 9, tzinfo=ny)
    base = int(start.timestamp())
    samples = [Sample(base + 60 * k, 60) for k in range(23 * 60)]
    r = count_unit(start, end, samples, tz=ny, hours="00:00-24:00")
    assert len(r) == 23 * 60 and r.figures.counts() == (1380, 1380, 1380, 0)
    assert all(s.start.second == 0 for s in r.slots())
    hours = rollup(r, "hour")
    assert len(hours) == 23
    assert [h.start.hour for h in hours[:4]] == [0, 1, 3, 4]
    office = count_unit(start, end, samples, tz=ny, hours="08:00-18:00").figures
    assert office.service_slots == 600


def test_exact_threshold():
    at95 = Figures(2000, 1900, 1900, 0, threshold=Fraction(95, 100))
    assert at95.device_rate == Fraction(95, 100) and not at95.flagged
    just_below = Figures(100_000, 94_999, 100_000, 0)  # 94.999 %
    assert just_below.flagged
    # the same through the counter, with a float threshold
    samples = minutes(at(2), at(3))
    bad = set(range(8 * 60, 8 * 60 + 30))  # 30 of 600 slots not intact: exactly 95 %
    samples = [s._replace(intact=(k not in bad)) for k, s in enumerate(samples)]
    f = count_unit(at(2), at(3), samples, threshold=0.95).figures
    assert f.device_rate == Fraction(570, 600) and not f.flagged and f.flagged_units == 0
    f2 = count_unit(at(2), at(3), samples, threshold=0.9501).figures
    assert f2.flagged and f2.flagged_units == 1


def test_combine_is_slot_weighted_not_an_average_of_rates():
    big = Figures(1000, 1000, 1000, 0)  # 100 %
    small = Figures(100, 50, 100, 0, flagged_units=1)  # 50 %, flagged
    g = combine(big, small)
    assert g.counts() == (1100, 1050, 1100, 0)
    assert g.device_rate == Fraction(1050, 1100)  # 95.45 %, while the mean of rates is 75 %
    assert g.units == 2 and g.flagged_units == 1 and not g.flagged
    county = combine(g, combine(small))
    assert county.units == 3 and county.flagged_units == 2


@pytest.mark.parametrize(
    ("device", "network", "tier", "share"),
    [
        (Fraction(95, 100), Fraction(95, 100), 1, Fraction(60, 100)),
        (Fraction(1), Fraction(94999, 100000), 2, Fraction(50, 100)),
        (Fraction(85, 100), Fraction(99, 100), 2, Fraction(50, 100)),
        (Fraction(8499, 10000), Fraction(1), 3, Fraction(40, 100)),
        (0.95, 0.95, 1, Fraction(60, 100)),
    ],
)
def test_contract_tiers(device, network, tier, share):
    t = contract_tier(device, network)
    assert t is not None and (t.tier, t.final_payment) == (tier, share)


def test_contract_tiers_configurable_and_empty():
    t = contract_tier(Fraction(9, 10), Fraction(9, 10), tiers=((0.98, 1, 0.7), (0.9, 2, 0.5)), last=(3, 0.3))
    assert t is not None and t.tier == 2
    assert contract_tier(None, Fraction(1)) is None


def test_rollups_sum_to_the_direct_count():
    samples = [
        s._replace(intact=(k % 13 != 0), network_ok=(k % 17 != 0))
        for k, s in enumerate(minutes(at(2), at(9)))
    ]
    r = count_unit(
        at(2, 7, 30), at(8, 16, 45), samples, hours={"mon-fri": "08:00-17:30", "sat": "08:00-12:00"}
    )
    for bucket in ("hour", "day"):
        rows = rollup(r, bucket)
        assert figures_from_rollups(rows).counts() == r.figures.counts()
    hours = rollup(r, "hour")
    assert hours[0].start == at(2, 7, 30) and hours[1].start == at(2, 8, 0)


def test_a_year_of_minute_samples_counts_every_slot():
    """A year of minute samples: the counts are exact, and the hourly roll-up sums back to them. (How fast:
    benchmarks/bench_counter.py; rule 5, no timed tests.)"""
    start, end = datetime(2026, 1, 1, tzinfo=SH), datetime(2027, 1, 1, tzinfo=SH)
    base = int(start.timestamp())
    samples = [Sample(base + 60 * k, 60, k % 100 != 0, k % 7 != 0) for k in range(365 * 1440)]
    r = count_unit(start, end, samples)
    assert r.figures.service_slots == 365 * 600
    assert r.figures.intact_slots == 365 * 600 - sum(
        1 for k in range(365 * 1440) if k % 100 == 0 and 480 <= k % 1440 < 1080
    )
    assert figures_from_rollups(rollup(r, "hour")).counts() == r.figures.counts()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"status_history": [(at(2, 9), "broken")]}, "unknown status 'broken'"),
        ({"hours": "9-5"}, "is not HH:MM"),
        ({"tz": "Nowhere/Town"}, "unknown zone"),
        ({"threshold": "ninety"}, "not a number"),
    ],
)
def test_bad_inputs_name_what_is_wrong(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        count_unit(at(2), at(3), [], **kwargs)


def test_naive_period_and_bad_samples_are_refused():
    with pytest.raises(ValueError, match="period_from: expected an aware datetime"):
        count_unit(datetime(2026, 11, 2), at(3), [])
    with pytest.raises(ValueError, match="interval_s"):
        count_unit(at(2), at(3), [Sample(at(2, 9), -60)])
    with pytest.raises(ValueError, match="no time zone"):
        count_unit(at(2), at(3), [Sample(datetime(2026, 11, 2, 9, 0), 60)])
