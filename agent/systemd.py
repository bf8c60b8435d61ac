"""Minimal sd_notify: READY=1 at start, WATCHDOG=1 only on real progress (a sample taken and stored)."""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError:
        return False


def extend_watchdog(min_s: float) -> bool:
    """Raise the service's watchdog timeout to at least ``min_s`` seconds when the unit's ``WatchdogSec`` is shorter.

    The watchdog is fed once per sample, so with a long sampling interval (up to an hour) the unit's 300 s would
    kill a healthy agent between two samples. Never lowers it; does nothing outside systemd."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) >= min_s * 1_000_000:
        return False
    return notify(f"WATCHDOG_USEC={int(min_s * 1_000_000)}")
