"""Shared pieces of the benchmarks: machine facts, TCP_INFO, and a counting TCP proxy.

The proxy stands where the carrier's network would be: the agent connects to it, it relays
to the real broker, and it counts what crosses the *agent-side* socket in each direction
(bytes of TLS records, and TCP segments from the kernel's TCP_INFO of that socket). The
IP-level figure is bytes + ``IP_TCP_OVERHEAD`` per segment, which is how the carrier bills
(IPv4 20 B + TCP 20 B + 12 B timestamp option). The listening socket clamps the MSS to a
cellular-like value so a 4.6 KB TLS flight is cut into as many segments as on the air.

It also reads each connection's plaintext TLS ServerHello to tell a full handshake from a
resumed one (TLS 1.3: ``pre_shared_key`` extension present; TLS 1.2: session id echoed).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IP_TCP_OVERHEAD = 52  # bytes per TCP segment: IPv4 (20) + TCP (20) + timestamps option (12)
CELLULAR_MSS = 1400  # clamp on the proxy's listening socket (typical LTE path MTU after tunnelling)

_SNDMSS, _SEGS_OUT, _SEGS_IN = 16, 136, 140


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()), "cpu_model": model, "kernel": platform.release(),
        "python": platform.python_version(), "date": dt.date.today().isoformat(),
    }


def core_speed() -> float:
    """CPU seconds of a plain Python loop of 10 million additions (best of 3): the same model name has come with
    cores nearly twice as slow from one day to the next (docs/performance-sim.md, the 2026-12-06 re-run), so a
    figure is only comparable with another taken where this one was about the same."""
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        s = 0
        for i in range(10_000_000):
            s += i
        best = min(best, time.process_time() - t)
    return best


def machine_line() -> str:
    m = machine()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"machine: {m['cpus']} CPUs, {m['cpu_model']}, Linux {m['kernel']}, Python {m['python']}, {m['date']}; "
            f"core speed {core_speed():.2f} CPU-s for 10 M Python additions; "
            f"load average now {load} (other work on the box skews CPU-bound figures)")


def segs(sock: socket.socket) -> tuple[int, int, int]:
    """(segments sent, segments received, send MSS) of a TCP socket, from TCP_INFO."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    out, inn = struct.unpack_from("=II", raw, _SEGS_OUT)
    (mss,) = struct.unpack_from("=I", raw, _SNDMSS)
    return out, inn, mss


class _Records:
    """Incremental TLS record splitter for one direction: content types and lengths."""

    def __init__(self) -> None:
        self.buf = b""
        self.records: list[tuple[int, int]] = []  # (content type, record length incl. 5-byte header)
        self.times: list[float] = []  # time.time() when each record was complete
        self.first_handshake: bytes = b""  # body of the first handshake record (ClientHello / ServerHello)

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 5:
            ctype, _ver, length = struct.unpack_from("!BHH", self.buf, 0)
            if len(self.buf) < 5 + length:
                return
            body = self.buf[5:5 + length]
            self.buf = self.buf[5 + length:]
            self.records.append((ctype, 5 + length))
            self.times.append(time.time())
            if ctype == 22 and not self.first_handshake:
                self.first_handshake = body


def _hello_fields(body: bytes) -> tuple[bytes, set[int], int] | None:
    """(session id, extension types, negotiated version from supported_versions or 0) of a hello."""
    try:
        if body[0] not in (1, 2):
            return None
        p = 4 + 2 + 32
        sid_len = body[p]
        sid = body[p + 1:p + 1 + sid_len]
        p += 1 + sid_len
        if body[0] == 1:  # ClientHello: cipher suites and compression methods
            (n,) = struct.unpack_from("!H", body, p)
            p += 2 + n
            p += 1 + body[p]
        else:  # ServerHello: one suite, one compression method
            p += 3
        (ext_total,) = struct.unpack_from("!H", body, p)
        p += 2
        end = p + ext_total
        exts: set[int] = set()
        version = 0
        while p + 4 <= end:
            etype, elen = struct.unpack_from("!HH", body, p)
            exts.add(etype)
            if etype == 43 and body[0] == 2 and elen == 2:
                (version,) = struct.unpack_from("!H", body, p + 4)
            p += 4 + elen
        return sid, exts, version
    except (IndexError, struct.error):
        return None


@dataclass
class Conn:
    opened: float  # time.monotonic()
    opened_wall: float = 0.0  # time.time()
    up_bytes: int = 0  # agent -> broker, TLS record bytes
    down_bytes: int = 0  # broker -> agent
    up_segs: int = 0  # TCP segments the agent sent (incl. SYN, ACKs, FIN)
    down_segs: int = 0  # TCP segments sent to the agent (incl. SYN-ACK, ACKs, FIN)
    mss: int = 0
    closed: float = 0.0
    up: _Records = field(default_factory=_Records)
    down: _Records = field(default_factory=_Records)

    @property
    def ip_bytes(self) -> int:
        return self.up_bytes + self.down_bytes + IP_TCP_OVERHEAD * (self.up_segs + self.down_segs)

    def tls(self) -> tuple[str, bool | None]:
        """(TLS version, resumed?) from the plaintext hellos."""
        ch = _hello_fields(self.up.first_handshake) if self.up.first_handshake else None
        sh = _hello_fields(self.down.first_handshake) if self.down.first_handshake else None
        if sh is None:
            return "?", None
        sid, exts, version = sh
        if version == 0x0304:
            return "1.3", 41 in exts
        return "1.2", bool(ch and sid and ch[0] == sid)


