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


def setup(level: str = "INFO") -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(fmt)
    handler.addFilter(RedactingFilter())
    RING.setFormatter(fmt)
    RING.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler, RING]
    root.setLevel(level.upper())
