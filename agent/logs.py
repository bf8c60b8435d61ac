"""Logging set-up: to stdout (journald picks it up), every record passed through the redactor, the last lines
kept in :data:`RING` for the diagnostic console's ``logs`` and the ``collect_logs`` command.

The redactor masks anything that looks like a resident ID number in any log line, as a
last line of defence: the drivers never hand unmasked card fields to anyone anyway.

It lives in the agent, the lowest floor that uses it (the ring): the redactor is the ID card driver's, and the
processes above (``posfleet server run``, the simulator's agent hosts) set their logging up with the same
:func:`setup` through the console script or the simulator, never from ``server/``.
"""

from __future__ import annotations

import logging
import sys

from drivers.idcard.mask import RedactingFilter


class RingBuffer(logging.Handler):
    """The last N log lines (already redacted), for the diagnostic console's `logs` command."""

    def __init__(self, capacity: int = 500) -> None:
        super().__init__()
        from collections import deque

        self.lines: deque[str] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


RING = RingBuffer()


class ZonedFormatter(logging.Formatter):
    """``%(asctime)s`` as ISO 8601 with its offset (``2026-12-06T23:07:08.123+08:00``): in ``tz`` (the server
    passes the fleet's zone, as its API and CLI show times), else in the machine's local zone; never a bare time
    a reader has to guess the zone of."""

    def __init__(self, fmt: str, tz: str | None = None) -> None:
        super().__init__(fmt)
        from zoneinfo import ZoneInfo

        self.zone = ZoneInfo(tz) if tz else None

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's
        from datetime import datetime

        when = datetime.fromtimestamp(record.created, self.zone) if self.zone else \
            datetime.fromtimestamp(record.created).astimezone()
        return when.isoformat(timespec="milliseconds")


def setup(level: str = "INFO", tz: str | None = None) -> None:
    """Root logging to stdout and :data:`RING`; times with their offset, in ``tz`` if given (see
    :class:`ZonedFormatter`)."""
    fmt = ZonedFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", tz)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(fmt)
    handler.addFilter(RedactingFilter())
    RING.setFormatter(fmt)
    RING.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler, RING]
    root.setLevel(level.upper())
