"""Report periods as people name them: a month (``2026-11``), a quarter (``2026Q4``) or plain days (``--from
2026-10-01 --to 2026-10-31``, the last day included), all in the fleet's time zone; and how the report writes them
(Chinese dates: 2026年10月1日至2026年12月31日, the last day included, never an exclusive end).

Days and times go through the one time-input parser (:mod:`wire.times`, via ``Availability.period``); a month or
quarter is turned into its first and last day and read the same way. Pure but for that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from ..registry.models import FieldError

_MONTH = re.compile(r"\s*(\d{4})\s*[-/.年]\s*(\d{1,2})\s*月?\s*")
_QUARTER = re.compile(r"\s*(\d{4})\s*[-_ ]?\s*[Qq]\s*([1-4])\s*")
QUARTER_ZH = {1: "第一季度", 2: "第二季度", 3: "第三季度", 4: "第四季度"}


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in epoch seconds and what it is called: ``kind`` month, quarter or days, ``key`` the
    machine name (2026-11, 2026Q4, 2026-10-01_2026-10-31) used in file names and report numbers."""

    start: int
    end: int
    kind: str
    key: str
    first: date  # first day
    last: date  # last day, included (for a period ending on a midnight)


def month_days(text: str) -> tuple[date, date, str]:
    m = _MONTH.fullmatch(text or "")
    if m is None or not 1 <= int(m.group(2)) <= 12:
        raise FieldError("month", f"not a month: {text!r}; write e.g. 2026-11")
    y, mo = int(m.group(1)), int(m.group(2))
    if not 2000 <= y <= 2099:
        raise FieldError("month", f"year {y} is outside 2000..2099; write e.g. 2026-11")
    first = date(y, mo, 1)
    last = (date(y + mo // 12, mo % 12 + 1, 1)) - timedelta(days=1)
    return first, last, f"{y:04d}-{mo:02d}"


def quarter_days(text: str) -> tuple[date, date, str]:
    m = _QUARTER.fullmatch(text or "")
    if m is None:
        raise FieldError("quarter", f"not a quarter: {text!r}; write e.g. 2026Q4")
    y, q = int(m.group(1)), int(m.group(2))
    if not 2000 <= y <= 2099:
        raise FieldError("quarter", f"year {y} is outside 2000..2099; write e.g. 2026Q4")
    first = date(y, 3 * q - 2, 1)
    last = date(y + (q == 4), 1 if q == 4 else 3 * q + 1, 1) - timedelta(days=1)
    return first, last, f"{y:04d}Q{q}"


def resolve(availability: Any, *, month: str | None = None, quarter: str | None = None, start: str | None = None,
            end: str | None = None) -> Period:
    """The period asked for: exactly one of ``month``, ``quarter`` or ``start`` + ``end``. Raises
    :class:`FieldError` naming the input (``month``, ``quarter``, ``from``, ``to``)."""
    given = [n for n, v in (("month", month), ("quarter", quarter)) if v]
    if start or end:
        given.append("from/to")
    if len(given) != 1:
        field = "from" if not given else given[1] if given[0] == "from/to" else given[0]
        raise FieldError(field.split("/")[0], "give one period: month (2026-11), quarter (2026Q4) or from and to "
                                              "(2026-10-01 and 2026-10-31, the last day included)"
                         + (f"; got {' and '.join(given)}" if given else ""))
    if month or quarter:
        first, last, key = month_days(month) if month else quarter_days(quarter or "")
        a, b = availability.period(first.isoformat(), last.isoformat())
        return Period(a, b, "month" if month else "quarter", key, first, last)
    if not start:
        raise FieldError("from", "missing: the first day (2026-10-01)")
    if not end:
        raise FieldError("to", "missing: the last day, included (2026-10-31)")
    a, b = availability.period(start, end)
    tz = availability.tz
    first = datetime.fromtimestamp(a, tz).date()
    e = datetime.fromtimestamp(b, tz)
    last = e.date() - timedelta(days=1) if (e.hour, e.minute, e.second) == (0, 0, 0) else e.date()
    return Period(a, b, "days", f"{first.isoformat()}_{last.isoformat()}", first, last)


def zh_date(d: date) -> str:
    return f"{d.year}年{d.month}月{d.day}日"


def period_text(p: Period, tz: Any, lang: str = "zh") -> str:
    """The period as the cover writes it, the last day included: 2026年10月1日至2026年12月31日 (and the hours
    when it does not start or end on a midnight)."""
    a, b = datetime.fromtimestamp(p.start, tz), datetime.fromtimestamp(p.end, tz)
    whole = (a.hour, a.minute) == (0, 0) and (b.hour, b.minute) == (0, 0)
    if lang == "zh":
        if whole:
            return f"{zh_date(p.first)}至{zh_date(p.last)}"
        return f"{zh_date(a.date())} {a:%H:%M}至{zh_date(b.date())} {b:%H:%M}"
    if whole:
        return f"{p.first:%d %B %Y} to {p.last:%d %B %Y} (inclusive)"
    return f"{a:%d %B %Y %H:%M} to {b:%d %B %Y %H:%M}"


def period_name(p: Period, lang: str = "zh") -> str:
    """2026年11月 / 2026年第四季度 / the days."""
    if p.kind == "month":
        return f"{p.first.year}年{p.first.month}月" if lang == "zh" else f"{p.first:%B %Y}"
    if p.kind == "quarter":
        q = (p.first.month - 1) // 3 + 1
        return f"{p.first.year}年{QUARTER_ZH[q]}" if lang == "zh" else f"Q{q} {p.first.year}"
    return ""


def ended_periods(kind: str, since: int, now: int, tz: Any) -> list[str]:
    """Every month (``kind`` month) or quarter that ended after ``since`` and no later than ``now``, oldest first:
    ``ended_periods("month", <2026-09-15>, <2026-12-02>, tz)`` is ["2026-09", "2026-10", "2026-11"]. A period that
    ended exactly at ``since`` is not one of them."""
    step = 1 if kind == "month" else 3
    d = datetime.fromtimestamp(since, tz).date()
    d = date(d.year, d.month - (d.month - 1) % step, 1)  # the period holding ``since``
    today = datetime.fromtimestamp(now, tz).date()
    out: list[str] = []
    while True:
        m = d.month - 1 + step
        nxt = date(d.year + m // 12, m % 12 + 1, 1)  # its end: the next period's first midnight
        if nxt > today:
            return out
        out.append(f"{d.year:04d}-{d.month:02d}" if kind == "month" else f"{d.year:04d}Q{(d.month - 1) // 3 + 1}")
        d = nxt
