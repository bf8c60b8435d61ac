"""Byte transport opened from a pyserial URL.

A device path (``/dev/ttyUSB2``), ``socket://host:port`` (simulator over TCP),
``loop://`` (unit tests) or ``spy://PORT`` (hex-dump field traffic) all work, because
pyserial's ``serial_for_url`` handles them. The transport knows nothing of the protocol
spoken over it: it reads with deadlines, writes, and drains.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import serial

from .errors import DeviceNotFound, DriverError, Timeout


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

    # lifecycle -------------------------------------------------------------
    def open(self) -> None:
        if self._port is not None:
            return
        kwargs = dict(self._settings, timeout=0.05, write_timeout=2.0)
        if self.url.startswith("/"):
            kwargs["exclusive"] = self._exclusive
        try:
            self._port = serial.serial_for_url(self.url, **kwargs)
        except (serial.SerialException, OSError, ValueError) as err:
            raise DeviceNotFound(self.url, str(err)) from err

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
        deadline = time.monotonic() + timeout
        while True:
            if done(bytes(buf)):
                return bytes(buf)
            if time.monotonic() >= deadline:
                raise Timeout(command, timeout, bytes(buf))
            buf += self.read_available()

    def read_exact(self, n: int, timeout: float, command: str) -> bytes:
        return self.read_until(lambda b: len(b) >= n, timeout, command)

    def drain(self, quiet: float = 0.05, limit: float = 1.0) -> bytes:
        """Read and return everything until the line has been quiet for ``quiet`` seconds."""
        out = bytearray()
        end = time.monotonic() + limit
        last = time.monotonic()
        while time.monotonic() < end:
            chunk = self.read_available()
            if chunk:
                out += chunk
                last = time.monotonic()
            elif time.monotonic() - last >= quiet:
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
