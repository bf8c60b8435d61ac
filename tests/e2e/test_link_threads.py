"""Only the link thread ever writes the TLS socket, whoever publishes (concurrent SSL_write corrupts records)."""

from __future__ import annotations

import threading
import time

from agent.link import Link, tls_context
from tests.fleet import wait_for


class RecordingSocket:
    """The real connected SSL socket, recording which thread calls send()."""

    def __init__(self, sock) -> None:  # type: ignore[no-untyped-def]
        self._sock = sock
        self.senders: set[int] = set()

    def send(self, data):  # type: ignore[no-untyped-def]
        self.senders.add(threading.get_ident())
        return self._sock.send(data)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._sock, name)


def test_only_the_link_thread_writes_the_socket(pki, broker) -> None:
    t = pki.terminal("HN00130001")
    ctx = tls_context(t / "ca.pem", t / "terminal.pem", t / "terminal.key")
    rtts: list[float] = []
    link = Link("HN00130001", "localhost", broker.port, ctx, keepalive=30, reconnect_min=0.2, reconnect_max=1.0,
                on_rtt=rtts.append)
    link.start()
    try:
        assert link.wait_connected(10)
        rec = RecordingSocket(link._client._sock)
        link._client._sock = rec
        link_thread = link._thread.ident

        def hammer() -> None:
            for _ in range(300):
                while not link.probe():  # the in-flight window is full: wait a little
                    time.sleep(0.001)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        wait_for(lambda: len(rtts) >= 1200, 60, "every probe acknowledged")
        assert rec.senders == {link_thread}, "publishers' threads wrote the TLS socket themselves"
        assert link.connects == 1, "the session never broke"
    finally:
        link.stop()
    # (the broker fixture's readiness probe, a bare TCP connect, logs a "Protocol error" of its own for
    # client <unknown>; only our client's lines matter)
    log = broker.log.read_text()
    assert "bad record mac" not in log and "HN00130001 disconnected: Protocol error" not in log, log[-2000:]
