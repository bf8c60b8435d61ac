"""Time for agent and server alike: real, or accelerated for the simulator.

With ``speed`` > 1 every process given the same (start, anchor, speed) agrees on the
simulated time: ``now = start + (real_now - anchor) * speed``.

A ``schedule`` makes the speed piecewise: ``[(t1, v1), (t2, v2), ...]`` (simulated epoch seconds,
ascending) means the clock runs at ``speed`` from ``start`` until ``t1``, at ``v1`` from ``t1`` until
``t2``, and so on. Every process given the same (start, anchor, speed, schedule) still agrees on the
simulated time; the simulator uses it to run fast through hours that are not counted (nights).

Monotonic time and sleeping go through the clock too (``monotonic()``, ``sleep()``): real for every clock above
(round trips, probe waits and timeouts are real milliseconds), virtual for :class:`VirtualClock`, which reads what
the simulator's lockstep player sets it to and advances when slept on (docs/decisions/025-simulator-virtual-time.md).
:class:`FileClock` reads a virtual time that another process writes into a small shared file (the fleet server
of a virtual-time run).
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime


class Clock:
    """Real time. ``speed`` > 1 gives the simulator's accelerated clock."""

    def __init__(self, speed: float = 1.0, start: float | None = None, anchor: float | None = None,
                 schedule: Iterable[Sequence[float]] = ()) -> None:
        self._base_speed = speed
        self._anchor_real = anchor if anchor is not None else time.time()
        self._anchor_mono = time.monotonic() - (time.time() - self._anchor_real)
        self._start = start if start is not None else self._anchor_real
        self._offset = 0.0  # correction learnt from the server (seconds)
        # segments: real seconds after the anchor at which each begins, its simulated start and its speed
        self._seg_real: list[float] = [0.0]
        self._seg_sim: list[float] = [self._start]
        self._seg_speed: list[float] = [speed]
        for t, v in sorted((float(t), float(v)) for t, v in schedule):
            if v <= 0:
                raise ValueError(f"clock schedule: speed {v} at {t} must be positive")
            if t <= self._seg_sim[-1]:
                if len(self._seg_sim) == 1 and t <= self._start:
                    self._seg_speed[0] = v  # in effect from the start
                    continue
                raise ValueError(f"clock schedule: {t} is not after the previous change")
            self._seg_real.append(self._seg_real[-1] + (t - self._seg_sim[-1]) / self._seg_speed[-1])
            self._seg_sim.append(t)
            self._seg_speed.append(v)
        self._piecewise = len(self._seg_speed) > 1 or self._seg_speed[0] != speed

    @classmethod
    def from_config(cls, speed: float, start: str, anchor: float,
                    schedule: Iterable[Sequence[float]] = (), file: str = "") -> Clock:
        if file:  # the simulator's virtual time, set by its player
            return FileClock(file, speed)
        schedule = list(schedule)
        if speed == 1.0 and not start and not schedule:
            return cls()
        start_ts = datetime.fromisoformat(start).timestamp() if start else None
        return cls(speed, start_ts, anchor or None, schedule)

    # the schedule -----------------------------------------------------------------------------
    def _elapsed_real(self) -> float:
        return time.monotonic() - self._anchor_mono

    def _seg_at_real(self, e: float) -> int:
        return max(0, bisect.bisect_right(self._seg_real, e) - 1)

    def sim_at_real(self, e: float) -> float:
        """The simulated time (no offset) ``e`` real seconds after the anchor."""
        i = self._seg_at_real(e)
        return self._seg_sim[i] + (e - self._seg_real[i]) * self._seg_speed[i]

    def real_at_sim(self, t: float) -> float:
        """Real seconds after the anchor at which the simulated time (no offset) is ``t``."""
        i = max(0, bisect.bisect_right(self._seg_sim, t) - 1)
        return self._seg_real[i] + (t - self._seg_sim[i]) / self._seg_speed[i]

    @property
    def real(self) -> bool:
        """True for the real clock (no speed, start or schedule): its ``now()`` is comparable with certificate
        dates and other machines' clocks; a simulated one is only comparable with its own run's."""
        return not self._piecewise and self._base_speed == 1.0 and self._start == self._anchor_real

    @property
    def speed(self) -> float:
        """The speed now (constant unless a schedule is set)."""
        if not self._piecewise:
            return self._base_speed
        return self._seg_speed[self._seg_at_real(self._elapsed_real())]

    @property
    def schedule(self) -> list[tuple[float, float]]:
        return list(zip(self._seg_sim[1:], self._seg_speed[1:], strict=True))

    # reading the clock ----------------------------------------------------------------------------
    def raw(self) -> float:
        """The terminal's own wall clock (possibly wrong)."""
        if self._piecewise:
            return self.sim_at_real(self._elapsed_real())
        if self._base_speed == 1.0 and self._start == self._anchor_real:
            return time.time()
        return self._start + (time.monotonic() - self._anchor_mono) * self._base_speed

    def now(self) -> float:
        """Best known time: the wall clock plus the offset learnt from the server."""
        return self.raw() + self._offset

    def boottime(self) -> float:
        """Seconds since boot on this clock's scale (never jumps)."""
        if self._piecewise:
            # simulated seconds since the anchor plus the real boot time at the anchor: monotonic, the
            # same in every process of the run (an agent restarted with the same boot id agrees)
            at_anchor = time.clock_gettime(time.CLOCK_BOOTTIME) - self._elapsed_real()
            return at_anchor + self.raw() - self._start
        return time.clock_gettime(time.CLOCK_BOOTTIME) * self._base_speed

    def now_and_boottime(self) -> tuple[float, float]:
        """``now()`` and ``boottime()`` as of one instant. On an accelerated clock two readings a few real
        milliseconds apart (the process preempted between them) differ by tens of simulated seconds, enough to
        re-date a sample onto its neighbour's slot; so read again while they were more than 1 ms apart."""
        for _ in range(50):
            b1 = self.boottime()
            n = self.now()
            b2 = self.boottime()
            if b2 - b1 <= 0.001 * self.speed:
                break
        return n, (b1 + b2) / 2

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Sleep ``seconds`` of this clock's time; True if ``stop`` was set meanwhile."""
        if self._piecewise:
            e = self._elapsed_real()
            real = max(0.0, self.real_at_sim(self.sim_at_real(e) + seconds) - e)
        else:
            real = max(0.0, seconds / self._base_speed)
        if stop is not None:
            return stop.wait(real)
        time.sleep(real)
        return False

    def set_offset(self, offset: float) -> None:
        self._offset = offset

    @property
    def offset(self) -> float:
        """The correction learnt from the server (seconds)."""
        return self._offset

    # monotonic time ------------------------------------------------------------------------------------
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps, for durations and deadlines (round trips, timeouts, retries).
        Real seconds here, whatever the speed: a round trip is a physical quantity, not simulated time."""
        return time.monotonic()

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait ``seconds`` of :meth:`monotonic` time; True if ``stop`` was set meanwhile."""
        if stop is not None:
            return stop.wait(max(0.0, seconds))
        time.sleep(max(0.0, seconds))
        return False


