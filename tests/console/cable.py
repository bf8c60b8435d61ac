"""A null-modem cable between two pseudo-terminals, with hands to damage what crosses it.

The agent opens ``terminal_path`` as its console port, the laptop client opens
``laptop_path``; a thread copies bytes between the two masters. ``inject_to_terminal`` adds
garbage at the next chunk the laptop sends (mid-frame), ``drop_to_terminal`` /
``drop_to_laptop`` delete bytes from the next chunks, ``flip_to_laptop`` flips a bit in one.
"""

from __future__ import annotations

import os
import select
import threading
import tty


class Cable:
    def __init__(self) -> None:
        self._a_master, self._a_slave = os.openpty()  # terminal side
        self._b_master, self._b_slave = os.openpty()  # laptop side
        for fd in (self._a_master, self._a_slave, self._b_master, self._b_slave):
            tty.setraw(fd)
        self.terminal_path = os.ttyname(self._a_slave)
        self.laptop_path = os.ttyname(self._b_slave)
        self._lock = threading.Lock()
        self._inject: list[bytes] = []
        self._drop = {"terminal": 0, "laptop": 0}
        self._flip_laptop = 0
        self.damaged = 0
        self.bytes_to_terminal = 0
        self.bytes_to_laptop = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="cable")

    def __enter__(self) -> Cable:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in (self._a_master, self._a_slave, self._b_master, self._b_slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def inject_to_terminal(self, garbage: bytes) -> None:
        with self._lock:
            self._inject.append(garbage)

    def drop_to_terminal(self, chunks: int = 1) -> None:
        with self._lock:
            self._drop["terminal"] += chunks

    def drop_to_laptop(self, chunks: int = 1) -> None:
        with self._lock:
            self._drop["laptop"] += chunks

    def flip_to_laptop(self, chunks: int = 1) -> None:
        with self._lock:
            self._flip_laptop += chunks

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._a_master, self._b_master], [], [], 0.02)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    continue
                if fd == self._b_master:
                    self._to_terminal(data)
                else:
                    self._to_laptop(data)

    def _to_terminal(self, data: bytes) -> None:
        with self._lock:
            if self._inject and len(data) > 4:
                # garbage in the middle of the frame the laptop is sending
                data = data[:5] + self._inject.pop(0) + data[5:]
                self.damaged += 1
            elif self._drop["terminal"] and len(data) > 4:
                self._drop["terminal"] -= 1
                data = data[:3] + data[7:]  # bytes lost inside the header
                self.damaged += 1
        self.bytes_to_terminal += len(data)
        _write_all(self._a_master, data)

    def _to_laptop(self, data: bytes) -> None:
        with self._lock:
            if self._drop["laptop"] and len(data) > 20:
                self._drop["laptop"] -= 1
                data = data[:10] + data[20:]
                self.damaged += 1
            elif self._flip_laptop and len(data) > 12:
                self._flip_laptop -= 1
                data = data[:12] + bytes([data[12] ^ 0x10]) + data[13:]
                self.damaged += 1
        self.bytes_to_laptop += len(data)
        _write_all(self._b_master, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            continue
        except OSError:
            return
        view = view[n:]
