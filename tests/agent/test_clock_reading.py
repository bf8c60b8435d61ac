"""The wall-clock and boot-time readings that re-dating relies on are taken as of one instant, even on the
simulator's accelerated clock, where a few real milliseconds between two readings are tens of simulated seconds."""

from __future__ import annotations

import threading
import time

from wire.clock import Clock


def test_now_and_boottime_agree_under_contention() -> None:
    clock = Clock(speed=7200.0, start=1_800_000_000.0, anchor=time.time())
    stop = threading.Event()

    def spin() -> None:  # other threads competing for the interpreter, as in a busy agent host
        while not stop.is_set():
            sum(range(2000))

    threads = [threading.Thread(target=spin) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        gaps = []
        for _ in range(60_000):  # enough that some pairs straddle a thread switch (5 ms: 36 simulated s)
            now, boot = clock.now_and_boottime()
            gaps.append(boot - now)
    finally:
        stop.set()
        for t in threads:
            t.join()
    # boot time minus wall time is a constant of the run; 1 ms of real time is 7.2 simulated seconds
    assert max(gaps) - min(gaps) <= 2 * 7.2 + 1, (min(gaps), max(gaps))


def test_real_clock_reading() -> None:
    now, boot = Clock().now_and_boottime()
    assert abs(now - time.time()) < 1 and abs(boot - time.clock_gettime(time.CLOCK_BOOTTIME)) < 1
