"""The units API of the spine (real app, lifespan, SQLite file, ingest code path): list with filter, sort and
pagination; detail with the registry's fields; OpenAPI at /docs; raw samples kept ``retention_days``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.app import purge_raw_samples
from server.settings import parse
from tests.server.conftest import at, make_api, sample
from wire.messages import Event


async def test_list_filters_sorts_and_pages(tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        # 1 and 3 hold a broker session, 2 lost its own; then heard from in the order 3, 1, 2 (last_seen is the
        # arrival time)
        storage = api.app.state.storage
        for sn in ("HN20000001", "HN20000003"):
            await storage.set_state(sn, True, at("2025-03-03 11:00"), "", "0.1.0")
        await storage.set_state("HN20000002", False, at("2025-03-03 11:00"), "lost", "0.1.0")
        await asyncio.sleep(0.01)
        for k in (3, 1, 2):
            await api.feed(f"HN2000000{k}", [sample(1, at("2025-03-03 11:00"))])
            await asyncio.sleep(0.01)
        await api.feed("HN30000001", [sample(1, at("2025-03-03 11:00"))])

        async def sns(**params: str) -> tuple[int, list[str]]:
            r = await api.get("/api/v1/units", role="viewer", **params)
            assert r.status_code == 200, r.text
            body = r.json()
            return body["total"], [u["sn"] for u in body["items"]]

        assert await sns() == (4, ["HN20000001", "HN20000002", "HN20000003", "HN30000001"])
        assert await sns(q="HN2000") == (3, ["HN20000001", "HN20000002", "HN20000003"])
        assert await sns(q="HN2000", order="desc") == (3, ["HN20000003", "HN20000002", "HN20000001"])
        assert await sns(q="HN2000", sort="last_seen") == (3, ["HN20000003", "HN20000001", "HN20000002"])
        assert await sns(q="HN2000", sort="last_seen", limit="1", offset="1") == (3, ["HN20000001"])
        assert await sns(q="HN2000", limit="2", offset="2") == (3, ["HN20000003"])
        assert await sns(online="true") == (2, ["HN20000001", "HN20000003"])
        assert await sns(online="false") == (2, ["HN20000002", "HN30000001"])
        bad = await api.get("/api/v1/units", sort="colour")
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "sort"
        assert (await api.client.get("/api/v1/units")).status_code == 401, "no token, no answer"


async def test_detail_has_the_registry_fields(tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        inventory = Event(seq=2, ts=at("2025-03-03 11:00"), kind="inventory", data={
            "agent": "0.1.0", "components": {"terminal_app": "3.2.1", "os_image": "2026.10-r4"}})
        await api.feed("HN20000009", [sample(1, at("2025-03-03 11:00"), cpu=7.5, uptime_s=600)], [inventory])
        await api.feed("HN20000009", [sample(3, at("2025-03-03 11:01"), cpu=9.5, uptime_s=660)])
        await api.app.state.storage.set_state("HN20000009", True, at("2025-03-03 11:00"), "", "0.1.0")
        unit = (await api.get("/api/v1/units/HN20000009", role="viewer")).json()
        assert unit["sn"] == "HN20000009" and unit["online"] is True
        assert unit["first_seen"] <= unit["last_seen"]  # ISO 8601 with the fleet's offset (docs/api.md)
        assert unit["latest"]["ts"] == "2025-03-03T11:01:00+08:00" and unit["latest"]["cpu"] == 9.5, "newest sample"
        assert unit["latest"]["boot_time"] == "2025-03-03T10:50:00+08:00"
        assert unit["inventory"]["components"] == {"terminal_app": "3.2.1", "os_image": "2026.10-r4"}
        samples = (await api.get("/api/v1/units/HN20000009/samples", limit=1)).json()["items"]
        assert [s["cpu"] for s in samples] == [9.5]
        assert (await api.get("/api/v1/units/HN29999999")).status_code == 404


async def test_openapi_is_served_at_docs(tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        docs = await api.client.get("/docs")
        assert docs.status_code == 200 and "openapi.json" in docs.text
        spec = (await api.client.get("/openapi.json")).json()
        assert {"/api/v1/units", "/api/v1/units/{sn}", "/api/v1/units/{sn}/samples", "/healthz"} <= set(spec["paths"])


async def test_raw_samples_are_kept_retention_days(tmp_path: Path) -> None:
    assert parse({}).retention_days == 14, "the default"
    async with make_api(tmp_path, extra={"retention_days": 14}) as api:
        # the leader's own hourly pass (PostgreSQL: started when this process took the lead) would otherwise purge
        # the old samples as soon as they are fed, racing the passes counted here
        background = getattr(api.app.state, "retention_task", None)
        if background is not None:
            background.cancel()
        now = at("2025-03-03 12:00")
        old = [sample(k, now - 15 * 86400 + 60 * k) for k in range(3)]  # 15 days old
        edge = [sample(10, now - 13 * 86400)]  # 13 days old: kept
        await api.feed("HN20000010", old + edge)
        api.clock.t = now
        assert await api.app.state.storage.count_samples() == 4
        assert await purge_raw_samples(api.app) == 3
        items = (await api.get("/api/v1/units/HN20000010/samples")).json()["items"]
        assert [s["ts"] for s in items] == ["2025-02-18T12:00:00+08:00"]  # 13 days before
        api.clock.t = now + 2 * 86400  # two days on, the 13-day-old sample is past 14 days
        assert await purge_raw_samples(api.app) == 1
        assert await api.app.state.storage.count_samples() == 0


async def test_tokens_are_stored_hashed(tmp_path: Path) -> None:
    import hashlib

    from tests.backend import db_dump, db_rows, storage_url

    async with make_api(tmp_path) as api:
        assert (await api.get("/api/v1/units", role="viewer")).status_code == 200
        rows = db_rows(storage_url(tmp_path), "SELECT hash, name, role FROM tokens")
        dump = db_dump(storage_url(tmp_path))
        for role, token in api.tokens.items():
            assert token not in dump, "a token in clear in the database"
            assert (hashlib.sha256(token.encode()).hexdigest(), f"t-{role}", role) in rows
