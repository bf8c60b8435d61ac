"""Clocks: real or accelerated time, and whether the wall clock can be trusted.

Terminals boot with wrong clocks. A sample taken before the clock has been checked
(NTP synchronised, or the server's time from an acknowledgement) keeps its boot id and
boot-time reading, so it can be re-dated once the offset is known.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from datetime import datetime
from pathlib import Path


class Clock:
    """Real time. ``speed`` > 1 gives the simulator's accelerated clock."""

    def __init__(self, speed: float = 1.0, start: float | None = None, anchor: float | None = None) -> None:
        self.speed = speed
        self._anchor_real = anchor if anchor is not None else time.time()
        self._anchor_mono = time.monotonic() - (time.time() - self._anchor_real)
        self._start = start if start is not None else self._anchor_real
        self._offset = 0.0  # correction learnt from the server (seconds)

    @classmethod
    def from_config(cls, speed: float, start: str, anchor: float) -> Clock:
        if speed == 1.0 and not start:
            return cls()
        start_ts = datetime.fromisoformat(start).timestamp() if start else None
        return cls(speed, start_ts, anchor or None)

    def raw(self) -> float:
        """The terminal's own wall clock (possibly wrong)."""
        if self.speed == 1.0 and self._start == self._anchor_real:
            return time.time()
        return self._start + (time.monotonic() - self._anchor_mono) * self.speed

    def now(self) -> float:
        """Best known time: the wall clock plus the offset learnt from the server."""
        return self.raw() + self._offset

    def boottime(self) -> float:
        """Seconds since boot on this clock's scale (never jumps)."""
        return time.clock_gettime(time.CLOCK_BOOTTIME) * self.speed

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Sleep ``seconds`` of this clock's time; True if ``stop`` was set meanwhile."""
        real = max(0.0, seconds / self.speed)
        if stop is not None:
            return stop.wait(real)
        time.sleep(real)
        return False

    def set_offset(self, offset: float) -> None:
        self._offset = offset


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


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:16]
    except OSError:
        return "unknown"
