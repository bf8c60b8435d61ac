"""The availability counter: the pure function the contract is paid on (docs: availability.md).

Rule, as implemented here:

- Time is cut into slots of ``slot_s`` seconds (60), slot ``k`` starting at epoch second ``k * slot_s``. Every
  zone in use has whole-minute UTC offsets, so these slots are aligned to the minute in the fleet's zone too.
  The period ``[from, to)`` holds the slots whose *start* lies in it.
- A slot is **counted** when its start is inside the unit's service hours (:mod:`.hours`) and the unit's
  registered status at the slot's start is ``in_service``. Status history is a list of ``(from, status)``
  changes; the unit starts ``in_service`` unless ``initial_status`` says otherwise.
- A sample at ``t`` with interval ``i`` covers the slots starting in ``[t, t + i)``.
- **Overlapping samples** (one slot covered by several samples, e.g. a sample replayed after an outage next to a
  live one, or an agent that sampled twice): the slot is *intact* only if every covering sample says intact,
  and *network ok* only if every covering sample says ok. So counts never depend on the order in which samples
  arrive (late data gives the same figures), and a failure seen by any sample is never hidden by another.
- A counted slot covered by no sample is **no data**: neither intact nor network ok.
- ``device_rate = intact_slots / service_slots``, ``network_rate = network_ok_slots / service_slots``, exact
  :class:`fractions.Fraction` (``None`` when there are no service slots). A unit is **flagged** when either
  rate is strictly below the threshold (default 95 %); a unit with no service slots is not flagged.
- Groups (:func:`combine`) sum the counts and take the rates of the sums (slot-weighted), with the number of
  units and of flagged units.
- :func:`contract_tier`: both fleet rates ≥ 95 % → tier 1 (60 %), both ≥ 85 % → tier 2 (50 %), else tier 3 (40 %).

Thresholds given as floats are read through their decimal text (``0.95`` means exactly 19/20), so a unit at
exactly 95 % is not flagged and one at 94.999 % is.

Speed: the per-slot state is one ``bytearray`` over the period (bit flags), service hours are set per day with
slice assignment, and counts are made with ``bytes.translate`` + ``count``; a year of minute samples for one
unit counts in a fraction of a second.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from fractions import Fraction
from typing import Any, NamedTuple

from .hours import ServiceHours, epoch_seconds_ceil, zone

SLOT_S = 60
STATUSES = ("in_service", "spare", "in_repair", "retired")
DEFAULT_THRESHOLD = Fraction(95, 100)
DEFAULT_TIERS: tuple[tuple[float, int, float], ...] = ((0.95, 1, 0.60), (0.85, 2, 0.50))
DEFAULT_LAST_TIER: tuple[int, float] = (3, 0.40)

# per-slot bit flags
_COVERED = 1  # some sample covers the slot
_DEV_BAD = 2  # some covering sample says not intact
_NET_BAD = 4  # some covering sample says network not ok
_IN_HOURS = 8  # slot start inside service hours
_IN_SERVICE = 16  # unit registered in_service at the slot start
_COUNTED = _IN_HOURS | _IN_SERVICE
# sample flags by 2*intact + network_ok
_FLAGS = (_COVERED | _DEV_BAD | _NET_BAD, _COVERED | _DEV_BAD, _COVERED | _NET_BAD, _COVERED)

_US = 1_000_000
_MAX_S = 10**12  # ~31,700 years of seconds: bounds timestamps and intervals


def _table(pred: Any) -> bytes:
    return bytes(1 if pred(v) else 0 for v in range(256))


_T_SERVICE = _table(lambda v: v & _COUNTED == _COUNTED)
_T_INTACT = _table(lambda v: v & _COUNTED == _COUNTED and v & _COVERED and not v & _DEV_BAD)
_T_NETOK = _table(lambda v: v & _COUNTED == _COUNTED and v & _COVERED and not v & _NET_BAD)
_T_NODATA = _table(lambda v: v & _COUNTED == _COUNTED and not v & _COVERED)
_T_CONTEXT = bytes(v & (_IN_HOURS | _IN_SERVICE) for v in range(256))  # the bits hours and status decide


def as_fraction(value: float | int | str | Fraction) -> Fraction:
    """Exact value of a threshold: floats through their shortest decimal text (0.95 -> 19/20)."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, float):
        return Fraction(repr(value))
    if isinstance(value, int | str):
        try:
            return Fraction(value)
        except (ValueError, ZeroDivisionError) as err:
            raise ValueError(f"not a number: {value!r}") from err
    raise ValueError(f"expected a number, got {type(value).__name__}")


