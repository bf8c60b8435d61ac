"""Logging set-up: to stdout (journald picks it up), every record passed through the redactor.

The redactor masks anything that looks like a resident ID number in any log line, as a
last line of defence: the drivers never hand unmasked card fields to anyone anyway.
"""

from __future__ import annotations

import logging
import sys


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from drivers.idcard.mask import redact_text

        msg = record.getMessage()
        clean = redact_text(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
