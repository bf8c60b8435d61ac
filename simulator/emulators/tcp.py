"""Run an emulated device behind a TCP port on loopback, like a network printer on port 9100.

The driver opens ``device.url`` (``socket://127.0.0.1:PORT``) through pyserial's socket transport, so the
network path of a driver runs unmodified against the same emulator twin the ptys serve. One connection at a
time (a printer's raw port serves one job at a time); a new connection replaces the old one. ``feed()`` gets
what the host sent, ``tick()`` is called about every 20 ms, and what they return is sent back.
"""

from __future__ import annotations

import selectors
import socket
import threading

from .pty import TICK_S, Emulator


class TcpDevice:
    def __init__(self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator
        self._listener = socket.create_server((host, port))
        self._listener.setblocking(False)
        self.host, self.port = self._listener.getsockname()[:2]
        self.url = f"socket://{self.host}:{self.port}"
        self._conn: socket.socket | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tcp-device-{self.port}", daemon=True)

    def start(self) -> TcpDevice:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._drop()
        self._listener.close()

    def __enter__(self) -> TcpDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _send(self, data: bytes | None) -> None:
        if data and self._conn is not None:
            try:
                self._conn.sendall(data)
            except OSError:
                self._drop()

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in sel.select(TICK_S):
                    if key.fileobj is self._listener:
                        try:
                            conn, _ = self._listener.accept()
                        except BlockingIOError:
                            continue
                        if self._conn is not None:
                            sel.unregister(self._conn)
                            self._drop()
                        self._conn = conn
                        sel.register(conn, selectors.EVENT_READ)
                        continue
                    try:
                        data = self._conn.recv(4096) if self._conn is not None else b""
                    except OSError:
                        data = b""
                    if not data:  # the host hung up
                        if self._conn is not None:
                            sel.unregister(self._conn)
                            self._drop()
                        continue
                    self._send(self.emulator.feed(data))
                    self._send(self.emulator.tick())
                self._send(self.emulator.tick())
