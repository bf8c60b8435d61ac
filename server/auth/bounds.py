"""Bounds for the API's query and path parameters (issue 12): every number, text and date a client can send has
limits the schema publishes, so out-of-range input is a 422 naming the field, never a 500 from SQLite or datetime.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import Path, Query

from ..registry.models import FieldError

MAX_INT64 = 2**63 - 1
MAX_OFFSET = 1_000_000_000
FIRST_YEAR, LAST_YEAR = 2000, 2099
EPOCH_MIN = 946_684_800  # 2000-01-01T00:00:00Z
EPOCH_MAX = 4_102_444_800  # 2100-01-01T00:00:00Z

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]
Id64 = Annotated[int, Path(ge=1, le=MAX_INT64)]
Epoch = Annotated[int | None, Query(ge=EPOCH_MIN, le=EPOCH_MAX, description="epoch seconds (years 2000..2099)")]
EpochF = Annotated[float | None, Query(ge=EPOCH_MIN, le=EPOCH_MAX, description="epoch seconds (years 2000..2099)")]
SN = Annotated[str, Path(min_length=1, max_length=64, description="the unit's serial number")]
Code = Annotated[str, Path(min_length=1, max_length=64, description="the institution's code")]
Name = Annotated[str | None, Query(max_length=100)]
SNQuery = Annotated[str | None, Query(max_length=64)]
TIME_FORMS = ("a day (2026-10-01), a local time in the fleet's zone (2026-10-01T08:00) or ISO 8601 with offset "
              "(2026-10-01T08:00:00+08:00); years 2000..2099")


TimeQuery = Annotated[str | None, Query(min_length=1, max_length=40, description=TIME_FORMS)]


def time_param(text: str | None, field: str, tz: str, end: bool = False) -> int | None:
    """A time query parameter (:mod:`wire.times`) as epoch seconds; a 422 naming ``field`` with hints that parse."""
    if text is None:
        return None
    from wire.times import TimeInputError, parse_time

    try:
        return parse_time(text, field, tz, end=end)
    except TimeInputError as err:
        raise FieldError(field, err.message) from err


def check_year(value: int, field: str) -> None:
    if not FIRST_YEAR <= value <= LAST_YEAR:
        raise FieldError(field, f"year {value} is outside {FIRST_YEAR}..{LAST_YEAR}")


def day(text: str, field: str) -> date:
    """A ``YYYY-MM-DD`` date within the years the server counts (hints that parse: :func:`wire.times.parse_day`)."""
    from wire.times import TimeInputError, parse_day

    try:
        return parse_day(text, field)
    except TimeInputError as err:
        raise FieldError(field, err.message) from err


def month(text: str | None, field: str = "month") -> None:
    if text is not None:
        check_year(int(text[:4]), field)
