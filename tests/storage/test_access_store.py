"""Issue 18's store (server/storage/access.py) on both backends: two storage objects on one database stand for two
server processes allocating from one pool at the same time (no address twice), an application decided by one
process cannot be moved again by the other, service hours resent or corrected roll up exactly once."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

from server.storage.access import AccessStore, AddressTaken, PoolExhausted

T0 = 1_741_000_000 - 1_741_000_000 % 86400


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


async def test_two_processes_allocating_from_one_pool_never_share_an_address(two: tuple[Any, Any]) -> None:
    sa, sb = two
    a, b = AccessStore(sa), AccessStore(sb)
    pool = await a.add_pool("秀英区", "4g_vpdn", "10.1.0.0/27", ip("10.1.0.1"), ip("10.1.0.30"), "", "t", T0)
    with pytest.raises(AddressTaken):
        await b.add_pool("龙华区", "4g_vpdn", "10.1.0.16/28", ip("10.1.0.17"), ip("10.1.0.30"), "", "t", T0)
    await b.reserve(pool, ip("10.1.0.1"), "gateway", T0)
    with pytest.raises(AddressTaken):
        await a.reserve(pool, ip("10.1.0.1"), "again", T0)

    async def take(store: AccessStore, storage: Any, n: int) -> int:
        async with storage.write() as db:
            return await store.allocate(db, ["秀英区", "海口市"], "4g_vpdn", f"SN{n:03d}", "H001", n, T0)

    got = await asyncio.gather(*[take(a if n % 2 else b, sa if n % 2 else sb, n) for n in range(29)])
    assert len(set(got)) == 29 and ip("10.1.0.1") not in got
    with pytest.raises(PoolExhausted):
        await take(a, sa, 99)
    pools = await b.pools()
    assert (pools[0]["allocated"], pools[0]["reserved"], pools[0]["free"]) == (29, 1, 0)
    async with sa.write() as db:
        assert len(await a.release_unit(db, "SN004")) == 1
    assert await take(b, sb, 100) == got[4]  # the freed address is the lowest free one


async def test_an_application_moves_once_whichever_process_decides(two: tuple[Any, Any]) -> None:
    sa, sb = two
    a, b = AccessStore(sa), AccessStore(sb)
    app_id = await a.add_application({"domain": "network", "action": "register", "institution": "H001",
                                      "county": "秀英区", "sn": "SN1", "link_type": "wired"},
                                     ["county", "province"], "applicant", T0)
    async with sa.write() as db:
        assert await a.move(db, app_id, "pending_county", "pending_province", 1, T0 + 1)
    async with sb.write() as db:
        assert not await b.move(db, app_id, "pending_county", "pending_province", 1, T0 + 2)
    got = await b.application(app_id)
    assert got is not None and (got["state"], got["step"], got["steps"]) == ("pending_province", 1,
                                                                            ["county", "province"])


async def test_service_hours_roll_up_once_resent_or_corrected(two: tuple[Any, Any]) -> None:
    sa, sb = two
    a, b = AccessStore(sa), AccessStore(sb)

    def hour(sn: str, h: int, services: int, face: int) -> dict[str, Any]:
        return {"sn": sn, "hour": h, "tz_offset": 8 * 3600, "county": "秀英区", "institution": "H001",
                "services": services, "face": face, "idcard": 0, "evoucher": 0, "other": 0, "business": {"s": services}}

    assert await a.put_service_hours([hour("SN1", T0, 5, 5), hour("SN1", T0 + 3600, 2, 1)]) == 2
    assert await b.put_service_hours([hour("SN1", T0, 5, 5)]) == 0  # a resend
    assert await b.put_service_hours([hour("SN1", T0, 7, 6)]) == 1  # a correction replaces the hour
    day = (T0 + 8 * 3600) // 86400
    assert await a.service_days(day, day, None) == [(day, [9, 7, 0, 0, 0])]
    assert await a.service_days(day, day, ["龙华区"]) == []
    assert await b.top_institutions(202503, 202503, None, 10) == [("H001", 9, "", "")]  # (no institutions row here)
