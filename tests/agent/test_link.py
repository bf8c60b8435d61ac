"""Reconnect backoff: jittered so a fleet that lost the link together does not come back in step."""

from __future__ import annotations

import random
import statistics

from agent.link import backoff_delay


def test_first_retry_after_a_drop_is_spread() -> None:
    delays = [backoff_delay(0, 5.0, 600.0, random.Random(seed)) for seed in range(3000)]  # 3,000 terminals
    assert min(delays) >= 5.0 and max(delays) <= 10.0
    # no second holds more than a small share of the fleet: spread, not in step
    per_second = [sum(1 for d in delays if s <= d < s + 1) for s in range(5, 10)]
    assert max(per_second) < 0.3 * len(delays)


def test_backoff_grows_to_the_cap_and_stays_random() -> None:
    rng = random.Random(1)
    d3 = [backoff_delay(3, 5.0, 600.0, rng) for _ in range(500)]
    assert 5.0 <= min(d3) and max(d3) <= 80.0 and statistics.pstdev(d3) > 10
    d30 = [backoff_delay(30, 5.0, 600.0, rng) for _ in range(500)]
    assert max(d30) <= 600.0 and statistics.mean(d30) > 200
