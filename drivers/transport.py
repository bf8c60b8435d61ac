"""Byte transport opened from a pyserial URL.

A device path (``/dev/ttyUSB2``), ``socket://host:port`` (a network printer on port 9100, or
the simulator over TCP), ``loop://`` (unit tests) or ``spy://PORT`` (hex-dump field traffic)
all work, because pyserial's ``serial_for_url`` handles them. ``usblp:///dev/usb/lp0`` opens a
USB printer bound to the kernel's usblp driver, which is not a tty, as a plain device. The transport knows nothing of the protocol
spoken over it: it reads with deadlines, writes, and drains.

Deadlines and waits are measured with :meth:`Transport.monotonic` and :meth:`Transport.sleep`: real time, unless
the opened port carries a ``virtual_clock`` of its own (an object with ``monotonic()`` and ``sleep(s)``), as the
simulator's in-process ports do (``emu://``, simulator/emulators/inproc.py): then a timeout against a silent
device passes in that clock's time and costs no real time. The drivers take their time from here.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable

import serial

from .errors import DeviceNotFound, DriverError, Timeout

USBLP = "usblp://"


class _FdPort:
    """A character device that is not a tty (the kernel's usblp printer node, /dev/usb/lp0): raw
    reads and writes on a file descriptor, with the small part of pyserial's API the Transport uses."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

    @property
    def in_waiting(self) -> int:
        return 4096  # unknown for a plain device: read() returns what is there, up to n

    def read(self, n: int) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], 0.05)
        if not ready:
            return b""
        try:
            return os.read(self.fd, n)
        except BlockingIOError:
            return b""

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        deadline = time.monotonic() + 2.0
        while view:
            _, ready, _ = select.select([], [self.fd], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise OSError(f"write to {self.path} timed out")
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                continue
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        os.close(self.fd)


class Transport:
    def __init__(
        self,
        url: str,
        baudrate: int = 115200,
        *,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        rtscts: bool = False,
        exclusive: bool = True,
    ) -> None:
        self.url = url
        self._settings = dict(
            baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits, rtscts=rtscts
        )
        self._exclusive = exclusive
        self._port: serial.SerialBase | None = None
        self._clock: object | None = None  # the port's virtual clock, if it has one

    # time ------------------------------------------------------------------
    def monotonic(self) -> float:
        """Seconds for deadlines: real, or the opened port's virtual clock."""
        clock = self._clock
        return clock.monotonic() if clock is not None else time.monotonic()  # type: ignore[attr-defined]

    def sleep(self, seconds: float) -> None:
        clock = self._clock
        if clock is not None:
            clock.sleep(max(0.0, seconds))  # type: ignore[attr-defined]
        else:
            time.sleep(max(0.0, seconds))

    # lifecycle -------------------------------------------------------------
    def open(self) -> None:
        if self._port is not None:
            return
        if self.url.startswith(USBLP):
            try:
                self._port = _FdPort(self.url[len(USBLP):])  # type: ignore[assignment]
            except OSError as err:
                raise DeviceNotFound(self.url, err.strerror or str(err)) from err
            return
        kwargs = dict(self._settings, timeout=0.05, write_timeout=2.0)
        if self.url.startswith("/"):
            kwargs["exclusive"] = self._exclusive
        try:
            self._port = serial.serial_for_url(self.url, **kwargs)
        except (serial.SerialException, OSError, ValueError) as err:
            raise DeviceNotFound(self.url, str(err)) from err
        self._clock = getattr(self._port, "virtual_clock", None)

    def close(self) -> None:
        port, self._port = self._port, None
        close_quietly(port)

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require(self) -> serial.SerialBase:
        if self._port is None:
            self.open()
        assert self._port is not None
        return self._port

    # I/O ---------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        port = self._require()
        try:
            port.write(data)
            port.flush()
        except (serial.SerialException, OSError) as err:
            self.close()
            raise DeviceNotFound(self.url, f"write failed: {err}") from err

    def read_available(self, max_bytes: int = 4096) -> bytes:
        """Whatever is waiting now (blocks at most the short poll timeout)."""
        port = self._require()
        try:
            waiting = port.in_waiting
            return port.read(min(max(waiting, 1), max_bytes))
        except (serial.SerialException, OSError) as err:
            self.close()
            raise DeviceNotFound(self.url, f"read failed: {err}") from err

    def read_until(
        self,
        done: Callable[[bytes], bool],
        timeout: float,
        command: str,
        *,
        initial: bytes = b"",
    ) -> bytes:
        """Read until ``done(buffer)`` is true or ``timeout`` seconds pass (then :class:`Timeout`)."""
        buf = bytearray(initial)
        deadline = self.monotonic() + timeout
        while True:
            if done(bytes(buf)):
                return bytes(buf)
            if self.monotonic() >= deadline:
                raise Timeout(command, timeout, bytes(buf))
            buf += self.read_available()

    def read_exact(self, n: int, timeout: float, command: str) -> bytes:
        return self.read_until(lambda b: len(b) >= n, timeout, command)

    def drain(self, quiet: float = 0.05, limit: float = 1.0) -> bytes:
        """Read and return everything until the line has been quiet for ``quiet`` seconds."""
        out = bytearray()
        end = self.monotonic() + limit
        last = self.monotonic()
        while self.monotonic() < end:
            chunk = self.read_available()
            if chunk:
                out += chunk
                last = self.monotonic()
            elif self.monotonic() - last >= quiet:
                break
        return bytes(out)


def close_quietly(port: serial.SerialBase | None) -> None:
    """Close a port that may already be gone (unplugged USB): closing must never raise."""
    if port is not None:
        try:
            port.close()
        except (serial.SerialException, OSError):
            pass


__all__ = ["Transport", "DriverError", "close_quietly"]
