"""A link emulator: one TCP proxy per simulated unit, on loopback, between its agent and the broker.

The agent connects to its proxy's port instead of the broker's; the proxy relays bytes both ways and
can, at run time,

* **cut** the link (``cut()``): every open connection is aborted (a TCP reset, as when the carrier drops the
  data session) and the listening socket is closed, so reconnection attempts are refused until ``restore()``;
* **delay** it (``set_rtt(rtt_ms)``): every chunk is held before it is passed on, half the added round trip
  in each direction, order kept.

Real milliseconds, not simulated ones
-------------------------------------
The agent times the round trip from PUBLISH to PUBACK with ``time.monotonic()``, i.e. in real milliseconds,
and the server compares that figure with its 400 ms threshold. The simulated clock is accelerated, but a
network round trip is a physical quantity the agent measures, not a duration it reads off its clock; so a
scenario's ``rtt_ms`` is emulated as that many **real** milliseconds. (Scaling it by the clock speed would make
a 650 ms round trip at speed 60 last 39 s real, longer than a whole slot.) The consequence for the player:
a probe must come back within the agent's probe wait (``0.8 x interval / speed`` real seconds, at most 5 s),
so the speed is bounded by the largest ``rtt_ms`` that should still count as ok (see ``simulator.run``).

The loopback path itself adds a small base round trip (TLS, broker, the agent's network thread: about
1-5 ms on an idle machine, more under load). ``set_rtt`` subtracts :data:`BASE_RTT_MS` so that the measured
round trip is close to ``rtt_ms``; a scenario whose ``rtt_ms`` sits within a few milliseconds of the
threshold is a coin toss for any real link and should not be used for exact comparisons.

All proxies share one asyncio loop running in one thread (``LinkHub``), so a thousand units cost one thread.
The public methods are thread-safe and return once the change has taken effect.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

#: Round trip the loopback path adds by itself, subtracted from the emulated delay (milliseconds).
BASE_RTT_MS = 3.0
_CHUNK = 65536


class LinkError(RuntimeError):
    """The link emulator could not do what was asked (port in use, loop stopped)."""


class LinkHub:
    """The event loop (in its own thread) that runs every unit's proxy."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="link-hub", daemon=True)
        self._started = threading.Event()
        self.proxies: list[LinkProxy] = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()

    def start(self) -> LinkHub:
        self._thread.start()
        if not self._started.wait(5):
            raise LinkError("link emulator loop did not start")
        return self

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        """Run ``coro`` on the hub's loop and wait for its result."""
        if not self._thread.is_alive():
            coro.close()
            raise LinkError("link emulator loop is not running")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def proxy(self, upstream_host: str, upstream_port: int, name: str = "") -> LinkProxy:
        """A new proxy listening on a free loopback port, relaying to ``upstream_host:upstream_port``."""
        p = LinkProxy(self, upstream_host, upstream_port, name)
        self.call(p._listen())
        self.proxies.append(p)
        return p

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        for p in self.proxies:
            try:
                self.call(p._shutdown(), timeout=5)
            except (LinkError, TimeoutError, OSError) as err:
                log.warning("proxy %s did not close cleanly: %s", p.name, err)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class _DelayLine:
    """Chunks held back before they are written, in the order they were read (FIFO even if the delay shrinks)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.queue: deque[tuple[float, bytes]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.done = asyncio.Event()
        self.done.set()

    @property
    def empty(self) -> bool:
        return not self.queue

    def put(self, data: bytes, delay: float) -> None:
        due = self.loop.time() + delay
        if self.queue:
            due = max(due, self.queue[-1][0])
        self.queue.append((due, data))
        self.done.clear()
        if self.timer is None:
            self.timer = self.loop.call_at(due, self._release)

    def _release(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if not self.writer.is_closing():
                self.writer.write(data)
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._release)
        else:
            self.done.set()

    async def flushed(self) -> None:
        await self.done.wait()


class _Pipe:
    """One relayed connection: two directions, each with its own delay line."""

    def __init__(self, proxy: LinkProxy, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.down_r, self.down_w = down_r, down_w
        self.up_w: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        try:
            up_r, self.up_w = await asyncio.open_connection(self.proxy.upstream_host, self.proxy.upstream_port)
        except OSError as err:
            log.info("%s: broker unreachable: %s", self.proxy.name, err)
            self.abort()
            return
        self.tasks = [
            asyncio.ensure_future(self._relay(self.down_r, self.up_w)),
            asyncio.ensure_future(self._relay(up_r, self.down_w)),
        ]
        await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        self.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = _DelayLine(writer)
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                self.proxy.bytes_relayed += len(data)
                delay = self.proxy.one_way_delay
                if delay <= 0 and line.empty:
                    writer.write(data)
                    await writer.drain()
                else:
                    line.put(data, delay)  # behind what is held back already: order is kept
        except (OSError, asyncio.IncompleteReadError):
            pass
        # let delayed chunks go out before the other side is told the stream ended
        await line.flushed()

    def abort(self) -> None:
        for t in self.tasks:
            t.cancel()
        for w in (self.down_w, self.up_w):
            if w is not None and not w.is_closing():
                w.transport.abort()  # RST: the peer sees the connection drop at once
        self.proxy._pipes.discard(self)


class LinkProxy:
    """The link of one unit: relays its agent's TCP connection to the broker; can be cut or delayed."""

    def __init__(self, hub: LinkHub, upstream_host: str, upstream_port: int, name: str = "") -> None:
        self.hub = hub
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.name = name or f"link->{upstream_port}"
        self.port = 0
        self.one_way_delay = 0.0  # real seconds
        self.rtt_ms = 0
        self.up = True
        self.connections = 0
        self.cuts = 0
        self.bytes_relayed = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[_Pipe] = set()

    # control (thread-safe) -----------------------------------------------------------------------
    def cut(self) -> None:
        """Drop every connection and refuse new ones until :meth:`restore`."""
        self.hub.call(self._cut())

    def restore(self) -> None:
        """Accept connections again (on the same port)."""
        self.hub.call(self._restore())

    def set_rtt(self, rtt_ms: float) -> None:
        """Add delay so the round trip through this link is about ``rtt_ms`` real milliseconds (0: none)."""
        self.rtt_ms = int(rtt_ms)
        self.one_way_delay = max(0.0, float(rtt_ms) - BASE_RTT_MS) / 2000.0 if rtt_ms > 0 else 0.0

    # the loop side ---------------------------------------------------------------------------------
    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError as err:
            sock.close()
            raise LinkError(f"{self.name}: cannot listen on 127.0.0.1:{self.port}: {err}") from err
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._accept, sock=sock, backlog=64)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections += 1
        pipe = _Pipe(self, reader, writer)
        self._pipes.add(pipe)
        await pipe.run()

    async def _cut(self) -> None:
        self.up = False
        self.cuts += 1
        if self._server is not None:
            self._server.close()
            self._server = None
        for pipe in list(self._pipes):
            pipe.abort()

    async def _restore(self) -> None:
        self.up = True
        if self._server is None:
            deadline = time.monotonic() + 5
            while True:
                try:
                    await self._listen()
                    return
                except LinkError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)

    async def _shutdown(self) -> None:
        await self._cut()