class Sample(NamedTuple):
    """One health sample as the counter sees it.

    ``ts`` is an aware datetime or epoch seconds (int or float); the sample covers slots starting in
    ``[ts, ts + interval_s)``. ``reason`` is what the agent gave for a failed check (e.g. ``printer_paper_out``),
    carried into the per-slot drill-down.
    """

    ts: datetime | int | float
    interval_s: int | float = SLOT_S
    intact: bool = True
    network_ok: bool = True
    reason: str | None = None


class Slot(NamedTuple):
    """Drill-down of one slot."""

    start: datetime  # in the fleet's time zone
    counted: bool
    device: str  # "intact" | "not_intact" | "no_data"
    network: str  # "ok" | "not_ok" | "no_data"
    reason: str | None  # reasons carried by the covering samples, sorted, comma-joined
    excluded: str | None  # why not counted: "outside_service_hours" or the unit's status ("in_repair", ...)


@dataclass(frozen=True)
class Figures:
    """Counts for a unit or a group, with exact rates."""

    service_slots: int = 0
    intact_slots: int = 0
    network_ok_slots: int = 0
    no_data_slots: int = 0
    units: int = 1
    flagged_units: int = 0
    threshold: Fraction = DEFAULT_THRESHOLD
    unit: str | None = None

    @property
    def device_rate(self) -> Fraction | None:
        return Fraction(self.intact_slots, self.service_slots) if self.service_slots else None

    @property
    def network_rate(self) -> Fraction | None:
        return Fraction(self.network_ok_slots, self.service_slots) if self.service_slots else None

    @property
    def flagged(self) -> bool:
        """Either rate strictly below the threshold (a group is judged on its own slot-weighted rates)."""
        d, n = self.device_rate, self.network_rate
        return (d is not None and d < self.threshold) or (n is not None and n < self.threshold)

    def counts(self) -> tuple[int, int, int, int]:
        return (self.service_slots, self.intact_slots, self.network_ok_slots, self.no_data_slots)

    def to_dict(self, ndigits: int = 6) -> dict[str, Any]:
        """JSON-ready: rates as floats rounded to ``ndigits`` (comparisons stay on the exact values)."""

        def rnd(r: Fraction | None) -> float | None:
            return None if r is None else round(float(r), ndigits)

        return {
            "service_slots": self.service_slots,
            "intact_slots": self.intact_slots,
            "network_ok_slots": self.network_ok_slots,
            "no_data_slots": self.no_data_slots,
            "device_rate": rnd(self.device_rate),
            "network_rate": rnd(self.network_rate),
            "flagged": self.flagged,
            "units": self.units,
            "flagged_units": self.flagged_units,
        }


class RollupRow(NamedTuple):
    """Counts of one unit over one hour or day bucket (clipped to the counted period)."""

    unit: str | None
    bucket: str  # "hour" | "day"
    start: datetime  # bucket start in the fleet's zone (or the period start, if later)
    end: datetime
    service_slots: int
    intact_slots: int
    network_ok_slots: int
    no_data_slots: int


