"""An emulator that answers from a capture (``posfleet diag capture``): a field problem replayed.

Give it a capture folder; run it on a pty (:func:`serve`) and point the real driver at
``.path``. Every host write recorded becomes a step: when the bytes the host sends match
the next step's request, the device's recorded replies are sent back at their recorded
delays (so a slow or silent device stays slow or silent, and a timeout recurs). Bytes the
device sent before the first request are sent on the host's first write (the port is
flushed when it opens, so earlier bytes would be lost).

When the host sends something else, the emulator notes a :class:`Mismatch` naming the step
and goes silent, as a device that did not understand would. :meth:`ReplayEmulator.verify`
raises :class:`ReplayError` for a mismatch or for steps never asked for; the message names
the step (``step 7 (AT+CPIN?)``) and both byte strings.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from drivers.capture import Capture, Step, load

from .pty import PtyDevice

log = logging.getLogger(__name__)

_NOW = 0.005  # replies due within this many seconds go out with the request's answer


class ReplayError(AssertionError):
    """The driver did not ask what the recording says it asked."""

    def __init__(self, message: str, step: Step | None = None) -> None:
        super().__init__(message)
        self.step = step


@dataclass(frozen=True)
class Mismatch:
    step: Step | None  # None: the host wrote after the last recorded step
    expected: bytes
    got: bytes

    def describe(self) -> str:
        where = self.step.describe() if self.step else "after the last recorded step"
        return (f"{where}: expected {_show(self.expected)}, host sent {_show(self.got)}")


def _show(data: bytes, limit: int = 48) -> str:
    if not data:
        return "nothing"
    text = data[:limit].hex(" ")
    return f"{text}{' ...' if len(data) > limit else ''} ({len(data)} bytes)"


class ReplayEmulator:
    """Feed it host bytes, get the recorded device bytes back (see the module docstring)."""

    def __init__(self, capture: Capture) -> None:
        self.capture = capture
        steps = capture.steps()
        self._prelude = steps[0].replies if steps and not steps[0].request else []
        self.steps = [s for s in steps if s.request]
        self.position = 0  # index into self.steps of the next expected request
        self.mismatches: list[Mismatch] = []
        self._buf = bytearray()
        self._queue: list[tuple[float, bytes]] = []
        self._started = False

    @classmethod
    def from_folder(cls, folder: str | Path) -> ReplayEmulator:
        return cls(load(folder))

    @property
    def done(self) -> bool:
        return self.position >= len(self.steps)

    @property
    def silent(self) -> bool:
        return bool(self.mismatches)

    # emulator protocol ----------------------------------------------------------------
    def feed(self, data: bytes) -> bytes | None:
        if self.silent:
            return None
        now = time.monotonic()
        if not self._started:
            self._started = True
            self._schedule(now, self._prelude)
        self._buf += data
        while self._buf:
            if self.done:
                self._mismatch(None, b"")
                break
            step = self.steps[self.position]
            req = step.request
            if self._buf.startswith(req):
                del self._buf[: len(req)]
                self.position += 1
                self._schedule(now, step.replies)
                continue
            if req.startswith(self._buf):
                break  # the rest of the request is still on its way
            self._mismatch(step, req)
            break
        return self._due(now + _NOW)

    def tick(self) -> bytes | None:
        if self.silent:
            return None
        return self._due(time.monotonic())

    # results ---------------------------------------------------------------------------
    def verify(self) -> None:
        """Raise :class:`ReplayError` unless the host asked exactly what was recorded."""
        if self.mismatches:
            first = self.mismatches[0]
            raise ReplayError(f"replay of {self._where()} diverged at {first.describe()}", first.step)
        if not self.done:
            step = self.steps[self.position]
            raise ReplayError(
                f"replay of {self._where()} ended early: {step.describe()} was never requested "
                f"({len(self.steps) - self.position} of {len(self.steps)} steps left)",
                step,
            )

    def report(self) -> str:
        try:
            self.verify()
        except ReplayError as err:
            return str(err)
        return f"replay of {self._where()}: all {len(self.steps)} steps matched"

    # internals -------------------------------------------------------------------------
    def _where(self) -> str:
        folder = self.capture.folder
        return str(folder) if folder else f"a {self.capture.meta.kind} capture"

    def _mismatch(self, step: Step | None, expected: bytes) -> None:
        got = bytes(self._buf)
        self._buf.clear()
        self._queue.clear()
        m = Mismatch(step, expected, got)
        self.mismatches.append(m)
        log.warning("replay mismatch: %s", m.describe())

    def _schedule(self, now: float, replies: list[tuple[float, bytes]]) -> None:
        for delay, data in replies:
            self._queue.append((now + delay, data))

    def _due(self, until: float) -> bytes | None:
        if not self._queue:
            return None
        due = [data for when, data in sorted(self._queue, key=lambda item: item[0]) if when <= until]
        if not due:
            return None
        self._queue = [(when, data) for when, data in self._queue if when > until]
        return b"".join(due)


def serve(capture: Capture | str | Path, *, chunk: int = 0, chunk_delay: float = 0.0) -> PtyDevice:
    """Start a :class:`ReplayEmulator` for a capture (or its folder) on a pty; the caller stops it."""
    if not isinstance(capture, Capture):
        capture = load(capture)
    return PtyDevice(ReplayEmulator(capture), chunk=chunk, chunk_delay=chunk_delay).start()
