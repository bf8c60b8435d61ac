"""The link emulator: a real TCP proxy on loopback that relays, cuts (refuses) and delays, as an agent sees it."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from simulator.link import BASE_RTT_MS, LinkHub, LinkProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def upstream() -> Iterator[int]:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def link(upstream: int) -> Iterator[LinkProxy]:
    hub = LinkHub().start()
    yield hub.proxy("127.0.0.1", upstream, name="test")
    hub.stop()


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _round_trip(s: socket.socket, payload: bytes = b"ping") -> float:
    t0 = time.monotonic()
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(65536)
        assert chunk, "connection closed"
        got += chunk
    assert got == payload
    return (time.monotonic() - t0) * 1000


def test_relays_both_ways(link: LinkProxy) -> None:
    with _connect(link.port) as s:
        assert _round_trip(s, b"x" * 200_000) < 2000
        assert _round_trip(s) < 50
    assert link.connections == 1


def test_cut_drops_the_connection_and_refuses_new_ones_until_restored(link: LinkProxy) -> None:
    s = _connect(link.port)
    _round_trip(s)
    link.cut()
    with pytest.raises(OSError):  # reset, or an orderly close seen as an empty read
        s.sendall(b"after the cut")
        if not s.recv(10):
            raise ConnectionResetError("closed")
    s.close()
    with pytest.raises(ConnectionRefusedError):
        _connect(link.port)
    link.restore()
    with _connect(link.port) as s2:  # same port as before, as the agent's config names it
        assert _round_trip(s2) < 50


@pytest.mark.parametrize("rtt_ms", [120, 650])
def test_delay_makes_the_round_trip_rtt_ms_real_milliseconds(link: LinkProxy, rtt_ms: int) -> None:
    with _connect(link.port) as s:
        _round_trip(s)
        link.set_rtt(rtt_ms)
        measured = sorted(_round_trip(s) for _ in range(3))
        assert rtt_ms - BASE_RTT_MS - 2 <= measured[0], measured
        assert measured[1] <= rtt_ms + 60, measured
        link.set_rtt(0)
        assert _round_trip(s) < 50


def test_order_is_kept_when_the_delay_shrinks(link: LinkProxy) -> None:
    with _connect(link.port) as s:
        link.set_rtt(400)
        s.sendall(b"first.")
        time.sleep(0.05)
        link.set_rtt(0)  # the next chunk must not overtake the one still held back
        s.sendall(b"second.")
        got = b""
        deadline = time.monotonic() + 3
        while len(got) < 13 and time.monotonic() < deadline:
            got += s.recv(100)
        assert got == b"first.second."
