"""Clocks: real or accelerated time, and whether the wall clock can be trusted.

Terminals boot with wrong clocks. A sample taken before the clock has been checked
(NTP synchronised, or the server's time from an acknowledgement) keeps its boot id and
boot-time reading, so it can be re-dated once the offset is known.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

from wire.clock import Clock

__all__ = ["Clock", "ntp_synchronised", "boot_id"]

_TIME_ERROR = 5


def ntp_synchronised() -> bool | None:
    """True when the kernel says the clock is NTP-synchronised (adjtimex), None if unknown."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex is 208 bytes on x86_64; room to spare
        rc = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if rc < 0:
        return None
    return rc != _TIME_ERROR


def boot_id(source: str = "/proc/sys/kernel/random/boot_id") -> str:
    try:
        return Path(source).read_text().strip().replace("-", "")[:32] or "unknown"
    except OSError:
        return "unknown"
