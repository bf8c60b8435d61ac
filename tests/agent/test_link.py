"""Reconnect backoff: jittered so a fleet that lost the link together does not come back in step."""

from __future__ import annotations

import random
import ssl
import statistics

from agent.link import Link


def make_link(seed: int) -> Link:
    return Link("HN00000001", "localhost", 8883, ssl.create_default_context(), reconnect_min=5.0,
                reconnect_max=600.0, rng=random.Random(seed))


def test_first_retry_after_a_drop_is_spread() -> None:
    delays = [make_link(seed)._backoff() for seed in range(3000)]  # 3,000 terminals, same outage
    assert min(delays) >= 5.0 and max(delays) <= 10.0
    # no second has more than a small share of the fleet: spread, not in step
    per_second = [sum(1 for d in delays if s <= d < s + 1) for s in range(5, 10)]
    assert max(per_second) < 0.3 * len(delays)


def test_backoff_grows_to_the_cap_and_stays_random() -> None:
    link = make_link(1)
    link.failures = 3
    d3 = [link._backoff() for _ in range(500)]
    assert 5.0 <= min(d3) and max(d3) <= 80.0 and statistics.pstdev(d3) > 10
    link.failures = 30
    d30 = [link._backoff() for _ in range(500)]
    assert max(d30) <= 600.0 and statistics.mean(d30) > 200
