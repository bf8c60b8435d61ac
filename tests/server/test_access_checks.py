"""Token checks made at the same moment share one statement (decision 042), through the real app: every request
still gets the answer its own token deserves, a token another process revoked is refused at once, and
``/metrics`` says how many checks were made and how many statements answered them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from server.auth import create_token
from server.storage import open_storage
from tests.server.conftest import make_api


def _count(metrics: str, what: str) -> float:
    line = next(x for x in metrics.splitlines() if x.startswith(f'posfleet_api_access_checks_total{{count="{what}"}}'))
    return float(line.split()[-1])


async def test_requests_at_once_each_get_their_own_tokens_answer_and_the_metric_counts_the_checks(
        tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        storage = api.app.state.storage
        gone = await create_token(storage, "gone", "viewer")
        other = open_storage(api.app.state.settings.storage.url)  # another server process
        await other.open()
        try:
            assert await other.revoke_tokens("gone", time.time()) == (1, 0)
        finally:
            await other.close()
        before = (await api.get("/metrics")).text
        answers = await asyncio.gather(*[
            api.client.get("/api/v1/registry/units",
                           headers={"Authorization": f"Bearer {gone if k % 3 == 0 else api.tokens['viewer']}"})
            for k in range(30)])
        assert [r.status_code for r in answers] == [401 if k % 3 == 0 else 200 for k in range(30)]
        assert all(r.json()["detail"] == "unknown or revoked token" for r in answers[::3])
        after = (await api.get("/metrics")).text
        checks = _count(after, "checks") - _count(before, "checks")
        statements = _count(after, "statements") - _count(before, "statements")
        # (the second /metrics may check its own token); the thirty at once shared a statement or a few
        assert 30 <= checks <= 31 and 1 <= statements <= 10, (checks, statements)
