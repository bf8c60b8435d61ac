"""In-process peripherals: the real drivers talk to emulator objects in the same process, in virtual time.

``InprocDevice(emulator, clock, name)`` registers an emulator twin under ``emu://<name>``; a driver given that
URL (``peripherals.modem.port = "emu://<name>"``) opens it through pyserial's ``serial_for_url`` like any port:
this module adds the ``emu`` scheme (:mod:`simulator.emulators.protocol_emu`). What the driver writes is fed
to the emulator at once and its answer is readable at once; a read that finds nothing advances the device's
virtual clock (``wire.clock.VirtualClock``) by the port's read timeout instead of waiting, and the port hands
that clock to the driver's transport (``Transport.monotonic``), so a driver's deadline against a silent emulator
passes in virtual time: three seconds of AT timeouts cost microseconds. The ptys stay for ``posfleet sim device``,
the diag CLI and the real-time player (simulator/emulators/pty.py).

The emulators' own delays (``slow`` switches, a modem's boot delay) still read the real clock; the scenario
faults use none of them.
"""

from __future__ import annotations

from typing import Any

import serial

from .pty import Emulator

SCHEME = "emu://"
_DEVICES: dict[str, InprocDevice] = {}

if "simulator.emulators" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("simulator.emulators")


class InprocDevice:
    """One emulator reachable as ``emu://<name>`` in this process, on ``clock``'s time."""

    def __init__(self, emulator: Emulator, clock: Any, name: str) -> None:
        self.emulator = emulator
        self.clock = clock
        self.name = name
        self.url = SCHEME + name
        self.rx = bytearray()  # what the emulator sent that the driver has not read
        self.opened = 0
        _DEVICES[name] = self

    def close(self) -> None:
        if _DEVICES.get(self.name) is self:
            del _DEVICES[self.name]

    def feed(self, data: bytes) -> None:
        out = self.emulator.feed(data)
        if out:
            self.rx += out
        self.tick()

    def tick(self) -> None:
        out = self.emulator.tick()
        if out:
            self.rx += out

    def take(self, n: int) -> bytes:
        if not self.rx:
            self.tick()
        chunk = bytes(self.rx[:n])
        del self.rx[:n]
        return chunk


def lookup(name: str) -> InprocDevice | None:
    return _DEVICES.get(name)


__all__ = ["SCHEME", "InprocDevice", "lookup"]
