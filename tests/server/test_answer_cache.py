"""server/registry/pages.py's AnswerCache on its own (asyncio, no app): requests for one page at once make it once;
a failure is handed to those waiting and not kept; a page whose first asker went away is still made for the
others."""

from __future__ import annotations

import asyncio

import pytest

from server.registry.pages import AnswerCache


async def test_requests_for_one_page_at_once_make_it_once() -> None:
    cache, made = AnswerCache(5), []

    async def make() -> bytes:
        made.append(1)
        await asyncio.sleep(0.05)
        return b"page"

    assert await asyncio.gather(*(cache.answer("k", make) for _ in range(10))) == [b"page"] * 10
    assert len(made) == 1 and (cache.misses, cache.hits) == (1, 9)


async def test_a_failure_reaches_those_waiting_and_is_not_kept() -> None:
    cache, calls = AnswerCache(5), []

    async def fail() -> bytes:
        calls.append(1)
        await asyncio.sleep(0.02)
        raise RuntimeError("database gone")

    got = await asyncio.gather(cache.answer("k", fail), cache.answer("k", fail), return_exceptions=True)
    assert [str(g) for g in got] == ["database gone"] * 2 and len(calls) == 1

    async def ok() -> bytes:
        return b"page"

    assert await cache.answer("k", ok) == b"page"  # made again


async def test_a_page_whose_first_asker_went_away_still_reaches_the_others() -> None:
    cache = AnswerCache(5)

    async def slow() -> bytes:
        await asyncio.sleep(0.2)
        return b"page"

    first = asyncio.create_task(cache.answer("k", slow))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(cache.answer("k", slow))
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == b"page"