class CountingProxy:
    """Relays 127.0.0.1:<port> to the broker and counts the agent side of every connection."""

    def __init__(self, upstream_port: int, mss: int = CELLULAR_MSS) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.conns: list[Conn] = []
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._pairs: dict[socket.socket, tuple[socket.socket, socket.socket, Conn]] = {}
        self._drop = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="counting-proxy", daemon=True)

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for agent_side in list({a for a, _b, _c in self._pairs.values()}):
            self._finish(agent_side)
        self.listener.close()

    def drop(self) -> None:
        """Cut every open connection (as a carrier does); counts include the FIN exchange."""
        self._drop.set()

    def live(self) -> int:
        with self._lock:
            return sum(1 for c in self.conns if not c.closed)

    def snapshot(self) -> list[Conn]:
        """Connections with their counters; live ones read their TCP_INFO now."""
        with self._lock:
            for agent_side, (a, _b, c) in list(self._pairs.items()):
                if agent_side is a and not c.closed:
                    self._read_segs(a, c)
            return list(self.conns)

    # internals -----------------------------------------------------------------------------
    @staticmethod
    def _read_segs(sock: socket.socket, c: Conn) -> None:
        try:
            out, inn, mss = segs(sock)
        except OSError:
            return
        c.down_segs = out + 1  # the child socket does not count its SYN-ACK
        c.up_segs = inn
        c.mss = mss

    def _finish(self, agent_side: socket.socket) -> None:
        pair = self._pairs.get(agent_side)
        if pair is None:
            return
        a, b, c = pair
        with self._lock:
            if not c.closed:
                self._read_segs(a, c)
                c.closed = time.monotonic()
        for s in (a, b):
            self._pairs.pop(s, None)
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()

    def _accept(self) -> None:
        a, _addr = self.listener.accept()
        try:
            b = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            a.close()
            return
        for s in (a, b):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
        c = Conn(opened=time.monotonic(), opened_wall=time.time())
        with self._lock:
            self.conns.append(c)
        self._pairs[a] = (a, b, c)
        self._pairs[b] = (a, b, c)
        self._sel.register(a, selectors.EVENT_READ)
        self._sel.register(b, selectors.EVENT_READ)

    def _cut(self) -> None:
        self._drop.clear()
        for a in list({a for a, _b, _c in self._pairs.values()}):
            _a, b, c = self._pairs[a]
            try:
                a.shutdown(socket.SHUT_WR)  # our FIN; the agent answers with its own
            except OSError:
                pass
            self._pairs.pop(b, None)
            try:
                self._sel.unregister(b)
            except (KeyError, ValueError):
                pass
            b.close()
            self._pairs[a] = (a, a, c)  # upstream gone: wait for the agent's FIN, then finish

    def _run(self) -> None:
        self._sel.register(self.listener, selectors.EVENT_READ)
        while not self._stop.is_set():
            if self._drop.is_set():
                self._cut()
            for key, _mask in self._sel.select(0.05):
                s = key.fileobj
                if s is self.listener:
                    self._accept()
                    continue
                pair = self._pairs.get(s)  # type: ignore[arg-type]
                if pair is None:
                    continue
                a, b, c = pair
                try:
                    data = s.recv(65536)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._finish(a)
                    continue
                if s is a:
                    c.up_bytes += len(data)
                    c.up.feed(data)
                    if b is not a:
                        b.setblocking(True)
                        b.sendall(data)
                        b.setblocking(False)
                else:
                    c.down_bytes += len(data)
                    c.down.feed(data)
                    a.setblocking(True)
                    a.sendall(data)
                    a.setblocking(False)
        self._sel.close()


def agent_toml(pki: Any, sn: str, port: int, data_dir: Path, *, clock: dict[str, Any] | None = None,
               link: str = "", host: str = "127.0.0.1") -> Path:
    """An agent TOML with every default except where to connect and the terminal's certificate.

    ``pki`` is a ``simulator.local.Pki``; ``link`` adds lines to [link] (e.g. ``keepalive_s = 900``)."""
    tdir = pki.terminal(sn)
    data_dir.mkdir(parents=True, exist_ok=True)
    clock_toml = ""
    if clock:
        clock_toml = f"[clock]\nspeed = {clock['speed']}\nstart = \"{clock['start']}\"\nanchor = {clock['anchor']}\n"
    path = data_dir.parent / f"agent-{sn}.toml"
    path.write_text(f"""
sn = "{sn}"
data_dir = "{data_dir}"
[link]
host = "{host}"
port = {port}
ca_file = "{tdir}/ca.pem"
cert_file = "{tdir}/terminal.pem"
key_file = "{tdir}/terminal.key"
{link}
{clock_toml}""")
    return path
