"""Time for agent and server alike: real, or accelerated for the simulator.

With ``speed`` > 1 every process given the same (start, anchor, speed) agrees on the
simulated time: ``now = start + (real_now - anchor) * speed``.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime


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