@dataclass(frozen=True)
class UnitCount:
    """Result of :func:`count_unit`: the figures plus the per-slot state for drill-down and roll-ups."""

    figures: Figures
    first_slot: int  # index of the period's first slot (slot k starts at k * slot_s epoch seconds)
    codes: bytes  # per-slot bit flags, one byte per slot of the period
    slot_s: int
    tz: tzinfo
    reasons: Mapping[int, str] = field(default_factory=dict)  # slot offset -> reasons
    status_changes: tuple[tuple[int, str], ...] = ()  # (epoch second, status), sorted
    initial_status: str = "in_service"

    @property
    def unit(self) -> str | None:
        return self.figures.unit

    def __len__(self) -> int:
        return len(self.codes)

    def slot_start(self, offset: int) -> datetime:
        return datetime.fromtimestamp((self.first_slot + offset) * self.slot_s, self.tz)

    def _status_at(self, second: int) -> str:
        i = bisect.bisect_right([t for t, _ in self.status_changes], second)
        return self.status_changes[i - 1][1] if i else self.initial_status

    def slot(self, offset: int) -> Slot:
        if not 0 <= offset < len(self.codes):
            raise IndexError(offset)
        v = self.codes[offset]
        covered = bool(v & _COVERED)
        excluded = None
        if not v & _IN_HOURS:
            excluded = "outside_service_hours"
        elif not v & _IN_SERVICE:
            excluded = self._status_at((self.first_slot + offset) * self.slot_s)
        return Slot(
            start=self.slot_start(offset),
            counted=v & _COUNTED == _COUNTED,
            device=("not_intact" if v & _DEV_BAD else "intact") if covered else "no_data",
            network=("not_ok" if v & _NET_BAD else "ok") if covered else "no_data",
            reason=self.reasons.get(offset),
            excluded=excluded,
        )

    def slot_at(self, when: datetime) -> Slot:
        """The slot containing the instant ``when``."""
        k = int(when.timestamp() // self.slot_s)
        return self.slot(k - self.first_slot)

    def slots(self, counted_only: bool = False) -> Iterator[Slot]:
        """Every slot of the period, in order (or only the counted ones)."""
        for i, v in enumerate(self.codes):
            if counted_only and v & _COUNTED != _COUNTED:
                continue
            yield self.slot(i)

    def counts_between(self, a: int, b: int) -> tuple[int, int, int, int]:
        """Counts over slot offsets ``[a, b)``."""
        part = self.codes[a:b]
        return (
            part.translate(_T_SERVICE).count(1),
            part.translate(_T_INTACT).count(1),
            part.translate(_T_NETOK).count(1),
            part.translate(_T_NODATA).count(1),
        )

    def rollup(self, bucket: str = "hour") -> list[RollupRow]:
        return rollup(self, bucket)


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def _epoch_us(ts: datetime | int | float) -> int:
    if isinstance(ts, datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise ValueError(f"sample ts {ts!r} has no time zone")
        if ts.microsecond == 0:
            return int(round(ts.timestamp())) * _US
        return int(round(ts.timestamp() - ts.microsecond / 1e6)) * _US + ts.microsecond
    if isinstance(ts, bool):
        raise ValueError(f"sample ts {ts!r} is not a time")
    if isinstance(ts, int):
        if abs(ts) > _MAX_S:
            raise ValueError(f"sample ts {ts!r} is not a time")
        return ts * _US
    if isinstance(ts, float):
        if not math.isfinite(ts) or abs(ts) > _MAX_S:
            raise ValueError(f"sample ts {ts!r} is not a time")
        return int(ts) * _US if ts.is_integer() else round(ts * _US)
    raise ValueError(f"sample ts {ts!r} is not a time")


def _interval_us(iv: object, ts: object) -> int:
    if isinstance(iv, bool) or not isinstance(iv, int | float) or not math.isfinite(iv) or iv < 0:
        raise ValueError(f"sample at {ts!r}: interval_s {iv!r} is not a non-negative number of seconds")
    # a sample cannot cover more than _MAX_S: beyond that every period is covered anyway (and floats overflow)
    return min(iv, _MAX_S) * _US if isinstance(iv, int) else round(min(iv, _MAX_S) * _US)


def _status_intervals(
    history: Iterable[tuple[datetime | int | float, str]] | None, initial: str
) -> tuple[tuple[int, str], ...]:
    if initial not in STATUSES:
        raise ValueError(f"unknown status {initial!r} (expected one of {', '.join(STATUSES)})")
    changes: list[tuple[int, str]] = []
    for item in history or ():
        when, status = item
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r} (expected one of {', '.join(STATUSES)})")
        changes.append((_ceil_div(_epoch_us(when), _US), status))
    changes.sort(key=lambda c: c[0])  # stable: two changes at one instant keep their given order
    return tuple(changes)


def count_unit(
    period_from: datetime,
    period_to: datetime,
    samples: Iterable[Sample | Any],
    *,
    hours: ServiceHours | str | Mapping[str, str] | None = None,
    status_history: Sequence[tuple[datetime | int | float, str]] | None = None,
    initial_status: str = "in_service",
    tz: str | tzinfo | None = None,
    slot_s: int = SLOT_S,
    threshold: float | str | Fraction = DEFAULT_THRESHOLD,
    unit: str | None = None,
) -> UnitCount:
    """Count one unit over ``[period_from, period_to)``.

    ``samples`` are :class:`Sample` or any objects with ``ts``, ``interval_s``, ``intact``, ``network_ok``
    (and optionally ``reason``); their order does not matter. ``hours`` default to 08:00-18:00 every day in ``tz``
    (the fleet's zone, default Asia/Shanghai); a string or mapping is parsed in ``tz``.
    """
    zi = zone(tz)
    if not isinstance(slot_s, int) or isinstance(slot_s, bool) or slot_s <= 0:
        raise ValueError(f"slot_s: expected a positive whole number of seconds, got {slot_s!r}")
    sh = hours if isinstance(hours, ServiceHours) else ServiceHours.parse(hours, zi)
    thr = as_fraction(threshold)
    for name, value in (("period_from", period_from), ("period_to", period_to)):
        if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name}: expected an aware datetime, got {value!r}")
    start_s, end_s = epoch_seconds_ceil(period_from), epoch_seconds_ceil(period_to)
    first = _ceil_div(start_s, slot_s)
    n = max(0, _ceil_div(end_s, slot_s) - first)
    slot_us = slot_s * _US

    # samples -> covered / bad flags
    st = bytearray(n)
    reasons: dict[int, set[str]] = {}
    first_s = first * slot_s
    off = slot_s - 1 - first_s
    for s in samples:
        if type(s) is Sample:
            ts, iv, intact, ok, reason = s
        else:
            ts, iv, intact, ok = s.ts, s.interval_s, s.intact, s.network_ok
            reason = getattr(s, "reason", None)
        if type(ts) is not int and type(ts) is datetime and ts.microsecond == 0 and ts.tzinfo is not None:
            ts = int(ts.timestamp())
        if type(ts) is int and type(iv) is int and iv >= 0:
            # fast path (whole epoch seconds, as stored): a = ceil((ts - first_s) / slot_s)
            a = (ts + off) // slot_s
            b = (ts + iv + off) // slot_s
            if b == a + 1 and 0 <= a < n and not reason:
                st[a] |= _FLAGS[(2 if intact else 0) + (1 if ok else 0)]
                continue
        else:
            t = _epoch_us(ts) - first_s * _US
            iv_us = _interval_us(iv, ts)
            a = _ceil_div(t, slot_us)
            b = _ceil_div(t + iv_us, slot_us)
        if a < 0:
            a = 0
        if b > n:
            b = n
        if a >= b:
            continue
        f = _FLAGS[(2 if intact else 0) + (1 if ok else 0)]
        for k in range(a, b):
            st[k] |= f
        if reason:
            for k in range(a, b):
                reasons.setdefault(k, set()).add(str(reason))

    changes = _status_intervals(status_history, initial_status)
    codes_int = int.from_bytes(st, "big") | _context_int(sh, start_s, end_s, first, n, slot_s, changes, initial_status)
    codes = codes_int.to_bytes(n, "big") if n else b""
    return UnitCount(
        figures=_figures_of(codes, thr, unit),
        first_slot=first,
        codes=codes,
        slot_s=slot_s,
        tz=zi,
        reasons={k: ",".join(sorted(v)) for k, v in reasons.items()},
        status_changes=changes,
        initial_status=initial_status,
    )


