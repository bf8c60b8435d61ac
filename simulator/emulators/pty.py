"""Run an emulated device on a pseudo-terminal.

The emulator owns the master side; the real driver opens the slave path as if it were a
/dev/ttyUSB port. Every byte the driver writes goes to the emulator's ``feed()`` and whatever
it returns is written back. Emulators can also push bytes on their own (URCs, late replies)
through :meth:`PtyDevice.send`.

All ptys of a process are served by one selector thread (:class:`PtyHub`), not one polling
thread each: a simulated fleet of 1,000 units has 3,000 ptys. ``tick()`` (bytes sent
unprompted) is called right after every ``feed()`` and about every 20 ms. A device with
``lazy_tick`` set (the fleet player's, which calls :meth:`PtyDevice.poke` whenever it flips a
fault switch) is ticked every 20 ms only while its emulator says it has something pending
(``pending()``: a delayed reply, a boot banner still to come; an emulator without ``pending()``
is always ticked), and otherwise once a second as a safety net.
"""

from __future__ import annotations

import errno
import os
import selectors
import threading
import time
import tty
from typing import Protocol

TICK_S = 0.02  # tick period while an emulator has something pending
SWEEP_S = 1.0  # every device is ticked at least this often
HUB_NICE = -10  # the hub thread's nice value, when the process may raise its priority


class Emulator(Protocol):
    def feed(self, data: bytes) -> bytes | None:
        """Take bytes the host wrote; return bytes to answer at once (or None)."""
        ...

    def tick(self) -> bytes | None:
        """Called after each feed and about every 20 ms while pending; return bytes to send unprompted."""
        ...


class PtyHub:
    """One thread serving many ptys: a selector on their master sides plus the tick schedule."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._devices: dict[PtyDevice, int] = {}  # device -> the master fd it is registered with (-1: none)
        self._active: set[PtyDevice] = set()
        self._thread: threading.Thread | None = None
        self.thread_ident: int | None = None

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="pty-hub", daemon=True)
            self._thread.start()

    def add(self, dev: PtyDevice) -> None:
        with self._lock:
            self._devices[dev] = dev.master
            self._sel.register(dev.master, selectors.EVENT_READ, dev)
            self._active.add(dev)  # first tick at once (a modem's boot banner)
            self._ensure_thread()
        self.wake()

    def remove(self, dev: PtyDevice) -> None:
        with self._lock:
            self._drop(dev)
            self._devices.pop(dev, None)
            self._active.discard(dev)

    def poke(self, dev: PtyDevice) -> None:
        with self._lock:
            if dev in self._devices:
                self._active.add(dev)
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _drop(self, dev: PtyDevice) -> None:
        """Unregister the device's old master fd (lock held)."""
        fd = self._devices.get(dev, -1)
        if fd >= 0:
            try:
                self._sel.unregister(fd)
            except (KeyError, ValueError, OSError):
                pass
            self._devices[dev] = -1

    def _after(self, dev: PtyDevice) -> None:
        """After feed/tick: an emulator may have closed its master (unplug); is it still pending?"""
        with self._lock:
            if dev not in self._devices:
                return
            if self._devices[dev] != dev.master:
                self._drop(dev)
            pending = getattr(dev.emulator, "pending", None) if dev.lazy_tick else None
            if dev.master >= 0 and (pending is None or pending()):
                self._active.add(dev)
            else:
                self._active.discard(dev)

    def _tick(self, dev: PtyDevice) -> None:
        try:
            out = dev.emulator.tick()
            if out:
                dev.send(out)
        except Exception:  # one broken emulator must not stop every other device
            import logging

            logging.getLogger(__name__).exception("emulator tick failed on %s", dev.path)
        self._after(dev)

    def _run(self) -> None:
        self.thread_ident = threading.get_ident()
        # Peripherals answer in real time however busy the terminal is. On a saturated machine the scheduler
        # shares the CPU per thread, and this one thread serving every pty lost to the agents' hundreds: 2-12 %
        # of a 100-unit fleet's printer polls missed their 0.5 s deadline. Ahead of them when allowed (root).
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HUB_NICE)
        except (OSError, AttributeError):
            pass
        next_sweep = time.monotonic() + SWEEP_S
        while True:
            with self._lock:
                if not self._devices:
                    self._thread = None
                    return
                timeout = TICK_S if self._active else max(0.0, next_sweep - time.monotonic())
            try:
                ready = self._sel.select(timeout)
            except (OSError, ValueError):
                ready = []
            for key, _ in ready:
                dev = key.data
                if dev is None:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                if dev.master != key.fd:
                    self._after(dev)
                    continue
                try:
                    data = os.read(key.fd, 65536)
                except OSError as err:
                    if err.errno in (errno.EAGAIN, errno.EINTR):
                        continue
                    with self._lock:  # the pty is gone: stop serving it (as a device thread used to end)
                        self._drop(dev)
                        self._active.discard(dev)
                    continue
                if data and not dev.unplugged:
                    try:
                        reply = dev.emulator.feed(data)
                        if reply:
                            dev.send(reply)
                    except Exception:
                        import logging

                        logging.getLogger(__name__).exception("emulator feed failed on %s", dev.path)
                    self._tick(dev)
            now = time.monotonic()
            with self._lock:
                todo = list(self._devices) if now >= next_sweep else list(self._active)
            if now >= next_sweep:
                next_sweep = now + SWEEP_S
            for dev in todo:
                self._tick(dev)


_HUB: PtyHub | None = None
_HUB_LOCK = threading.Lock()


def hub() -> PtyHub:
    """The process's shared pty hub."""
    global _HUB
    with _HUB_LOCK:
        if _HUB is None:
            _HUB = PtyHub()
        return _HUB


class PtyDevice:
    """A pty pair serving one emulator. Use as a context manager or call start()/stop()."""

    def __init__(self, emulator: Emulator, *, chunk: int = 0, chunk_delay: float = 0.0) -> None:
        self.emulator = emulator
        self.chunk = chunk  # >0: deliver replies in chunks of this many bytes
        self.chunk_delay = chunk_delay
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self._lock = threading.Lock()
        self._hub = hub()
        self._started = False
        self.unplugged = False
        self.lazy_tick = False  # True: tick only while the emulator has something pending (or after poke())

    def start(self) -> PtyDevice:
        if not self._started:
            self._started = True
            self._hub.add(self)
        return self

    def stop(self) -> None:
        self._hub.remove(self)
        self._started = False
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = -1

    def poke(self) -> None:
        """A fault switch changed from outside: tick the emulator now."""
        self._hub.poke(self)

    def __enter__(self) -> PtyDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

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
        deadline = 0.0
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                # the host is not reading and the pty buffer is full: wait a little, then drop the rest
                # (bytes nobody reads are lost on a real serial line too)
                now = time.monotonic()
                deadline = deadline or now + 1.0
                if now > deadline:
                    return
                time.sleep(0.001)
                continue
            except OSError:
                return
            view = view[n:]
