"""A server stops when asked, even when a background loop's wake-up and the stop arrive together.

Python 3.11's ``asyncio.wait_for`` returns the inner result and drops the cancellation when both are ready in the
same turn of the loop (CPython gh-86296, fixed in 3.12). The roll-up pass, the command dispatcher, the webhook sender
and the certificate renewals each waited for their wake-up event that way, so a stop that came as ingest woke one
of them left the task running and the shutdown (``lifespan`` exit) waiting for it for ever: seen as tests hanging
at random on a loaded box, and it would hang a ``systemctl stop`` the same way."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.server.conftest import make_api


async def test_a_loop_woken_as_it_is_cancelled_still_stops(tmp_path: Path) -> None:
    async with make_api(tmp_path, extra={"alerts": {"webhook_url": "http://127.0.0.1:9/hook"}}) as api:
        state = api.app.state
        loops = {
            "availability-rollups": state.availability._wake,
            "commands-dispatcher": state.commands._wake,
            "alerts-webhook": state.alerts._webhook_wake,
        }
        tasks = {t.get_name(): t for t in asyncio.all_tasks() if t.get_name() in loops}
        assert set(tasks) == set(loops), tasks
        await asyncio.sleep(0.2)  # every loop is in its wait
        for name, wake in loops.items():
            wake.set()  # woken and cancelled in the same turn of the event loop
            tasks[name].cancel()
        done, running = await asyncio.wait(tasks.values(), timeout=5)
        assert not running, f"still running after a cancel: {sorted(t.get_name() for t in running)}"
