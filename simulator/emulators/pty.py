"""Run an emulated device on a pseudo-terminal.

The emulator owns the master side; the real driver opens the slave path as if it were a
/dev/ttyUSB port. A background thread feeds every byte the driver writes to the
emulator's ``feed()`` and writes back whatever it returns. Emulators can also push bytes
on their own (URCs, late replies) through :meth:`PtyDevice.send`.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from typing import Protocol


class Emulator(Protocol):
    def feed(self, data: bytes) -> bytes | None:
        """Take bytes the host wrote; return bytes to answer at once (or None)."""
        ...

    def tick(self) -> bytes | None:
        """Called about every 20 ms; return bytes to send unprompted (or None)."""
        ...


class PtyDevice:
    """A pty pair serving one emulator. Use as a context manager or call start()/stop()."""

    def __init__(self, emulator: Emulator, *, chunk: int = 0, chunk_delay: float = 0.0) -> None:
        self.emulator = emulator
        self.chunk = chunk  # >0: deliver replies in chunks of this many bytes
        self.chunk_delay = chunk_delay
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"pty-{self.path}", daemon=True)
        self.unplugged = False

    def start(self) -> PtyDevice:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> PtyDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def send(self, data: bytes) -> None:
        if not data or self.unplugged:
            return
        with self._lock:
            if self.chunk > 0:
                for i in range(0, len(data), self.chunk):
                    self._write(data[i : i + self.chunk])
                    if self.chunk_delay:
                        time.sleep(self.chunk_delay)
            else:
                self._write(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                return
            view = view[n:]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.02)
            except (OSError, ValueError):
                return
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    return
                if data and not self.unplugged:
                    reply = self.emulator.feed(data)
                    if reply:
                        self.send(reply)
            out = self.emulator.tick()
            if out:
                self.send(out)
