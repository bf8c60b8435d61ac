"""``/metrics`` on the real server process over real HTTP (decision 027): open to loopback, and behind the shipped
nginx (which sets X-Forwarded-For to the client's address) a client from elsewhere needs a token."""

from __future__ import annotations

import httpx


def test_metrics_behind_the_proxy_need_a_token_from_outside(server) -> None:  # noqa: ANN001
    url = f"{server.url}/metrics"
    local = httpx.get(url, timeout=10)
    assert local.status_code == 200 and "posfleet_broker_connected 1.0" in local.text
    # what deploy/nginx/posfleet.conf sends for a client on the bureau's network
    outside = {"X-Forwarded-For": "203.0.113.5", "X-Forwarded-Proto": "https"}
    r = httpx.get(url, headers=outside, timeout=10)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(url, headers={**outside, "Authorization": f"Bearer {server.token('viewer')}"}, timeout=10)
    assert r.status_code == 200 and "posfleet_ingest_lag_seconds" in r.text
