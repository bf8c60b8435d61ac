"""Registry list: SN search by prefix (indexed) or substring, totals, newest report first (real app and SQLite)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.server.conftest import at, make_api, sample


async def test_search_prefix_contains_and_last_seen_order(tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        assert (await api.req("PUT", "/api/v1/institutions/V001", json={"name": "卫生室", "county": "秀英区"})).status_code == 200
        for k in range(1, 8):
            body = {"institution": "V001", "insurance_sn": f"YB9{k:03d}", "link_type": "wired" if k % 2 else "4g_vpdn"}
            assert (await api.req("PUT", f"/api/v1/registry/units/HN1000000{k}", json=body)).status_code == 200
        # heard from in the order 3, 1, 5 (5 newest; arrival time is the wall clock); 7 never
        for sn in ("HN10000003", "HN10000001", "HN10000005"):
            await api.feed(sn, [sample(1, at("2025-03-03 11:00"))])
            await asyncio.sleep(0.01)

        async def sns(**params: str) -> tuple[int, list[str], str | None]:
            r = await api.get("/api/v1/registry/units", role="viewer", **params)
            assert r.status_code == 200, r.text
            body = r.json()
            return body["total"], [u["sn"] for u in body["items"]], body["match"]

        assert await sns(q="HN1000000") == (7, [f"HN1000000{k}" for k in range(1, 8)], "prefix")
        assert await sns(q="YB9005") == (1, ["HN10000005"], "prefix")  # the insurance SN
        assert await sns(q="0006") == (1, ["HN10000006"], "contains")  # no SN starts with it: substring
        assert await sns(q="0006", match="prefix") == (0, [], "prefix")
        # substring search folds ASCII case like SQLite's LIKE and takes % and _ literally
        assert await sns(q="b9005", match="contains") == (1, ["HN10000005"], "contains")
        assert await sns(q="N1000000", match="contains", limit="2") == (7, ["HN10000001", "HN10000002"], "contains")
        assert await sns(q="%", match="contains") == (0, [], "contains")
        assert await sns(q="0_", match="contains") == (0, [], "contains")
        assert await sns(q="HN1000000", limit="3", offset="3") == (7, ["HN10000004", "HN10000005", "HN10000006"], "prefix")
        # wired units (1, 3, 5, 7), newest report first, the one never heard from last
        assert (await sns(link_type="wired", sort="last_seen", order="desc"))[1] == [
            "HN10000005", "HN10000001", "HN10000003", "HN10000007"]
        assert await sns(link_type="wired", sort="last_seen", order="desc", limit="2", offset="2") == (
            4, ["HN10000003", "HN10000007"], None)
        assert (await sns(link_type="wired", sort="last_seen", order="asc"))[1] == [
            "HN10000007", "HN10000003", "HN10000001", "HN10000005"]
        assert await sns(link_type="wired", sort="last_seen", limit="2", offset="1") == (
            4, ["HN10000003", "HN10000001"], None)  # across the never-heard / heard boundary
        assert await sns(link_type="wired", sort="last_seen", limit="2", offset="2") == (4, ["HN10000001", "HN10000005"], None)
        # a full page needs the count; a new unit changes it at once
        assert (await sns(limit="2"))[0] == 7
        await api.req("PUT", "/api/v1/registry/units/HN10000008", json={"institution": "V001"})
        assert (await sns(limit="2"))[0] == 8
        assert await sns(q="0008") == (1, ["HN10000008"], "contains")  # the new unit is searched at once


async def test_a_unit_on_a_page_is_shown_as_its_own_detail_shows_it(tmp_path: Path) -> None:
    """A page of units converts each unit's times as it builds it (issue 15), not in a walk over the page after:
    each item is what the unit's detail (still converted by that walk) shows, field for field: times as ISO 8601
    with the fleet's offset, the SIM's first and last report among them, what the terminal wrote as it wrote it."""
    from wire.messages import Event

    async with make_api(tmp_path) as api:
        assert (await api.req("PUT", "/api/v1/institutions/V001", json={"name": "卫生室", "county": "秀英区"})).status_code == 200
        for k in range(1, 4):
            r = await api.req("PUT", f"/api/v1/registry/units/HN2000000{k}", json={"institution": "V001"})
            assert r.status_code == 200, r.text
        t0 = at("2025-03-03 11:00")
        inventory = {"agent": "2.1.0", "components": {"printer": "P1", "reader": None}}
        await api.feed("HN20000001", [sample(1, t0)], [
            Event(seq=0, ts=t0, kind="inventory", data=inventory),
            Event(seq=1, ts=t0, kind="identity", data={"imsi": "460001234567890", "iccid": "8986001234567890123",
                                                       "carrier": "中国移动", "mcc_mnc": "46000"})])
        await api.feed("HN20000002", [sample(1, t0 + 60)])  # heard, no inventory; HN20000003 never heard
        r = await api.get("/api/v1/registry/units", role="viewer", county="秀英区")
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [u["sn"] for u in items] == ["HN20000001", "HN20000002", "HN20000003"]
        for item in items:
            detail = (await api.get(f"/api/v1/registry/units/{item['sn']}", role="viewer")).json()
            detail.pop("status_history")
            assert item == detail, item["sn"]
        first = items[0]
        assert first["software"] == {"agent": "2.1.0", "printer": "P1", "reader": None}
        assert first["sim"]["last_report"] == first["last_seen"] and first["last_seen"].endswith("+08:00")
        assert first["sim"]["carrier"] == "中国移动" and first["sim"]["first_report"].endswith("+08:00")
