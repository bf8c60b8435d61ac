"""Pure helpers for the stored roll-ups: hour/day/month keys, period plans, packed hour counts, sample reading.

Roll-ups are kept per unit per local day (the fleet's zone): the day's four totals plus the counts of each of
its hours packed in a blob (4 bytes an hour: service, intact, network ok, no data; an hour holds at most 60
slots), and per unit per local month (sums of its days). A period made of whole hours is answered as whole
months + whole days + slices of at most two days' hour blobs: :func:`plan_period`.

Hours are those of :func:`counting.counter.rollup`: real hours counted from local midnight, so a
25-hour DST day has 25 and a 23-hour day 23.

No I/O here; everything is tested on literal values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from counting.counter import SLOT_S, Sample

HOUR_S = 3600
COUNTS = ("service_slots", "intact_slots", "network_ok_slots", "no_data_slots")


def midnight(day: date, tz: tzinfo) -> int:
    """Epoch second of a local day's midnight."""
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())


def local_day(ts: int, tz: tzinfo) -> date:
    return datetime.fromtimestamp(ts, tz).date()


def hours_in_day(day: date, tz: tzinfo) -> int:
    return (midnight(day + timedelta(days=1), tz) - midnight(day, tz)) // HOUR_S


def hour_key(ts: int, tz: tzinfo) -> tuple[int, int]:
    """(day ordinal, hour index from local midnight) of the hour holding ``ts``."""
    d = local_day(ts, tz)
    return d.toordinal(), (ts - midnight(d, tz)) // HOUR_S


def hour_start(ts: int, tz: tzinfo) -> int:
    d = local_day(ts, tz)
    m = midnight(d, tz)
    return m + (ts - m) // HOUR_S * HOUR_S


def month_id(day_ordinal: int) -> int:
    d = date.fromordinal(day_ordinal)
    return d.year * 12 + d.month - 1


