"""Property tests: the counter agrees with a slot-by-slot reference, and counts add up however they are cut."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from counting import (
    STATUSES,
    Sample,
    ServiceHours,
    combine,
    count_unit,
    figures_from_rollups,
    rollup,
)

SH = ZoneInfo("Asia/Shanghai")
BASE = datetime(2026, 11, 6, 0, 0, tzinfo=SH)  # a Friday: the weekday dict below changes over the weekend
BASE_S = int(BASE.timestamp())
HOURS = st.sampled_from(
    [
        "08:00-18:00",
        "00:00-24:00",
        "07:30-07:45,08:00-09:00,17:59-18:01",
        {"mon-fri": "08:00-17:30", "sat": "08:00-12:00"},
        {"sun": "10:00-11:00"},
    ]
)

samples_st = st.lists(
    st.builds(
        Sample,
        ts=st.integers(BASE_S - 600, BASE_S + 3 * 86400),
        interval_s=st.sampled_from([0, 1, 30, 60, 60, 60, 90, 300, 3600]),
        intact=st.booleans(),
        network_ok=st.booleans(),
    ),
    max_size=40,
)
history_st = st.lists(
    st.tuples(st.integers(BASE_S - 3600, BASE_S + 3 * 86400), st.sampled_from(STATUSES)), max_size=4
)
# periods up to ~14 h anywhere in three days, not always on a minute
period_st = st.tuples(st.integers(0, 3 * 86400), st.integers(0, 14 * 3600)).map(
    lambda p: (BASE + timedelta(seconds=p[0]), BASE + timedelta(seconds=p[0] + p[1]))
)


def reference(start: datetime, end: datetime, samples, hours, history, initial="in_service"):
    """The rule of availability.md read literally, one slot at a time (slow and obvious)."""
    sh = ServiceHours.parse(hours, SH)
    a, b = -(-int(start.timestamp()) // 60), -(-int(end.timestamp()) // 60)
    changes = sorted(history, key=lambda c: c[0])
    svc = intact = ok = nodata = 0
    for k in range(a, b):
        slot = k * 60
        status = initial
        for when, s in changes:
            if when <= slot:
                status = s
        if status != "in_service" or not sh.contains(datetime.fromtimestamp(slot, SH)):
            continue
        svc += 1
        covering = [s for s in samples if s.ts <= slot < s.ts + s.interval_s]
        if not covering:
            nodata += 1
            continue
        intact += all(s.intact for s in covering)
        ok += all(s.network_ok for s in covering)
    return (svc, intact, ok, nodata)


@settings(max_examples=150, deadline=None)
@given(period_st, samples_st, HOURS, history_st, st.sampled_from(STATUSES))
def test_counter_matches_the_slot_by_slot_reference(period, samples, hours, history, initial):
    start, end = period
    r = count_unit(start, end, samples, hours=hours, status_history=history, initial_status=initial)
    assert r.figures.counts() == reference(start, end, samples, hours, history, initial)
    svc, intact, ok, nodata = r.figures.counts()
    assert intact <= svc - nodata and ok <= svc - nodata and nodata <= svc


@given(period_st, samples_st, HOURS, history_st, st.integers(0, 10**9))
def test_splitting_a_period_adds_up(period, samples, hours, history, cut_seed):
    start, end = period
    span = int((end - start).total_seconds())
    cut = start + timedelta(seconds=cut_seed % (span + 1))
    whole = count_unit(start, end, samples, hours=hours, status_history=history).figures
    left = count_unit(start, cut, samples, hours=hours, status_history=history).figures
    right = count_unit(cut, end, samples, hours=hours, status_history=history).figures
    assert combine(left, right).counts() == whole.counts()


@given(period_st, samples_st, HOURS, history_st)
def test_rollups_summed_equal_the_direct_count(period, samples, hours, history):
    start, end = period
    r = count_unit(start, end, samples, hours=hours, status_history=history)
    for bucket in ("hour", "day"):
        rows = rollup(r, bucket)
        assert figures_from_rollups(rows).counts() == r.figures.counts()
        # buckets tile the period: each starts where the previous ended
        assert all(x.end == y.start for x, y in zip(rows, rows[1:], strict=False))


@given(st.lists(st.tuples(samples_st, HOURS), min_size=1, max_size=5), period_st)
def test_group_counts_equal_the_sum_of_its_units(units, period):
    start, end = period
    figs = [count_unit(start, end, s, hours=h, unit=f"U{i}").figures for i, (s, h) in enumerate(units)]
    group = combine(*figs)
    for i in range(4):
        assert group.counts()[i] == sum(f.counts()[i] for f in figs)
    assert group.units == len(figs)
    assert group.flagged_units == sum(1 for f in figs if f.flagged)


EXTRA = st.builds(
    Sample,
    ts=st.one_of(st.integers(BASE_S, BASE_S + 3 * 86400), st.floats(BASE_S, BASE_S + 3 * 86400)),
    interval_s=st.one_of(st.integers(0, 10**15), st.floats(0, 1e300)),
)


@given(period_st, samples_st, HOURS, EXTRA)
def test_adding_a_sample_never_loses_service_slots_nor_adds_no_data(period, samples, hours, extra):
    start, end = period
    before = count_unit(start, end, samples, hours=hours).figures
    after = count_unit(start, end, [*samples, extra], hours=hours).figures
    assert after.service_slots >= before.service_slots
    assert after.no_data_slots <= before.no_data_slots


@given(period_st, samples_st, st.randoms())
def test_arrival_order_does_not_matter(period, samples, rnd):
    start, end = period
    shuffled = samples[:]
    rnd.shuffle(shuffled)
    assert count_unit(start, end, samples).codes == count_unit(start, end, shuffled).codes
