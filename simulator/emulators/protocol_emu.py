"""pyserial's ``emu://NAME`` handler: a port onto an in-process emulator (simulator/emulators/inproc.py).

pyserial finds it by the module name (``protocol_<scheme>`` in a package listed in
``serial.protocol_handler_packages``, which inproc.py extends).
"""

from __future__ import annotations

from typing import Any

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from . import inproc


class Serial(SerialBase):  # type: ignore[misc]
    """The driver's side of an :class:`inproc.InprocDevice`. ``virtual_clock`` is the device's clock: the
    driver's transport measures its deadlines on it (drivers/transport.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._dev: inproc.InprocDevice | None = None
        self.virtual_clock: Any = None
        super().__init__(*args, **kwargs)

    def open(self) -> None:
        if self.is_open:
            raise SerialException("Port is already open.")
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        url = str(self.port)
        if not url.startswith(inproc.SCHEME):
            raise SerialException(f"expected {inproc.SCHEME}NAME, got {url!r}")
        dev = inproc.lookup(url[len(inproc.SCHEME):])
        if dev is None:
            raise SerialException(f"no emulated device {url!r} in this process")
        self._dev = dev
        self.virtual_clock = dev.clock
        dev.opened += 1
        dev.rx.clear()
        self.is_open = True

    def close(self) -> None:
        self.is_open = False
        self._dev = None

    def _reconfigure_port(self, *args: Any) -> None:
        pass  # baud rate, parity...: nothing to set on an emulator

    def _dev_or_raise(self) -> inproc.InprocDevice:
        if not self.is_open or self._dev is None:
            raise PortNotOpenError()
        return self._dev

    @property
    def in_waiting(self) -> int:
        dev = self._dev_or_raise()
        if not dev.rx:
            dev.tick()
        return len(dev.rx)

    def read(self, size: int = 1) -> bytes:
        dev = self._dev_or_raise()
        data = dev.take(size)
        if not data and self._timeout:
            dev.clock.sleep(self._timeout)  # nothing came within the read timeout: in virtual time
        return data

    def write(self, data: bytes) -> int:
        dev = self._dev_or_raise()
        b = bytes(data)
        dev.feed(b)
        return len(b)

    def flush(self) -> None:
        pass

    def reset_input_buffer(self) -> None:
        self._dev_or_raise().rx.clear()

    def reset_output_buffer(self) -> None:
        pass

    def send_break(self, duration: float = 0.25) -> None:
        pass

    def _update_break_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True
