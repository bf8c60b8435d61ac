"""Network quality without extra cellular bytes.

The round trip is measured on traffic the agent sends anyway: a QoS 1 PUBLISH and the
broker's PUBACK. The kernel's TCP_INFO for the MQTT socket adds the smoothed RTT, its
variance and the retransmission counters, which give loss.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

# Offsets in Linux's struct tcp_info (include/uapi/linux/tcp.h), stable since 2.6/4.x.
_RTT, _RTTVAR, _TOTAL_RETRANS, _SEGS_OUT = 68, 72, 100, 136


@dataclass(frozen=True)
class TcpInfo:
    rtt_ms: float
    rttvar_ms: float
    total_retrans: int
    segs_out: int


def parse_tcp_info(raw: bytes) -> TcpInfo | None:
    """Decode the fields we use from a TCP_INFO blob; None when it is too short."""
    if len(raw) < _SEGS_OUT + 4:
        return None
    rtt, rttvar = struct.unpack_from("=II", raw, _RTT)
    (retrans,) = struct.unpack_from("=I", raw, _TOTAL_RETRANS)
    (segs_out,) = struct.unpack_from("=I", raw, _SEGS_OUT)
    return TcpInfo(rtt / 1000.0, rttvar / 1000.0, retrans, segs_out)


def tcp_info(sock: socket.socket | None) -> TcpInfo | None:
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    except (OSError, ValueError):
        return None
    return parse_tcp_info(raw)


class RttTracker:
    """Round trips measured in the current sample slot, and jitter between consecutive ones."""

    def __init__(self) -> None:
        self._slot: list[float] = []
        self._last: float | None = None
        self._jitter: float | None = None

    def add(self, rtt_ms: float) -> None:
        if self._last is not None:
            d = abs(rtt_ms - self._last)
            self._jitter = d if self._jitter is None else self._jitter + (d - self._jitter) / 16  # RFC 3550
        self._last = rtt_ms
        self._slot.append(rtt_ms)

    def take(self) -> tuple[int | None, int | None]:
        """(worst round trip in this slot, jitter) and start a new slot."""
        worst = max(self._slot) if self._slot else None
        self._slot = []
        return (None if worst is None else int(round(worst)),
                None if self._jitter is None else int(round(self._jitter)))
