"""Background-task helpers shared by the server's services."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable

log = logging.getLogger("posfleet.server")

_BESIDE: dict[Hashable, asyncio.Future[None]] = {}  # writes under way beside requests (referenced until done)


def beside(key: Hashable, write: Callable[[], Awaitable[object]], failed: str) -> bool:
    """Run ``write()`` beside the request instead of before its answer: a record (a token's last use, a session's
    sliding expiry), not a condition. On SQLite a write waits for the lock behind ingest's commits (1.8-1.9 s at
    200,000 terminals; decision 037). One write per ``key`` at a time (False: one is under way); a failure is
    logged as ``failed`` with the error, never raised."""
    if key in _BESIDE:
        return False

    async def run() -> None:
        try:
            await write()
        except Exception as err:
            log.warning("%s: %s", failed, err)

    task = asyncio.ensure_future(run())
    _BESIDE[key] = task
    task.add_done_callback(lambda _t: _BESIDE.pop(key, None))
    return True


async def beside_done() -> None:
    """Wait for the writes under way beside requests (tests; a shutdown that wants them landed)."""
    while _BESIDE:
        await asyncio.gather(*list(_BESIDE.values()))


async def cancel(tasks: Iterable[asyncio.Task[object] | None]) -> None:
    """Cancel the tasks and wait until each has finished."""
    live = [t for t in tasks if t is not None]
    for t in live:
        t.cancel()
    for t in live:
        try:
            await t
        except asyncio.CancelledError:
            pass