class VirtualClock(Clock):
    """Virtual time for one simulated terminal in the lockstep player (simulator/vworker.py).

    It reads what the player set it to (:meth:`advance_to`), never the machine's clock: wall, monotonic and
    boot time all move together, only when the player moves them or something sleeps or times out on it
    (a driver's deadline against a silent emulator costs no real time). Speed 1: durations are the field's."""

    def __init__(self, t: float, booted_at: float | None = None) -> None:
        super().__init__()
        self._t = float(t)
        self._booted_at = float(t if booted_at is None else booted_at)

    @property
    def real(self) -> bool:
        return False

    @property
    def speed(self) -> float:
        return 1.0

    def advance_to(self, t: float) -> None:
        """Move this clock forward to raw time ``t`` (never back)."""
        if t > self._t:
            self._t = t

    def raw(self) -> float:
        return self._t

    def boottime(self) -> float:
        return 100.0 + self._t - self._booted_at

    def now_and_boottime(self) -> tuple[float, float]:
        return self.now(), self.boottime()

    def monotonic(self) -> float:
        return self._t

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        self._t += max(0.0, seconds)
        return stop.is_set() if stop is not None else False

    wait = sleep


FILE_CLOCK_BYTES = 8


class FileClock(Clock):
    """A virtual time written by another process into ``path`` (8 bytes, a little-endian double of epoch
    seconds, read through a shared mapping): the fleet server of a virtual-time simulator run reads the time
    the player sets. ``speed`` is only what pollers scale their real waits by (the server's roll-up loop)."""

    def __init__(self, path: str, speed: float = 1.0) -> None:
        super().__init__()
        fd = os.open(path, os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, FILE_CLOCK_BYTES, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self._file_speed = speed
        self._first = self.raw()

    @property
    def real(self) -> bool:
        return False

    @property
    def speed(self) -> float:
        return self._file_speed

    def raw(self) -> float:
        return float(struct.unpack_from("<d", self._map, 0)[0])

    def boottime(self) -> float:
        return self.raw() - self._first

    def now_and_boottime(self) -> tuple[float, float]:
        t = self.raw()
        return t + self._offset, t - self._first


class FileClockWriter:
    """The player's side of :class:`FileClock`: creates the file and sets the time in it."""

    def __init__(self, path: str, t: float) -> None:
        self.path = path
        with open(path, "wb") as f:
            f.write(struct.pack("<d", float(t)))
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, FILE_CLOCK_BYTES)
        finally:
            os.close(fd)

    def set(self, t: float) -> None:
        struct.pack_into("<d", self._map, 0, float(t))

    def get(self) -> float:
        return float(struct.unpack_from("<d", self._map, 0)[0])