def _context_int(sh: ServiceHours, start_s: int, end_s: int, first: int, n: int, slot_s: int,
                 changes: tuple[tuple[int, str], ...], initial_status: str) -> int:
    """The service-hours and in-service bits of ``n`` slots from slot ``first``, as one big-endian integer."""
    hours_mask = bytearray(n)
    for wa, wb in sh.window_seconds(start_s, end_s):
        a = _ceil_div(wa, slot_s) - first
        b = _ceil_div(wb, slot_s) - first
        a, b = max(a, 0), min(b, n)
        if a < b:
            hours_mask[a:b] = b"\x01" * (b - a)
    status_mask = bytearray(b"\x01" * n) if initial_status == "in_service" else bytearray(n)
    for i, (when, status) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else None
        a = max(_ceil_div(when, slot_s) - first, 0)
        b = n if until is None else min(_ceil_div(until, slot_s) - first, n)
        if a < b:
            status_mask[a:b] = (b"\x01" if status == "in_service" else b"\x00") * (b - a)
    return (int.from_bytes(hours_mask, "big") << 3) | (int.from_bytes(status_mask, "big") << 4)


def unit_count_from_codes(
    codes: bytes,
    first_slot: int,
    *,
    reasons: Mapping[int, str] | None = None,
    hours: ServiceHours | str | Mapping[str, str] | None = None,
    status_history: Sequence[tuple[datetime | int | float, str]] | None = None,
    initial_status: str = "in_service",
    tz: str | tzinfo | None = None,
    slot_s: int = SLOT_S,
    threshold: float | str | Fraction = DEFAULT_THRESHOLD,
    unit: str | None = None,
) -> UnitCount | None:
    """A :class:`UnitCount` rebuilt from per-slot codes that :func:`count_unit` produced earlier (stored with the
    roll-ups): the same figures, slots and reasons, without the samples.

    Returns None when the codes' service-hours or in-service bits differ from what ``hours`` and
    ``status_history`` say now (hours or status changed since the codes were stored): count again then."""
    zi = zone(tz)
    sh = hours if isinstance(hours, ServiceHours) else ServiceHours.parse(hours, zi)
    n = len(codes)
    changes = _status_intervals(status_history, initial_status)
    context = _context_int(sh, first_slot * slot_s, (first_slot + n) * slot_s, first_slot, n, slot_s, changes,
                           initial_status)
    if n and context.to_bytes(n, "big") != codes.translate(_T_CONTEXT):
        return None
    return UnitCount(
        figures=_figures_of(codes, as_fraction(threshold), unit),
        first_slot=first_slot,
        codes=bytes(codes),
        slot_s=slot_s,
        tz=zi,
        reasons=dict(reasons or {}),
        status_changes=changes,
        initial_status=initial_status,
    )


