"""Service hours: syntax from scenario-format.md / availability.md, boundaries counted by hand."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from counting import ServiceHours

SH = ZoneInfo("Asia/Shanghai")


def count(hours: ServiceHours, start: datetime, end: datetime) -> int:
    return sum(len(r) for r in hours.slots_in(start, end))


def test_default_is_0800_to_1800_every_day():
    h = ServiceHours.parse(None)
    day = datetime(2026, 11, 2, tzinfo=SH)
    assert count(h, day, day.replace(day=3)) == 600
    assert (
        count(h, datetime(2026, 11, 7, tzinfo=SH), datetime(2026, 11, 8, tzinfo=SH)) == 600
    )  # a Saturday too


def test_start_included_end_excluded():
    h = ServiceHours.parse("08:00-18:00", "Asia/Shanghai")
    assert h.contains(datetime(2026, 11, 2, 8, 0, tzinfo=SH))
    assert not h.contains(datetime(2026, 11, 2, 7, 59, 59, tzinfo=SH))
    assert h.contains(datetime(2026, 11, 2, 17, 59, 59, tzinfo=SH))
    assert not h.contains(datetime(2026, 11, 2, 18, 0, tzinfo=SH))
    # the first and last counted slots
    [r] = h.slots_in(datetime(2026, 11, 2, tzinfo=SH), datetime(2026, 11, 3, tzinfo=SH))
    assert datetime.fromtimestamp(r[0] * 60, SH) == datetime(2026, 11, 2, 8, 0, tzinfo=SH)
    assert datetime.fromtimestamp(r[-1] * 60, SH) == datetime(2026, 11, 2, 17, 59, tzinfo=SH)


def test_weekday_dict_from_the_example_scenario():
    # 2026-11-02 is a Monday; the week has 5 x 570 + 240 + 0 (Sunday not named) minutes
    h = ServiceHours.parse({"mon-fri": "08:00-17:30", "sat": "08:00-12:00"})
    week = (datetime(2026, 11, 2, tzinfo=SH), datetime(2026, 11, 9, tzinfo=SH))
    assert count(h, *week) == 5 * 570 + 240
    sunday = (datetime(2026, 11, 8, tzinfo=SH), datetime(2026, 11, 9, tzinfo=SH))
    assert count(h, *sunday) == 0
    assert not h.contains(datetime(2026, 11, 7, 12, 0, tzinfo=SH))  # Saturday noon: closed
    assert h.contains(datetime(2026, 11, 6, 17, 29, tzinfo=SH))


def test_lunch_break_and_end_of_day():
    h = ServiceHours.parse("08:00-12:00,14:30-24:00")
    assert count(h, datetime(2026, 11, 2, tzinfo=SH), datetime(2026, 11, 3, tzinfo=SH)) == 240 + 570
    assert h.contains(datetime(2026, 11, 2, 23, 59, tzinfo=SH))
    assert not h.contains(datetime(2026, 11, 2, 13, 0, tzinfo=SH))


def test_period_not_on_a_minute_counts_slots_starting_inside_it():
    h = ServiceHours.parse("08:00-18:00")
    # [08:00:30, 08:03:00) holds the slots starting at 08:01 and 08:02
    assert count(h, datetime(2026, 11, 2, 8, 0, 30, tzinfo=SH), datetime(2026, 11, 2, 8, 3, tzinfo=SH)) == 2


def test_dst_zone_wall_clock_hours_and_minute_alignment():
    berlin = ZoneInfo("Europe/Berlin")  # clocks go forward on 2026-03-29 at 02:00
    whole = ServiceHours.parse("00:00-24:00", berlin)
    day = (datetime(2026, 3, 29, tzinfo=berlin), datetime(2026, 3, 30, tzinfo=berlin))
    assert count(whole, *day) == 23 * 60
    office = ServiceHours.parse("08:00-18:00", berlin)
    assert count(office, *day) == 600
    [r] = office.slots_in(*day)
    assert datetime.fromtimestamp(r[0] * 60, berlin) == datetime(2026, 3, 29, 8, 0, tzinfo=berlin)
    # October: 25 hours on the wall clock's day
    autumn = (datetime(2026, 10, 25, tzinfo=berlin), datetime(2026, 10, 26, tzinfo=berlin))
    assert count(whole, *autumn) == 25 * 60


def test_half_hour_zone_slots_on_local_minutes():
    kolkata = ZoneInfo("Asia/Kolkata")  # +05:30
    h = ServiceHours.parse("09:00-09:03", kolkata)
    [r] = h.slots_in(datetime(2026, 1, 5, tzinfo=kolkata), datetime(2026, 1, 6, tzinfo=kolkata))
    starts = [datetime.fromtimestamp(k * 60, kolkata) for k in r]
    assert [(s.hour, s.minute, s.second) for s in starts] == [(9, 0, 0), (9, 1, 0), (9, 2, 0)]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("8:00-18:00", "'8:00' is not HH:MM"),
        ("08:00-25:00", "not a time of day"),
        ("18:00-08:00", "end is not after start"),
        ("08:00", "is not HH:MM-HH:MM"),
        ("", "empty hours"),
        ({"mon-fri": "08:00-17:00", "fri": "08:00-12:00"}, "fri is named twice"),
        ({"fri-mon": "08:00-17:00"}, "runs backwards"),
        ({"monday": "08:00-17:00"}, "unknown day 'monday'"),
        ({"sat": "8-12"}, "sat:"),
        ({}, "no days given"),
        ("08:00-12:00,11:00-13:00", "overlaps"),
        (42, "got int"),
    ],
)
def test_parse_errors_name_what_is_wrong(value, needle):
    with pytest.raises(ValueError) as info:
        ServiceHours.parse(value)
    assert needle in str(info.value)


def test_unknown_zone_is_named():
    with pytest.raises(ValueError, match="unknown zone 'Mars/Olympus'"):
        ServiceHours.parse("08:00-18:00", "Mars/Olympus")


@given(
    st.one_of(
        st.text(max_size=30),
        st.dictionaries(st.text(max_size=10), st.one_of(st.text(max_size=20), st.integers()), max_size=4),
        st.integers(),
        st.none(),
    )
)
def test_garbage_raises_only_value_error(value):
    try:
        ServiceHours.parse(value)
    except ValueError:
        pass
