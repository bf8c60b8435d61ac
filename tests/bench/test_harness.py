"""The benchmarks' counting proxy and keep-alive arithmetic, on loopback with real TLS.

A wrong byte or segment count here would make docs/performance.md wrong without anyone noticing.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from benchmarks._harness import CELLULAR_MSS, CountingProxy
from benchmarks.bench_bytes import pings_for_gaps, pings_paho
from tests.fleet import Pki, wait_for


class _Sink:
    """A TCP (optionally TLS) server on loopback that reads everything and can answer."""

    def __init__(self, ctx: ssl.SSLContext | None = None, reply: bytes = b"") -> None:
        self.ctx, self.reply = ctx, reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            if self.ctx is not None:
                conn = self.ctx.wrap_socket(conn, server_side=True)
            first = True
            while data := conn.recv(65536):
                self.received += data
                if first and self.reply:
                    conn.sendall(self.reply)
                first = False
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.timeout(10)
def test_proxy_counts_each_direction_and_cuts_payload_into_cellular_segments() -> None:
    sink = _Sink(reply=b"r" * 100)
    proxy = CountingProxy(sink.port).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as c:
            c.sendall(b"x" * 5000)
            assert c.recv(1000) == b"r" * 100
            wait_for(lambda: len(sink.received) == 5000, 5, "the sink to get everything")
        conn = wait_for(lambda: proxy.snapshot()[0].closed and proxy.snapshot()[0], 5, "the connection to close")
        assert (conn.up_bytes, conn.down_bytes) == (5000, 100)
        assert conn.mss <= CELLULAR_MSS
        # 5000 B at MSS 1388 is 4 data segments, plus SYN, the handshake ACK and a FIN at least
        assert conn.up_segs >= 4 + 3
        # SYN-ACK, the 100 B reply and ACKs of the agent's data
        assert conn.down_segs >= 3
        assert conn.ip_bytes == 5100 + 52 * (conn.up_segs + conn.down_segs)
    finally:
        proxy.stop()
        sink.close()


def _tls_pair(tmp_path: Path, max_version: ssl.TLSVersion) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    pki = Pki(tmp_path / "pki")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.maximum_version = max_version
    server.load_cert_chain(pki.dir / "broker.pem", pki.dir / "broker.key")
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.dir / "ca.pem"))
    return server, client


@pytest.mark.timeout(10)
@pytest.mark.parametrize("version,label", [(ssl.TLSVersion.TLSv1_3, "1.3"), (ssl.TLSVersion.TLSv1_2, "1.2")])
def test_proxy_tells_a_resumed_handshake_from_a_full_one(tmp_path: Path, version: ssl.TLSVersion, label: str) -> None:
    server_ctx, client_ctx = _tls_pair(tmp_path, version)
    sink = _Sink(server_ctx, reply=b"hello")
    proxy = CountingProxy(sink.port).start()
    try:
        session = None
        reused = []
        for _ in range(2):
            raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            with client_ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                tls.sendall(b"ping")
                assert tls.recv(5) == b"hello"  # TLS 1.3 tickets arrive before the reply
                session = tls.session
                reused.append(tls.session_reused)
        conns = wait_for(lambda: len(proxy.snapshot()) == 2 and all(c.closed for c in proxy.snapshot())
                         and proxy.snapshot(), 5, "both connections to close")
        assert reused == [False, True], "the TLS stack itself must resume for this test to mean anything"
        assert [c.tls() for c in conns] == [(label, False), (label, True)]
        assert conns[1].down_bytes < conns[0].down_bytes - 300, "a resumed handshake skips the certificate"
    finally:
        proxy.stop()
        sink.close()


def test_paho_pings_every_keepalive_whatever_else_is_sent() -> None:
    # paho-mqtt 2.2.0 (issue #813): a day connected at keep-alive 660 s is 130 pings, batches or not
    assert pings_paho([86400.0], 660) == 130
    # two reconnects a day: three connections, each starts its own timer
    assert pings_paho([21600.0, 43200.0, 21600.0], 660) == 32 + 65 + 32
    assert pings_paho([659.0, 0.0], 660) == 0


def test_pings_if_traffic_reset_the_timer_one_per_keepalive_of_silence() -> None:
    # default settings: a batch every 720 s, keep-alive 660 s: one ping in every gap
    assert pings_for_gaps([720.0] * 120, 660) == 120
    # batches closer than the keep-alive: no ping at all
    assert pings_for_gaps([600.0] * 144, 660) == 0
    # a long quiet gap: a ping every keep-alive period
    assert pings_for_gaps([1400.0, 659.9, 0.0], 660) == 2