def counts_of_codes(codes: bytes) -> tuple[int, int, int, int]:
    """(service, intact, network ok, no data) slots of per-slot codes, as :meth:`Figures.counts` orders them."""
    return (codes.translate(_T_SERVICE).count(1), codes.translate(_T_INTACT).count(1),
            codes.translate(_T_NETOK).count(1), codes.translate(_T_NODATA).count(1))


def _figures_of(codes: bytes, thr: Fraction, unit: str | None) -> Figures:
    """A unit's figures from its per-slot codes."""
    service, intact, netok, nodata = counts_of_codes(codes)
    return _with_flag(Figures(service_slots=service, intact_slots=intact, network_ok_slots=netok,
                              no_data_slots=nodata, threshold=thr, unit=unit))


def _with_flag(f: Figures) -> Figures:
    return Figures(
        service_slots=f.service_slots,
        intact_slots=f.intact_slots,
        network_ok_slots=f.network_ok_slots,
        no_data_slots=f.no_data_slots,
        units=1,
        flagged_units=1 if f.flagged else 0,
        threshold=f.threshold,
        unit=f.unit,
    )


def figures_from_counts(
    service_slots: int,
    intact_slots: int,
    network_ok_slots: int,
    no_data_slots: int,
    *,
    unit: str | None = None,
    threshold: float | str | Fraction = DEFAULT_THRESHOLD,
) -> Figures:
    """Figures of one unit from stored counts (e.g. roll-up rows summed over a period)."""
    return _with_flag(
        Figures(
            service_slots,
            intact_slots,
            network_ok_slots,
            no_data_slots,
            threshold=as_fraction(threshold),
            unit=unit,
        )
    )


