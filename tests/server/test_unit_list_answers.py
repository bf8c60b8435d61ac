"""The registry's unit lists answered again for ``[api] list_cache_s`` seconds (decision 038): a page asked again
is the answer kept, its units' live state at most that old; a registry write, from this process or any other,
shows at once; no answer is handed to a caller of another scope; 0 turns it off. The real app, its SQLite file
or PostgreSQL (tests/backend.py), and a second storage connection standing in for another server process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from server.auth import create_token
from server.storage import open_storage
from tests.server.conftest import Api, at, make_api, sample


async def _fleet(api: Api) -> None:
    for code, county in (("W001", "秀英区"), ("L001", "龙华区")):
        r = await api.req("PUT", f"/api/v1/institutions/{code}", json={"name": code, "county": county})
        assert r.status_code == 200, r.text
    for sn, inst in (("HN00090001", "W001"), ("HN00090002", "W001"), ("HN00090003", "L001")):
        r = await api.req("PUT", f"/api/v1/registry/units/{sn}", json={"institution": inst})
        assert r.status_code == 200, r.text
    await api.feed("HN00090001", [sample(0, at("2025-03-03 11:50"))])


async def _heard_again(api: Api) -> None:
    """HN00090001 reports again: its last seen (the time the server received it) moves, nothing else."""
    await asyncio.sleep(0.01)
    await api.feed("HN00090001", [sample(1, at("2025-03-03 11:55"))])


def _seen(listing: dict, sn: str) -> str:
    return next(u["last_seen"] for u in listing["items"] if u["sn"] == sn)


def _kept(metrics: str) -> float:
    line = next(x for x in metrics.splitlines() if x.startswith('posfleet_api_unit_list_answers_total{answer="kept"}'))
    return float(line.split()[-1])


async def test_a_list_asked_again_is_the_answer_kept_and_a_registry_write_anywhere_shows_at_once(
        tmp_path: Path) -> None:
    async with make_api(tmp_path, {"api": {"list_cache_s": 30}}) as api:
        await _fleet(api)
        first = await api.get("/api/v1/registry/units", county="秀英区")
        assert first.status_code == 200
        heard = _seen(first.json(), "HN00090001")
        await _heard_again(api)  # live state only
        again = await api.get("/api/v1/registry/units", county="秀英区")
        assert again.content == first.content  # within list_cache_s: the answer kept
        assert _kept((await api.get("/metrics")).text) == 1

        # another server process edits the registry (its own connection to the database): seen at the next list
        other = open_storage(api.app.state.settings.storage.url)
        await other.open()
        try:
            await other.change_status([("HN00090002", at("2025-03-03 11:56"), "in_repair", "engineer", "screen")])
        finally:
            await other.close()
        fresh = (await api.get("/api/v1/registry/units", county="秀英区")).json()
        assert {u["sn"]: u["status"] for u in fresh["items"]} == {"HN00090001": "in_service", "HN00090002": "in_repair"}
        assert _seen(fresh, "HN00090001") > heard  # made again: the live state of now

        # and this process's own write
        assert (await api.req("PUT", "/api/v1/registry/units/HN00090002", json={"institution": "L001"})).status_code == 200
        assert [u["sn"] for u in (await api.get("/api/v1/registry/units", county="秀英区")).json()["items"]] == [
            "HN00090001"]


async def test_a_kept_list_is_never_handed_to_a_caller_of_another_scope(tmp_path: Path) -> None:
    async with make_api(tmp_path, {"api": {"list_cache_s": 30}}) as api:
        await _fleet(api)
        province = (await api.get("/api/v1/registry/units", role="viewer")).json()
        assert [u["sn"] for u in province["items"]] == ["HN00090001", "HN00090002", "HN00090003"]
        longhua = await create_token(api.app.state.storage, "longhua", "viewer", scope="county:龙华区")
        r = await api.client.get("/api/v1/registry/units", headers={"Authorization": f"Bearer {longhua}"})
        assert r.status_code == 200 and [u["sn"] for u in r.json()["items"]] == ["HN00090003"]


async def test_live_state_is_at_most_list_cache_s_old_and_zero_answers_every_time(tmp_path: Path) -> None:
    async with make_api(tmp_path, {"api": {"list_cache_s": 1}}) as api:
        await _fleet(api)
        heard = _seen((await api.get("/api/v1/registry/units")).json(), "HN00090001")
        await _heard_again(api)
        took = time.monotonic()
        while _seen((await api.get("/api/v1/registry/units")).json(), "HN00090001") == heard:
            assert time.monotonic() - took < 1 + 2, "a kept answer outlived list_cache_s (2 s for a slow request)"
            await asyncio.sleep(0.05)
    async with make_api(tmp_path / "off", {"api": {"list_cache_s": 0}}) as api:
        await _fleet(api)
        heard = _seen((await api.get("/api/v1/registry/units")).json(), "HN00090001")
        await _heard_again(api)
        assert _seen((await api.get("/api/v1/registry/units")).json(), "HN00090001") > heard
        assert _kept((await api.get("/metrics")).text) == 0
