"""Pure roll-up helpers: period plans cover a period exactly, hour keys, and how one sample is judged."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.availability.rollups import (
    hours_in_day,
    hours_touched,
    judge,
    month_days,
    plan_period,
    split_reasons,
    sum_hours,
)

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")  # DST days of 23 and 25 hours
CRIT = ["printer", "idcard", "modem", "storage"]


def ts(tz: ZoneInfo, *a: int) -> int:
    return int(datetime(*a, tzinfo=tz).timestamp())


def covered_hours(plan, tz: ZoneInfo) -> int:
    n = 0
    for m in plan.months:
        a, b = month_days(m)
        n += sum(hours_in_day(date.fromordinal(d), tz) for d in range(a, b + 1))
    n += sum(hours_in_day(date.fromordinal(d), tz) for d in plan.days)
    n += sum(b - a for _d, a, b in plan.parts)
    return n


def test_a_quarter_is_three_month_rows() -> None:
    p = plan_period(ts(SH, 2025, 1, 1), ts(SH, 2025, 4, 1), SH)
    assert p.months == [2025 * 12 + 0, 2025 * 12 + 1, 2025 * 12 + 2] and p.days == [] and p.parts == []


def test_a_period_spanning_months_with_ragged_ends() -> None:
    p = plan_period(ts(SH, 2025, 1, 30, 9), ts(SH, 2025, 3, 2, 17), SH)
    assert p.months == [2025 * 12 + 1]  # all of February
    assert p.days == [date(2025, 1, 31).toordinal(), date(2025, 3, 1).toordinal()]
    assert p.parts == [(date(2025, 1, 30).toordinal(), 9, 24), (date(2025, 3, 2).toordinal(), 0, 17)]


def test_periods_not_on_whole_hours_are_refused() -> None:
    with pytest.raises(ValueError, match="whole hours"):
        plan_period(ts(SH, 2025, 1, 1, 0, 30), ts(SH, 2025, 1, 2), SH)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 24 * 500), st.integers(0, 24 * 120), st.sampled_from([SH, NY]))
def test_plan_covers_every_hour_exactly_once(start_h: int, length_h: int, tz: ZoneInfo) -> None:
    base = ts(tz, 2024, 1, 1)
    start = base + start_h * 3600
    end = start + length_h * 3600
    p = plan_period(start, end, tz)
    assert covered_hours(p, tz) == length_h
    # pieces do not overlap
    days = [d for m in p.months for d in range(month_days(m)[0], month_days(m)[1] + 1)] + p.days
    assert len(days) == len(set(days)) and not set(days) & {d for d, _a, _b in p.parts}


def test_dst_days_have_23_and_25_hours() -> None:
    assert hours_in_day(date(2025, 3, 9), NY) == 23 and hours_in_day(date(2025, 11, 2), NY) == 25
    assert hours_in_day(date(2025, 3, 9), SH) == 24


def test_hours_touched_by_a_sample() -> None:
    assert hours_touched(ts(SH, 2025, 3, 3, 9, 59), 60, SH) == [ts(SH, 2025, 3, 3, 9)]
    assert hours_touched(ts(SH, 2025, 3, 3, 9, 59), 120, SH) == [ts(SH, 2025, 3, 3, 9), ts(SH, 2025, 3, 3, 10)]
    # a sample at 09:59:30 covers only the slot starting at 10:00
    assert hours_touched(ts(SH, 2025, 3, 3, 9, 59) + 30, 60, SH) == [ts(SH, 2025, 3, 3, 10)]
    assert hours_touched(ts(SH, 2025, 3, 3, 9), 0, SH) == []


def test_sum_hours_slices_the_packed_day() -> None:
    blob = bytes([60, 60, 60, 0, 60, 50, 40, 5, 0, 0, 0, 0])
    assert sum_hours(blob, 0, 2) == (120, 110, 100, 5) and sum_hours(blob, 1, 3) == (60, 50, 40, 5)


def test_judge_missing_or_unknown_critical_check_is_not_intact() -> None:
    ok = {c: [0, ""] for c in CRIT}
    assert judge(ok, True, 80, CRIT, 400) == (True, True, None)
    assert judge({**ok, "printer": [1, "paper_out"]}, True, 80, CRIT, 400) == (False, True, "printer=paper_out")
    missing = {k: v for k, v in ok.items() if k != "idcard"}
    assert judge(missing, True, None, CRIT, 400) == (False, True, "idcard=missing")
    assert judge({**ok, "modem": [2, ""]}, True, 80, CRIT, 400) == (False, True, "modem=unknown")
    # a non-critical check never decides
    assert judge({**ok, "camera": [1, "x"]}, True, 80, CRIT, 400)[0] is True
    # network: connected and the round trip, where measured, within the limit (exactly 400 ms is ok)
    assert judge(ok, True, 400, CRIT, 400)[1] is True
    assert judge(ok, True, 401, CRIT, 400) == (True, False, "rtt=401ms")
    assert judge(ok, False, None, CRIT, 400) == (True, False, "link_down")
    assert split_reasons("printer=paper_out,link_down,rtt=500ms") == (["printer=paper_out"], ["link_down", "rtt=500ms"])


def test_reasons_with_commas_cannot_break_the_slot_reason_list() -> None:
    ok = {c: [0, ""] for c in CRIT}
    _i, _n, reason = judge({**ok, "printer": [1, "cover_open,paper_low"]}, True, 80, CRIT, 400)
    assert reason is not None and reason.count(",") == 0


@given(st.integers(0, 600), st.data(), st.sampled_from(["0.95", "0.85", "1", "0.999", "2/3"]))
@settings(max_examples=300, deadline=None)
def test_integer_flag_is_the_counters_flag(service: int, data: st.DataObject, thr: str) -> None:
    """The figures endpoint flags units with integer comparisons; the counter's Fraction rule decides."""
    from counting.counter import as_fraction, figures_from_counts
    from server.availability.service import unit_flagged

    intact = data.draw(st.integers(0, service))
    netok = data.draw(st.integers(0, service))
    t = as_fraction(thr)
    assert unit_flagged(service, intact, netok, t.numerator, t.denominator) == \
        figures_from_counts(service, intact, netok, 0, threshold=t).flagged
    if service:  # exactly at the threshold is not flagged
        at = service * t.numerator
        if at % t.denominator == 0:
            assert not unit_flagged(service, at // t.denominator, service, t.numerator, t.denominator)