def combine(*figures: Figures, threshold: float | str | Fraction | None = None) -> Figures:
    """Group figures: counts summed, rates of the sums, units and flagged units summed.

    Accepts unit figures and group figures alike (a county from its institutions), as arguments or as one
    iterable. ``threshold`` defaults to the first figure's (or 95 % for an empty group).
    """
    if len(figures) == 1 and not isinstance(figures[0], Figures):
        figures = tuple(figures[0])  # type: ignore[arg-type]
    thr = (
        as_fraction(threshold)
        if threshold is not None
        else (figures[0].threshold if figures else DEFAULT_THRESHOLD)
    )
    return Figures(
        service_slots=sum(f.service_slots for f in figures),
        intact_slots=sum(f.intact_slots for f in figures),
        network_ok_slots=sum(f.network_ok_slots for f in figures),
        no_data_slots=sum(f.no_data_slots for f in figures),
        units=sum(f.units for f in figures),
        flagged_units=sum(f.flagged_units for f in figures),
        threshold=thr,
        unit=None,
    )


class Tier(NamedTuple):
    tier: int
    final_payment: Fraction  # share of the total fee


def contract_tier(
    device_rate: Fraction | float | None,
    network_rate: Fraction | float | None,
    tiers: Sequence[tuple[float | str | Fraction, int, float | str | Fraction]] = DEFAULT_TIERS,
    last: tuple[int, float | str | Fraction] = DEFAULT_LAST_TIER,
) -> Tier | None:
    """The contract tier from the fleet's two rates: the first tier whose floor both rates reach.

    ``tiers`` are ``(floor, tier, final payment share)`` from best to worst; ``last`` applies when no floor is
    reached. ``None`` when a rate is ``None`` (no service slots: nothing to judge).
    """
    if device_rate is None or network_rate is None:
        return None
    d, n = as_fraction(device_rate), as_fraction(network_rate)
    for floor, tier, share in tiers:
        f = as_fraction(floor)
        if d >= f and n >= f:
            return Tier(tier, as_fraction(share))
    return Tier(last[0], as_fraction(last[1]))


def _buckets(result: UnitCount, bucket: str) -> Iterator[tuple[int, int]]:
    """Slot-offset boundaries of local hours or days covering the period."""
    n = len(result.codes)
    if n == 0:
        return
    s = result.slot_s
    start_s = result.first_slot * s
    end_s = (result.first_slot + n) * s
    tz = result.tz
    day = datetime.fromtimestamp(start_s, tz).date()
    while True:
        midnight = int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())
        nxt_day = day + timedelta(days=1)
        next_midnight = int(datetime(nxt_day.year, nxt_day.month, nxt_day.day, tzinfo=tz).timestamp())
        if midnight >= end_s:
            return
        if bucket == "day":
            edges = [midnight, next_midnight]
        else:
            edges = list(range(midnight, next_midnight, 3600)) + [next_midnight]
        for a_s, b_s in zip(edges, edges[1:], strict=False):
            a = max(_ceil_div(a_s, s) - result.first_slot, 0)
            b = min(_ceil_div(b_s, s) - result.first_slot, n)
            if a < b:
                yield a, b
        day = nxt_day


def rollup(result: UnitCount, bucket: str = "hour") -> list[RollupRow]:
    """Per-hour or per-day rows (local hours/days of the fleet's zone) for one unit.

    The rows partition the period, so summing them over any run of whole buckets gives exactly the direct count;
    empty buckets (no slots) are not produced, buckets with slots but no service slots are.
    """
    if bucket not in ("hour", "day"):
        raise ValueError(f"bucket: expected 'hour' or 'day', got {bucket!r}")
    rows = []
    for a, b in _buckets(result, bucket):
        svc, intact, ok, nodata = result.counts_between(a, b)
        rows.append(
            RollupRow(
                unit=result.unit,
                bucket=bucket,
                start=result.slot_start(a),
                end=result.slot_start(b),
                service_slots=svc,
                intact_slots=intact,
                network_ok_slots=ok,
                no_data_slots=nodata,
            )
        )
    return rows


def figures_from_rollups(
    rows: Iterable[RollupRow],
    *,
    unit: str | None = None,
    threshold: float | str | Fraction = DEFAULT_THRESHOLD,
) -> Figures:
    """Figures of one unit from its roll-up rows (what the server answers from)."""
    s = i = o = d = 0
    for r in rows:
        s += r.service_slots
        i += r.intact_slots
        o += r.network_ok_slots
        d += r.no_data_slots
    return figures_from_counts(s, i, o, d, unit=unit, threshold=threshold)
