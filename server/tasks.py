"""Background-task helpers shared by the server's services."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


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
