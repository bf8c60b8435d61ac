"""Service hours: the wall-clock windows in which an institution's terminal is expected to work.

Syntax (availability.md, scenario-format.md):

- ``"HH:MM-HH:MM"``: the same window every day;
- ``{"mon-fri": "08:00-17:30", "sat": "08:00-12:00"}``: keys are weekdays (``mon`` … ``sun``) or ascending
  ranges of them (``mon-fri``); days not named have no service hours;
- a window's start is included and its end excluded; ``24:00`` is accepted as an end (end of day);
- several windows for one day are written with commas (``"08:00-12:00,14:00-18:00"``, a lunch break);
  they must be in order and must not overlap.

Windows are wall-clock times in the time zone (``zoneinfo``, default ``Asia/Shanghai``): on a day when a DST
zone changes its clocks, ``08:00-18:00`` is still 08:00 to 18:00 on the wall. A wall time that does not exist
(inside a spring-forward gap) is read with the offset in force before the gap, as ``zoneinfo`` does for
``fold=0``.

Pure: no I/O, no clock. :meth:`ServiceHours.parse` raises :class:`ValueError` naming what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TZ = "Asia/Shanghai"
DEFAULT_HOURS = "08:00-18:00"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_HHMM = re.compile(r"^([0-9]{2}):([0-9]{2})$")

#: one day's windows, as (start minute, end minute) of the local day, end excluded, end <= 1440
DayWindows = tuple[tuple[int, int], ...]


def zone(tz: str | tzinfo | None) -> tzinfo:
    """A time zone from a name (``Asia/Shanghai``) or a tzinfo; ``None`` gives the default."""
    if tz is None:
        return ZoneInfo(DEFAULT_TZ)
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str) or not tz:
        raise ValueError(f"time zone: expected a zone name like 'Asia/Shanghai', got {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"time zone: unknown zone {tz!r}") from err


def _minute(text: str, what: str, *, allow_24: bool) -> int:
    m = _HHMM.match(text)
    if not m:
        raise ValueError(f"{what} {text!r} is not HH:MM")
    hh, mm = int(m.group(1)), int(m.group(2))
    if allow_24 and hh == 24 and mm == 0:
        return 1440
    if hh > 23 or mm > 59:
        raise ValueError(f"{what} {text!r} is not a time of day")
    return hh * 60 + mm


def parse_windows(value: object) -> DayWindows:
    """Parse ``"HH:MM-HH:MM"`` (or several, comma-separated) into minute windows of one day."""
    if not isinstance(value, str):
        raise ValueError(f'expected "HH:MM-HH:MM", got {type(value).__name__}')
    text = value.strip()
    if not text:
        raise ValueError('empty hours (expected "HH:MM-HH:MM")')
    windows: list[tuple[int, int]] = []
    for part in text.split(","):
        part = part.strip()
        start_s, sep, end_s = part.partition("-")
        if not sep:
            raise ValueError(f"{part!r} is not HH:MM-HH:MM")
        start = _minute(start_s.strip(), "start", allow_24=False)
        end = _minute(end_s.strip(), "end", allow_24=True)
        if end <= start:
            raise ValueError(f"{part!r}: end is not after start (windows past midnight are not supported)")
        if windows and start < windows[-1][1]:
            raise ValueError(f"{part!r}: overlaps or precedes the window before it")
        windows.append((start, end))
    return tuple(windows)


def _days(key: object) -> list[int]:
    if not isinstance(key, str):
        raise ValueError(f"day key {key!r} is not a string")
    name = key.strip().lower()
    first, sep, last = name.partition("-")
    if first not in WEEKDAYS or (sep and last not in WEEKDAYS):
        raise ValueError(f"unknown day {key!r} (expected mon…sun or a range like mon-fri)")
    a = WEEKDAYS.index(first)
    b = WEEKDAYS.index(last) if sep else a
    if b < a:
        raise ValueError(f"day range {key!r} runs backwards (write e.g. mon-fri)")
    return list(range(a, b + 1))


@dataclass(frozen=True)
class ServiceHours:
    """Per-weekday windows (index 0 = Monday) in a time zone."""

    days: tuple[DayWindows, ...]
    tz: tzinfo

    @classmethod
    def parse(cls, value: object = None, tz: str | tzinfo | None = None) -> ServiceHours:
        """Parse a string or a weekday mapping; ``None`` means the default 08:00-18:00 every day."""
        zi = zone(tz)
        if isinstance(value, ServiceHours):
            return value
        if value is None:
            value = DEFAULT_HOURS
        if isinstance(value, str):
            windows = parse_windows(value)
            return cls(days=(windows,) * 7, tz=zi)
        if isinstance(value, Mapping):
            if not value:
                raise ValueError("no days given (an empty mapping would mean no service hours at all)")
            per_day: list[DayWindows | None] = [None] * 7
            for key, text in value.items():
                days = _days(key)
                try:
                    windows = parse_windows(text)
                except ValueError as err:
                    raise ValueError(f"{key}: {err}") from err
                for d in days:
                    if per_day[d] is not None:
                        raise ValueError(f"{key}: {WEEKDAYS[d]} is named twice")
                    per_day[d] = windows
            return cls(days=tuple(w if w is not None else () for w in per_day), tz=zi)
        raise ValueError(f'expected "HH:MM-HH:MM" or a mapping of weekdays to it, got {type(value).__name__}')

    def on(self, day: date) -> DayWindows:
        return self.days[day.weekday()]

    def contains(self, when: datetime) -> bool:
        """Whether the instant ``when`` (aware) falls inside service hours."""
        local = _aware(when, "when").astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        return any(a <= minute < b for a, b in self.on(local.date()))

    def window_seconds(self, start_s: int, end_s: int) -> list[tuple[int, int]]:
        """Service windows as epoch-second intervals ``[a, b)``, clipped to ``[start_s, end_s)``."""
        out: list[tuple[int, int]] = []
        if end_s <= start_s:
            return out
        first = datetime.fromtimestamp(start_s, self.tz).date() - timedelta(days=1)
        last = datetime.fromtimestamp(end_s, self.tz).date() + timedelta(days=1)
        day = first
        while day <= last:
            for a_min, b_min in self.on(day):
                a = _wall(day, a_min, self.tz)
                b = _wall(day, b_min, self.tz)
                a, b = max(a, start_s), min(b, end_s)
                if a < b:
                    out.append((a, b))
            day += timedelta(days=1)
        return out

    def slots_in(self, start: datetime, end: datetime, slot_s: int = 60) -> list[range]:
        """The slots inside service hours in ``[start, end)``, as ranges of slot indices.

        Slot ``k`` starts at epoch second ``k * slot_s``; a slot is inside service hours when its start is.
        ``sum(len(r) for r in slots_in(...))`` is the number of service slots.
        """
        s = epoch_seconds_ceil(_aware(start, "start"))
        e = epoch_seconds_ceil(_aware(end, "end"))
        return [range(_ceil_div(a, slot_s), _ceil_div(b, slot_s)) for a, b in self.window_seconds(s, e)]


def _wall(day: date, minute: int, tz: tzinfo) -> int:
    if minute >= 1440:
        day, minute = day + timedelta(days=1), minute - 1440
    local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=tz)
    return int(local.timestamp())


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def _aware(when: datetime, what: str) -> datetime:
    if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{what}: expected an aware datetime, got {when!r}")
    return when


def epoch_seconds_ceil(when: datetime) -> int:
    """Epoch seconds of an aware datetime, rounded up to the whole second."""
    ts = when.timestamp()
    if when.microsecond == 0:
        return int(round(ts))
    return int(round(ts - when.microsecond / 1e6)) + 1
