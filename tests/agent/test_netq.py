"""Network quality: TCP_INFO decoding and the round-trip tracker."""

from __future__ import annotations

import socket
import struct

from agent.netq import RttTracker, parse_tcp_info, tcp_info


def test_parse_tcp_info_literal() -> None:
    raw = bytearray(232)
    struct.pack_into("=II", raw, 68, 123_456, 7_890)  # rtt, rttvar in microseconds
    struct.pack_into("=I", raw, 100, 3)  # total retransmits
    struct.pack_into("=I", raw, 136, 1000)  # segments out
    info = parse_tcp_info(bytes(raw))
    assert info is not None
    assert info.rtt_ms == 123.456 and info.rttvar_ms == 7.89 and info.total_retrans == 3 and info.segs_out == 1000
    assert parse_tcp_info(b"\x00" * 50) is None


def test_tcp_info_of_a_real_socket() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    c = socket.create_connection(srv.getsockname())
    s, _ = srv.accept()
    c.sendall(b"x" * 1000)
    s.recv(1000)
    info = tcp_info(c)
    assert info is not None and info.segs_out >= 1 and info.rtt_ms >= 0
    for x in (c, s, srv):
        x.close()


def test_rtt_tracker_worst_in_slot_and_jitter() -> None:
    t = RttTracker()
    assert t.take() == (None, None)
    for v in (100, 120, 90):
        t.add(v)
    worst, jitter = t.take()
    assert worst == 120 and jitter is not None and jitter > 0
    assert t.take()[0] is None, "a new slot starts empty"
