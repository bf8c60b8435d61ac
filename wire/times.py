"""Times people type, read the same way by the API and the CLI (issue 14): one parser, hints that parse.

Accepted (and nothing else, so a typo is named rather than guessed at):

* a day: ``2026-10-01`` - its midnight in the fleet's time zone; as the *end* of a period (``to``, ``--to``)
  the day is included: the period ends at the next midnight;
* a local time: ``2026-10-01T08:00`` or ``2026-10-01 08:00:00`` - in the fleet's time zone (``timezone`` in the
  server's settings, Asia/Shanghai by default);
* a time with its offset: ``2026-10-01T08:00:00+08:00``, ``...+0800``, ``...Z`` (and a day with one:
  ``2026-10-01+08:00`` is that day's midnight at that offset);
* whole seconds, years 2000..2099.

Every refusal says why and gives examples (:attr:`TimeInputError.hints`) built from what was typed where it can
be read (``2026-10-1`` -> ``2026-10-01``), each of which this parser accepts: a test feeds every hint back.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

FIRST_YEAR, LAST_YEAR = 2000, 2099
DEFAULT_TZ = "Asia/Shanghai"
FORMS = "a day (2026-10-01), a local time (2026-10-01T08:00) or a time with its offset (2026-10-01T08:00:00+08:00)"

_STRICT = re.compile(r"(\d{4})-(\d{2})-(\d{2})"
                     r"(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?"
                     r"(Z|[+-]\d{2}:?\d{2})?")
# what a person may have meant: other separators, missing zeros, fractions, Chinese date words
_LOOSE = re.compile(r"\s*(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?"
                    r"(?:\s*[T ]?\s*(\d{1,2})\s*[:时]\s*(\d{1,2})(?:\s*[:分]\s*(\d{1,2})(?:[.,]\d+)?)?\s*秒?)?"
                    r"\s*(Z|[+-]\d{1,2}:?\d{2})?\s*", re.IGNORECASE)


class TimeInputError(ValueError):
    """A time that cannot be read. ``field`` names the input, ``message`` says why, ``hints`` are inputs that
    would be accepted (closest to what was typed first)."""

    def __init__(self, field: str, message: str, hints: list[str]) -> None:
        self.field = field
        self.hints = hints
        self.message = f"{message}; write e.g. {' or '.join(hints)}" if hints else message
        super().__init__(f"{field}: {self.message}")


def _offset(text: str | None) -> timezone | None:
    if text is None:
        return None
    if text.upper() == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:-2]), int(digits[-2:])
    if hours > 23 or minutes > 59:
        raise ValueError("offset out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def offset_text(dt: datetime) -> str:
    off = dt.utcoffset() or timedelta(0)
    minutes = int(off.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _hints(text: str, zone: ZoneInfo) -> list[str]:
    """Accepted inputs closest to ``text``: its own date (and time, and offset) written the accepted way."""
    m = _LOOSE.fullmatch(text[:64])
    if m is not None:
        y, mo, d, hh, mi, ss, off = m.groups()
        try:
            day = date(int(y), int(mo), int(d))
            tz = _offset(off) if off else None
            if off and len(off) < 5:  # +8:00
                tz = _offset(off[0] + "0" + off[1:])
            h, mn, s = int(hh or 0), int(mi or 0), int(ss or 0)
            local = datetime(day.year, day.month, day.day, h, mn, s, tzinfo=tz or zone)
        except (ValueError, OverflowError):
            local = None
        if local is not None and FIRST_YEAR <= day.year <= LAST_YEAR:
            if hh is None:
                return [day.isoformat(), f"{day.isoformat()}T00:00:00{offset_text(local)}"]
            clock = f"{h:02d}:{mn:02d}" + (f":{s:02d}" if s else "")
            if tz is not None:
                return [f"{day.isoformat()}T{h:02d}:{mn:02d}:{s:02d}{offset_text(local)}"]
            return [f"{day.isoformat()}T{clock}", f"{day.isoformat()}T{h:02d}:{mn:02d}:{s:02d}{offset_text(local)}"]
    example = datetime(2026, 10, 1, 8, tzinfo=zone)
    return ["2026-10-01", "2026-10-01T08:00", f"2026-10-01T08:00:00{offset_text(example)}"]


def parse_time(text: str, field: str = "time", tz: str | ZoneInfo = DEFAULT_TZ, *, end: bool = False) -> int:
    """Epoch seconds of ``text`` (see the module's docstring). ``end``: a day alone means the end of that day
    (the next midnight), as the end of a period. Raises :class:`TimeInputError`."""
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    if not isinstance(text, str):
        raise TimeInputError(field, f"expected text, not {type(text).__name__}", _hints("", zone))
    raw = text.strip()
    m = _STRICT.fullmatch(raw)
    if m is None:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise TimeInputError(field, f"not a time: {shown!r} (accepted: {FORMS})", _hints(raw, zone))
    y, mo, d, hh, mi, ss, off = m.groups()
    try:
        tzinfo = _offset(off) or zone
        dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0), tzinfo=tzinfo)
    except ValueError as err:
        raise TimeInputError(field, f"not a valid time: {raw!r} ({err})", _hints("", zone)) from err
    if not FIRST_YEAR <= dt.year <= LAST_YEAR:
        raise TimeInputError(field, f"year {dt.year} is outside {FIRST_YEAR}..{LAST_YEAR}", _hints("", zone))
    if end and hh is None:
        day = dt.date() + timedelta(days=1)
        dt = datetime(day.year, day.month, day.day, tzinfo=tzinfo)
    return int(dt.timestamp())


def parse_day(text: str, field: str = "date", tz: str | ZoneInfo = DEFAULT_TZ) -> date:
    """A calendar day ``YYYY-MM-DD`` (years 2000..2099); refusals name the day meant where it can be read
    (``2026-10-1`` -> ``2026-10-01``)."""
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    raw = text.strip() if isinstance(text, str) else ""
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", raw)
    if m is not None:
        try:
            d = date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            d = None
        if d is not None and FIRST_YEAR <= d.year <= LAST_YEAR:
            return d
    hints = [h[:10] for h in _hints(raw, zone) if re.match(r"\d{4}-\d{2}-\d{2}", h)] or ["2026-10-01"]
    shown = raw if len(raw) <= 40 else raw[:40] + "..."
    raise TimeInputError(field, f"not a day YYYY-MM-DD in {FIRST_YEAR}..{LAST_YEAR}: {shown!r}", hints[:1])


def has_offset(text: str) -> bool:
    """Whether an accepted ``text`` carries its own offset (hints then keep one)."""
    m = _STRICT.fullmatch(text.strip())
    return bool(m and m.group(7))


def written_like(ts: int, text: str, tz: str | ZoneInfo = DEFAULT_TZ) -> str:
    """``ts`` written in the style of the accepted input ``text``: with an offset if it had one (the offset of
    the fleet's zone), else as a local time (``2026-10-01T08:00``). For hints about another instant."""
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    local = datetime.fromtimestamp(ts, zone)
    if has_offset(text):
        return local.isoformat(timespec="seconds")
    return local.strftime("%Y-%m-%dT%H:%M") + (f":{local.second:02d}" if local.second else "")


def iso(ts: float | None, tz: str | ZoneInfo = DEFAULT_TZ) -> str | None:
    """An answer's time: ISO 8601 with the offset of the fleet's zone, whole seconds (None stays None)."""
    if ts is None:
        return None
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    return datetime.fromtimestamp(int(ts), zone).isoformat(timespec="seconds")
