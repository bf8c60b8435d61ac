"""The registry's unit lists kept answered for a few seconds in each API process (decision 038).

Fifty dashboards open a county's list, a status within it, the wired units by last seen: the same pages again and
again. Each costs a 50-unit join, its JSON and its times (2-3 ms of CPU, 5 on PostgreSQL with its own share); an
answer kept ``[api] list_cache_s`` seconds is handed out again for the cost of its HTTP.

What an answer may and may not miss:

* **A registry or institution write shows at once**, in every process: the key holds ``registry_version`` (read
  from the database at every request, as the kept lists read it), which every such write moves.
* **A unit's live state** (last seen, online, agent version) may be up to ``list_cache_s`` older than the
  database. Terminals report every 10 minutes and "online" means a message within 33; a few seconds more is not
  seen. 0 turns the keeping off.
* The key holds the caller's scope and role, and the whole query: no answer crosses a scope.
* Requests for one page that arrive while it is being made wait for that answer instead of making it again; it is
  made to the end even if the request that started it goes away.
* At most :data:`ENTRIES` answers are kept (least recently used first out): a page of 50 is ~35 KB.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

ENTRIES = 256


class AnswerCache:
    def __init__(self, seconds: float, entries: int = ENTRIES) -> None:
        self.seconds = seconds
        self.entries = entries
        self._kept: OrderedDict[Hashable, tuple[float, asyncio.Future[bytes]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def answer(self, key: Hashable, make: Callable[[], Awaitable[bytes]]) -> bytes:
        """The answer kept for ``key`` if it is younger than ``seconds`` (or being made), else ``make()``'s,
        kept. ``make()`` runs as a task of its own, shared by everyone asking meanwhile (as the registry store's
        shared reads do): the request that started it may go away, the others still get it. A failure is not
        kept: whoever waited for it gets it, the next request makes the answer again."""
        if self.seconds <= 0:
            return await make()
        now = time.monotonic()
        kept = self._kept.get(key)
        if kept is not None and kept[0] > now:
            self._kept.move_to_end(key)
            self.hits += 1
            return await asyncio.shield(kept[1])
        self.misses += 1
        made = asyncio.ensure_future(make())
        self._kept[key] = (now + self.seconds, made)  # its age counts from before the reads that make it
        self._kept.move_to_end(key)
        while len(self._kept) > self.entries:
            self._kept.popitem(last=False)

        def failed(task: asyncio.Future[bytes]) -> None:
            if (task.cancelled() or task.exception() is not None) and self._kept.get(key, (0.0, None))[1] is task:
                del self._kept[key]

        made.add_done_callback(failed)
        return await asyncio.shield(made)