def month_days(month: int) -> tuple[int, int]:
    """First and last day ordinal of a month id."""
    y, m = divmod(month, 12)
    first = date(y, m + 1, 1)
    nxt = date(y + (m + 1) // 12, (m + 1) % 12 + 1, 1)
    return first.toordinal(), nxt.toordinal() - 1


def hours_touched(ts: int, interval: int, tz: tzinfo, slot_s: int = SLOT_S) -> list[int]:
    """Start (epoch s) of every hour holding a slot that a sample at ``ts`` covering ``interval`` s touches."""
    first = -((-ts) // slot_s) * slot_s  # first slot start >= ts
    end = ts + max(interval, 0)
    out: list[int] = []
    t = first
    while t < end:
        h = hour_start(t, tz)
        out.append(h)
        t = max(h + HOUR_S, t + slot_s)
    return out


def is_whole_hour(ts: int, tz: tzinfo) -> bool:
    return hour_start(ts, tz) == ts


@dataclass
class PeriodPlan:
    """A whole-hour period as stored pieces: whole months, whole days, and hour slices of days."""

    months: list[int] = field(default_factory=list)
    days: list[int] = field(default_factory=list)
    parts: list[tuple[int, int, int]] = field(default_factory=list)  # (day ordinal, first hour, end hour)


def plan_period(start: int, end: int, tz: tzinfo) -> PeriodPlan:
    """Cut ``[start, end)`` (both on whole local hours) into the roll-up pieces that cover it exactly."""
    if not (is_whole_hour(start, tz) and is_whole_hour(end, tz)):
        raise ValueError("period must start and end on whole hours of the fleet's time zone")
    plan = PeriodPlan()
    if end <= start:
        return plan
    d = local_day(start, tz)
    last = local_day(end, tz)
    while d <= last:
        m0 = midnight(d, tz)
        m1 = midnight(d + timedelta(days=1), tz)
        a, b = max(start, m0), min(end, m1)
        if a < b:
            if a == m0 and b == m1:
                # whole month when this is the 1st and the whole month fits
                if d.day == 1:
                    nxt = date(d.year + d.month // 12, d.month % 12 + 1, 1)
                    if midnight(nxt, tz) <= end:
                        plan.months.append(d.year * 12 + d.month - 1)
                        d = nxt
                        continue
                plan.days.append(d.toordinal())
            else:
                plan.parts.append((d.toordinal(), (a - m0) // HOUR_S, (b - m0) // HOUR_S))
        d += timedelta(days=1)
    return plan


def pack_hours(counts: Sequence[Sequence[int]]) -> bytes:
    """Hour counts ``[(service, intact, network_ok, no_data), ...]`` as bytes (each count 0..255)."""
    return bytes(v for c in counts for v in c)


def unpack_hours(blob: bytes) -> list[tuple[int, int, int, int]]:
    return [(blob[i], blob[i + 1], blob[i + 2], blob[i + 3]) for i in range(0, len(blob) - 3, 4)]


def sum_hours(blob: bytes, a: int, b: int) -> tuple[int, int, int, int]:
    part = blob[4 * a: 4 * b]
    return (sum(part[0::4]), sum(part[1::4]), sum(part[2::4]), sum(part[3::4]))


def set_hour(blob: bytes, nhours: int, idx: int, counts: Sequence[int]) -> bytes:
    """The day blob with hour ``idx`` replaced (the blob is sized to ``nhours`` hours)."""
    buf = bytearray(blob[: 4 * nhours].ljust(4 * nhours, b"\0"))
    buf[4 * idx: 4 * idx + 4] = bytes(counts)
    return bytes(buf)


# --- reading samples ----------------------------------------------------------------------------------------

def _clean(text: object) -> str:
    return str(text).replace(",", ";").replace("=", ":")[:80]


def judge(checks: dict[str, Any], connected: bool, rtt_ms: int | None, critical: Iterable[str],
          rtt_ok_ms: int) -> tuple[bool, bool, str | None]:
    """(intact, network ok, reason) of one stored sample.

    Intact iff every critical check is present with state 0: a critical check missing from the sample or in
    state unknown (2) is *not* passed. Network ok iff connected and the round trip, where measured, is within
    ``rtt_ok_ms``. The reason lists what failed, comma-separated: ``printer=paper_out``, ``modem=missing``,
    ``idcard=unknown``, ``link_down``, ``rtt=512ms``.
    """
    reasons: list[str] = []
    for name in critical:
        c = checks.get(name)
        if c is None:
            reasons.append(f"{_clean(name)}=missing")
            continue
        state = c[0] if isinstance(c, list | tuple) and c else c
        if state != 0:
            why = c[1] if isinstance(c, list | tuple) and len(c) > 1 and c[1] else ("unknown" if state == 2 else "fault")
            reasons.append(f"{_clean(name)}={_clean(why)}")
    intact = not reasons
    net_ok = bool(connected) and (rtt_ms is None or rtt_ms <= rtt_ok_ms)
    if not connected:
        reasons.append("link_down")
    elif not net_ok:
        reasons.append(f"rtt={int(rtt_ms or 0)}ms")
    return intact, net_ok, ",".join(reasons) or None


def counter_samples(rows: Iterable[Any], critical: Sequence[str], rtt_ok_ms: int) -> list[Sample]:
    """Stored sample rows (``ts, interval, checks, connected, rtt_ms``) as the pure counter's samples."""
    out = []
    for r in rows:
        intact, ok, reason = judge(r.checks, r.connected, r.rtt_ms, critical, rtt_ok_ms)
        out.append(Sample(int(r.ts), int(r.interval), intact, ok, reason))
    return out


NETWORK_REASONS = ("link_down", "rtt")


def split_reasons(reason: str | None) -> tuple[list[str], list[str]]:
    """A slot's reason string as (device reasons, network reasons)."""
    dev: list[str] = []
    net: list[str] = []
    for r in (reason or "").split(","):
        if not r:
            continue
        (net if r == "link_down" or r.startswith("rtt=") else dev).append(r)
    return sorted(set(dev)), sorted(set(net))


