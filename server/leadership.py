"""Which of several server processes on one PostgreSQL runs the fleet's background work.

Every process on PostgreSQL ingests (its share of the MQTT shared subscription), recounts the late hours its own
commits touched, handles the command results it receives and serves the API. One of them, the **leader**, also
runs what must run once across the fleet: closing hours for every unit (roll-ups), alerts and webhooks, the
command dispatcher and job waves, retention. The leader is whoever holds a PostgreSQL advisory lock
(``storage.lead()``); every process tries every ``poll_s``; when the leader's connection ends (the process died,
its host is gone) PostgreSQL releases the lock and the next try of another process takes over, which then starts
that work. A leader that finds it lost its lock stops itself at once (its supervisor restarts it as a follower),
so two processes never both believe they lead. docs/deployment-large.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


class Leadership:
    def __init__(self, storage: Any, on_lead: list[Callable[[], Awaitable[None]]], poll_s: float = 2.0) -> None:
        self.storage = storage
        self.on_lead = on_lead
        self.poll_s = poll_s
        self.leader = False
        self.since = 0.0

    async def step(self) -> bool:
        """One try: become (or stay) the leader, starting the leader's work the first time. False when this
        process must stop (it led and lost the lock)."""
        try:
            lead = await self.storage.lead()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - counted as not leading; said in the log
            log.exception("leadership check failed")
            lead = False
        if lead and not self.leader:
            self.leader = True
            log.warning("process %d leads: starting roll-ups, alerts, command dispatch and retention", os.getpid())
            for start in self.on_lead:
                await start()
        elif self.leader and not lead and not await self._still_mine():
            log.error("process %d lost the leadership (its database connection broke): stopping, so that "
                      "the background work never runs twice", os.getpid())
            os.kill(os.getpid(), signal.SIGTERM)
            return False
        return True

    async def _still_mine(self) -> bool:
        """A failed check may be a broken connection rather than a lost lock: ask once more on a new one. If this
        process gets the lock again, nobody else held it (a leader keeps it until it dies), so it still leads."""
        await asyncio.sleep(1.0)
        try:
            return bool(await self.storage.lead())
        except Exception:  # noqa: BLE001 - not leading
            return False

    async def run(self) -> None:
        while await self.step():
            await asyncio.sleep(self.poll_s)
