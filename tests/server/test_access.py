"""Network and business access (issue 18) through the real app: pools, applications through county review and
province approval with the address allocated, concurrent approvals, the reported address checked against the
allocation, interface reach, service aggregates and statistics. SQLite by default, PostgreSQL with
``--storage postgresql``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from server.auth import create_token
from tests.server.conftest import Api, at
from wire.messages import Event

INSTITUTIONS = [
    {"code": "H001", "name": "石山镇卫生院", "county": "秀英区", "region": "海口市", "type": "乡镇卫生院"},
    {"code": "V001", "name": "美安村卫生室", "county": "秀英区", "region": "海口市", "type": "村卫生室"},
    {"code": "V002", "name": "永兴村卫生室", "county": "龙华区", "region": "海口市", "type": "村卫生室"},
]


async def _fleet(api: Api, units: int = 3) -> None:
    st = api.app.state.storage
    await st.upsert_institutions(INSTITUTIONS)
    rows = [{"sn": f"PF{n:04d}", "institution": "H001", "model": "P8"} for n in range(units)]
    rows.append({"sn": "PFV2", "institution": "V002", "model": "P8"})
    await st.upsert_registry_units(rows, at("2025-03-01 00:00"), "test")


async def _token(api: Api, name: str, role: str, scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {await create_token(api.app.state.storage, name, role, scope=scope)}"}


async def _pool(api: Api, region: str, link: str, cidr: str, **kw: Any) -> dict[str, Any]:
    r = await api.req("POST", "/api/v1/access/pools", json={"region": region, "link_type": link, "cidr": cidr, **kw})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _apply(api: Api, sn: str, action: str = "register", link: str = "4g_vpdn", inst: str = "H001",
                 role: str = "engineer") -> dict[str, Any]:
    r = await api.req("POST", "/api/v1/access/applications", role=role, json={
        "domain": "network", "action": action, "institution": inst, "sn": sn, "link_type": link,
        "carrier": "中国移动", "note": "新装终端"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _decide(api: Api, app_id: int, headers: dict[str, str], decision: str = "approve",
                  note: str = "") -> Any:
    return await api.client.post(f"/api/v1/access/applications/{app_id}/decision", headers=headers,
                                 json={"decision": decision, "note": note})


async def test_network_application_county_review_then_province_approval_allocates_an_address(api: Api) -> None:
    await _fleet(api)
    pool = await _pool(api, "秀英区", "4g_vpdn", "10.61.1.0/29", note="秀英区 VPDN")
    assert (pool["size"], pool["free"], pool["first_ip"], pool["last_ip"]) == (6, 6, "10.61.1.1", "10.61.1.6")
    r = await api.req("POST", f"/api/v1/access/pools/{pool['id']}/reserve", json={"ip": "10.61.1.1", "note": "网关"})
    assert r.status_code == 200 and r.json()["reserved"] == 1

    county_admin = await _token(api, "xiuying-admin", "admin", "county:秀英区")
    other_county = await _token(api, "longhua-admin", "admin", "county:龙华区")
    province = api.h("admin")

    a = await _apply(api, "PF0000")
    assert a["state"] == "pending_county" and a["steps"] == ["county", "province"] and a["ip"] is None

    # another county's administrator does not even see it; a rejection without a reason is refused
    assert (await _decide(api, a["id"], other_county)).status_code == 404
    r = await _decide(api, a["id"], county_admin, "reject")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "note"
    # the county administrator may not give the province's approval
    r = await _decide(api, a["id"], county_admin)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "pending_province" and r.json()["ip"] is None
    r = await _decide(api, a["id"], county_admin)
    assert r.status_code == 403 and "province" in r.json()["detail"]

    r = await _decide(api, a["id"], province, note="同意")
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["state"] == "approved" and done["ip"] == "10.61.1.2"  # .1 is reserved
    assert [(h["step"], h["decision"]) for h in done["history"]] == [
        ("apply", "submitted"), ("county", "approved"), ("province", "approved")]
    # deciding again: nothing waits for a decision
    assert (await _decide(api, a["id"], province)).status_code == 409

    # every step in the audit trail
    audit = api.app.state.audit
    rows = await audit.query(target=f"application:{a['id']}")
    assert sorted(r["action"] for r in rows) == ["access.apply", "access.approve", "access.approve"]

    # the pool's use, the combined query by address, by carrier-free filters
    pools = (await api.get("/api/v1/access/pools", role="viewer")).json()["items"]
    assert (pools[0]["allocated"], pools[0]["reserved"], pools[0]["free"]) == (1, 1, 4)
    q = (await api.get("/api/v1/access/network", role="viewer", ip="10.61.1.2")).json()
    assert q["total"] == 1 and q["items"][0]["sn"] == "PF0000" and q["items"][0]["institution_name"] == "石山镇卫生院"
    assert (await api.get("/api/v1/access/network", role="viewer", ip="10.61.1.3")).json()["total"] == 0

    # a scoped user lists only its county's applications; the applicant's view shows the state
    mine = (await api.client.get("/api/v1/access/applications", headers=other_county)).json()
    assert mine["total"] == 0
    mine = (await api.client.get("/api/v1/access/applications", headers=county_admin)).json()
    assert mine["total"] == 1 and mine["items"][0]["state"] == "approved"


async def test_rejection_needs_a_reason_and_keeps_it_and_allocates_nothing(api: Api) -> None:
    await _fleet(api)
    await _pool(api, "秀英区", "4g_vpdn", "10.61.2.0/30")
    a = await _apply(api, "PF0001")
    r = await _decide(api, a["id"], api.h("admin"), "reject", "终端未登记到本机构")
    assert r.status_code == 200 and r.json()["state"] == "rejected"
    assert r.json()["reject_reason"] == "终端未登记到本机构" and r.json()["ip"] is None
    assert (await api.get("/api/v1/access/pools")).json()["items"][0]["allocated"] == 0


async def test_concurrent_approvals_never_give_an_address_twice(api: Api) -> None:
    await _fleet(api, units=12)
    await _pool(api, "秀英区", "4g_vpdn", "10.61.3.0/28")  # 14 hosts
    ids = [(await _apply(api, f"PF{n:04d}"))["id"] for n in range(12)]
    province = api.h("admin")
    for i in ids:  # the county step
        assert (await _decide(api, i, province)).status_code == 200
    answers = await asyncio.gather(*[_decide(api, i, province) for i in ids])
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    ips = [r.json()["ip"] for r in answers]
    assert len(set(ips)) == 12 and all(ip.startswith("10.61.3.") for ip in ips)
    # and the same approval twice at once: one wins, the other is told
    extra = await _apply(api, "PFV2", inst="V002")
    await api.req("POST", "/api/v1/access/pools", json={"region": "海口市", "link_type": "4g_vpdn",
                                                        "cidr": "10.62.0.0/30"})
    assert (await _decide(api, extra["id"], province)).status_code == 200
    twice = await asyncio.gather(_decide(api, extra["id"], province), _decide(api, extra["id"], province))
    assert sorted(r.status_code for r in twice) == [200, 409]
    # 龙华区 has no pool of its own: its city's pool
    assert [r.json()["ip"] for r in twice if r.status_code == 200] == ["10.62.0.1"]


async def test_pool_exhausted_refuses_the_approval_and_the_application_waits(api: Api) -> None:
    await _fleet(api)
    await _pool(api, "秀英区", "wired", "10.63.0.0/30")  # 2 hosts
    ids = [(await _apply(api, f"PF{n:04d}", link="wired"))["id"] for n in range(3)]
    for i in ids:
        await _decide(api, i, api.h("admin"))
    got = [await _decide(api, i, api.h("admin")) for i in ids]
    assert [r.status_code for r in got] == [200, 200, 409]
    assert "no free wired address" in got[2].json()["detail"]
    assert (await api.get(f"/api/v1/access/applications/{ids[2]}")).json()["state"] == "pending_province"


async def test_change_and_deregistration_move_and_release_the_address(api: Api) -> None:
    await _fleet(api)
    await _pool(api, "秀英区", "4g_vpdn", "10.61.4.0/29")
    await _pool(api, "秀英区", "wired", "10.64.4.0/29")
    a = await _apply(api, "PF0000")
    for _ in range(2):
        r = await _decide(api, a["id"], api.h("admin"))
    assert r.json()["ip"] == "10.61.4.1"
    c = await _apply(api, "PF0000", action="change", link="wired")
    for _ in range(2):
        r = await _decide(api, c["id"], api.h("admin"))
    assert r.json()["ip"] == "10.64.4.1"
    pools = {p["link_type"]: p["allocated"] for p in (await api.get("/api/v1/access/pools")).json()["items"]}
    assert pools == {"4g_vpdn": 0, "wired": 1}
    d = await _apply(api, "PF0000", action="deregister", link="")
    for _ in range(2):
        r = await _decide(api, d["id"], api.h("admin"))
    assert r.json()["state"] == "approved"
    pools = {p["link_type"]: p["allocated"] for p in (await api.get("/api/v1/access/pools")).json()["items"]}
    assert pools == {"4g_vpdn": 0, "wired": 0}


async def test_hostile_pool_and_application_input_is_refused_naming_the_field(api: Api) -> None:
    await _fleet(api)
    for body, field in (({"region": "秀英区", "link_type": "4g_vpdn", "cidr": "10.0.0.0/8"}, "cidr"),
                        ({"region": "秀英区", "link_type": "4g_vpdn", "cidr": "10.0.0.1/24"}, "cidr"),
                        ({"region": "秀英区", "link_type": "lora", "cidr": "10.0.0.0/24"}, "link_type"),
                        ({"region": "秀英区", "link_type": "wired", "cidr": "10.0.0.0/24", "first": "10.0.1.1"}, "first")):
        r = await api.req("POST", "/api/v1/access/pools", json=body)
        assert r.status_code == 422 and field in r.text, r.text
    await _pool(api, "秀英区", "wired", "10.70.0.0/24")
    r = await api.req("POST", "/api/v1/access/pools", json={"region": "龙华区", "link_type": "wired",
                                                            "cidr": "10.70.0.128/25"})
    assert r.status_code == 409 and "overlaps" in r.json()["detail"]
    r = await api.req("POST", "/api/v1/access/applications", json={
        "domain": "network", "action": "register", "institution": "H001", "sn": "PFV2", "link_type": "wired"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "sn"
    r = await api.req("POST", "/api/v1/access/pools", role="engineer", json={
        "region": "秀英区", "link_type": "wired", "cidr": "10.71.0.0/24"})
    assert r.status_code == 403


async def test_reported_address_outside_the_allocation_is_flagged_and_a_link_change_too(api: Api) -> None:
    await _fleet(api)
    await _pool(api, "秀英区", "4g_vpdn", "10.61.5.0/29")
    a = await _apply(api, "PF0000")
    for _ in range(2):
        r = await _decide(api, a["id"], api.h("admin"))
    assert r.json()["ip"] == "10.61.5.1"
    t = at("2025-03-03 12:00")
    access = api.app.state.access

    async def report(ip: str, link: str, seq: int) -> None:
        await api.feed("PF0000", [], [Event(seq=seq, ts=t + seq, kind="identity",
                                            data={"iccid": "898600", "ip": ip, "link": link})])
        await access.flush()

    await report("10.61.5.1", "cellular", 1)  # as allocated
    assert (await api.get("/api/v1/alerts", kind="address")).json()["total"] == 0
    await report("192.168.9.9", "cellular", 2)  # not what it was given
    alerts = (await api.get("/api/v1/alerts", kind="address")).json()["items"]
    assert len(alerts) == 1 and alerts[0]["sn"] == "PF0000" and "192.168.9.9" in alerts[0]["message"]
    assert "10.61.5.1" in alerts[0]["message"]
    q = (await api.get("/api/v1/access/network", sn="PF0000")).json()["items"][0]
    assert (q["ip"], q["reported_ip"], q["reported_link"]) == ("10.61.5.1", "192.168.9.9", "cellular")
    await report("10.61.5.1", "cellular", 3)  # back: the alert closes
    assert (await api.get("/api/v1/alerts", kind="address")).json()["total"] == 0
    await report("10.61.5.1", "wired", 4)
    changes = (await api.get("/api/v1/alerts", kind="link_change")).json()["items"]
    assert len(changes) == 1 and "cellular -> wired" in changes[0]["message"]

    # a terminal with no allocation: checked against its county's pools for its link
    await api.feed("PF0001", [], [Event(seq=1, ts=t, kind="identity", data={"ip": "10.99.0.7", "link": "cellular",
                                                                           "iccid": "898601"})])
    await access.flush()
    flagged = {a["sn"] for a in (await api.get("/api/v1/alerts", kind="address")).json()["items"]}
    assert flagged == {"PF0001"}


async def test_business_interface_register_application_and_access_monitoring(api: Api) -> None:
    await _fleet(api)
    body = {"name": "医保结算", "address": "https://ybj.example/api/settle", "inputs": "就诊信息", "outputs": "结算结果",
            "description": "门诊实时结算"}
    r = await api.req("PUT", "/api/v1/access/interfaces/settle-2101", json=body)
    assert r.status_code == 200 and r.json()["state"] == "active"
    assert (await api.req("PUT", "/api/v1/access/interfaces/x", role="engineer", json=body)).status_code == 403
    r = await api.req("POST", "/api/v1/access/applications", role="engineer", json={
        "domain": "business", "action": "register", "institution": "H001", "sn": "PF0000", "interface": "settle-2101"})
    assert r.status_code == 200, r.text
    for _ in range(2):
        r = await _decide(api, r.json()["id"], api.h("admin"))
    assert r.json()["state"] == "approved"
    t = at("2025-03-03 12:00")
    await api.feed("PF0000", [], [Event(seq=1, ts=t, kind="iface",
                                        data={"interface": "settle-2101", "ok": True, "last_ok": t - 30})])
    await api.feed("PF0001", [], [Event(seq=1, ts=t, kind="iface",
                                        data={"interface": "settle-2101", "ok": False, "reason": "timeout"})])
    await api.app.state.access.flush()
    working = (await api.get("/api/v1/access/monitoring", state="working")).json()
    assert [(i["sn"], i["granted"], i["reached"]) for i in working["items"]] == [("PF0000", True, True)]
    failing = (await api.get("/api/v1/access/monitoring", state="failing")).json()
    assert [(i["sn"], i["granted"], i["detail"]) for i in failing["items"]] == [("PF0001", False, "timeout")]
    reg = (await api.get("/api/v1/access/interfaces")).json()["items"][0]
    assert (reg["granted"], reg["reached"]) == (1, 1)


async def test_service_statistics_from_hourly_aggregates(api: Api) -> None:
    await _fleet(api)
    api.clock.t = at("2025-03-09 12:00")  # the week: 03-03 .. 03-09
    h = at("2025-03-03 09:00")
    events = [Event(seq=1, ts=h + 3600, kind="svc", data={"hour": h, "services": 10, "face": 6, "idcard": 3,
                                                          "evoucher": 1, "business": {"settle": 9, "refund": 1}}),
              Event(seq=2, ts=h + 7200, kind="svc", data={"hour": h + 3600, "services": 4, "evoucher": 4})]
    await api.feed("PF0000", [], events)
    # a resend of the same hour (store-and-forward) counts once; a corrected hour replaces the old one
    await api.feed("PF0000", [], [events[0]], epoch=2)
    await api.feed("PFV2", [], [Event(seq=1, ts=h + 3600, kind="svc", data={"hour": h, "services": 2, "face": 2})])
    await api.app.state.access.flush()
    s = (await api.get("/api/v1/statistics/services", period="week", by="day")).json()
    assert s["totals"] == {"services": 16, "people": 16, "face": 8, "idcard": 3, "evoucher": 5, "other": 0}
    day = [p for p in s["series"] if p["date"] == "2025-03-03"][0]
    assert day["services"] == 16 and len(s["series"]) == 7
    shares = {m["method"]: (m["count"], m["share"]) for m in s["identity_checks"]}
    assert shares["face"] == (8, 0.5) and shares["evoucher"] == (5, 0.3125)
    assert [(t["institution"], t["services"]) for t in s["top_institutions"]] == [("H001", 14), ("V002", 2)]
    year = (await api.get("/api/v1/statistics/services", period="year", by="month")).json()
    assert [p for p in year["series"] if p["services"]] == [
        {"date": "2025-03", "services": 16, "people": 16, "face": 8, "idcard": 3, "evoucher": 5, "other": 0}]
    scoped = await _token(api, "longhua-viewer", "viewer", "county:龙华区")
    s = (await api.client.get("/api/v1/statistics/services", headers=scoped, params={"period": "week"})).json()
    assert s["totals"]["services"] == 2 and [t["institution"] for t in s["top_institutions"]] == ["V002"]


async def test_coverage_and_map_figures(api: Api) -> None:
    await _fleet(api)
    api.clock.t = time.time()  # the registry dates a registration by the wall clock
    c = (await api.get("/api/v1/statistics/coverage", role="viewer")).json()
    by_type = {g["key"]: (g["institutions"], g["covered"]) for g in c["by_type"]}
    assert by_type == {"乡镇卫生院": (1, 1), "村卫生室": (2, 1)}
    assert [g["key"] for g in c["ranking"]] == ["龙华区", "秀英区"]  # 1/1 before 1/2
    assert [(g["county"], g["institutions"], g["covered"][-1]) for g in c["county_over_time"]] == [
        ("秀英区", 2, 1), ("龙华区", 1, 1)]
    assert all(len(g["covered"]) == len(c["over_time"]) == 12 for g in c["county_over_time"])
    assert sum(m["units"] for m in c["new_deployments"]) == 4
    # a unit registered meanwhile counts at once (the coverage rows are kept only while the registry is unchanged)
    await api.app.state.storage.upsert_registry_units([{"sn": "PFV1", "institution": "V001"}], int(api.clock.t), "t")
    c = (await api.get("/api/v1/statistics/coverage", role="viewer")).json()
    assert {g["key"]: g["covered"] for g in c["by_type"]} == {"乡镇卫生院": 1, "村卫生室": 2}
    m = (await api.get("/api/v1/statistics/map", role="viewer")).json()
    assert {a["name"]: a["units"] for a in m["counties"]} == {"秀英区": 4, "龙华区": 1}
    assert m["cities"] == [{"name": "海口市", "region": "海口市", "units": 5, "online": 0, "institutions": 3}]


async def test_out_of_scope_user_meets_404_and_empty_lists_on_every_access_route(api: Api) -> None:
    await _fleet(api)
    pool = await _pool(api, "秀英区", "4g_vpdn", "10.61.9.0/29")
    a = await _apply(api, "PF0000")
    await api.req("PUT", "/api/v1/access/interfaces/settle-2101", json={"name": "结算", "address": "https://x/s"})
    t = at("2025-03-03 12:00")
    await api.feed("PF0000", [], [Event(seq=1, ts=t, kind="identity", data={"iccid": "8986", "carrier": "中国移动",
                                                                           "ip": "10.61.9.9", "link": "cellular"}),
                                  Event(seq=2, ts=t, kind="iface", data={"interface": "settle-2101", "ok": True}),
                                  Event(seq=3, ts=t, kind="svc", data={"hour": t - 7200, "services": 3})])
    await api.app.state.access.flush()
    # the province sees it all; the combined query finds the unit by its carrier and its reported address
    assert (await api.get("/api/v1/access/network", carrier="中国移动")).json()["total"] == 1
    assert (await api.get("/api/v1/access/network", ip="10.61.9.9")).json()["items"][0]["sn"] == "PF0000"
    outsider = await _token(api, "longhua-viewer", "viewer", "county:龙华区")
    for path in (f"/api/v1/access/pools/{pool['id']}/addresses", f"/api/v1/access/applications/{a['id']}"):
        r = await api.client.get(path, headers=outsider)
        assert r.status_code == 404, (path, r.text)
    r = await api.client.post(f"/api/v1/access/pools/{pool['id']}/reserve", headers=outsider,
                              json={"ip": "10.61.9.3"})
    assert r.status_code == 404
    for path in ("/api/v1/access/pools", "/api/v1/access/applications", "/api/v1/access/monitoring"):
        body = (await api.client.get(path, headers=outsider)).json()
        assert body["total"] == 0, (path, body)
    body = (await api.client.get("/api/v1/access/network", headers=outsider)).json()
    assert [i["sn"] for i in body["items"]] == ["PFV2"]  # its own county's terminal only
    s = (await api.client.get("/api/v1/statistics/services", headers=outsider, params={"period": "week"})).json()
    assert s["totals"]["services"] == 0 and s["top_institutions"] == []
    m = (await api.client.get("/api/v1/statistics/map", headers=outsider)).json()
    assert [a["name"] for a in m["counties"]] == ["龙华区"]
    assert [g["key"] for g in (await api.client.get("/api/v1/statistics/coverage", headers=outsider)).json()
            ["by_county"]] == ["龙华区"]
    # the register is the province's: everyone reads it
    assert (await api.client.get("/api/v1/access/interfaces", headers=outsider)).json()["total"] == 1


async def test_one_configured_step_approves_at_the_province_at_once(tmp_path: Any) -> None:
    from tests.server.conftest import make_api

    async with make_api(tmp_path, {"access": {"steps": ["province"]}}) as api:
        await _fleet(api)
        await _pool(api, "秀英区", "wired", "10.66.0.0/30")
        a = await _apply(api, "PF0000", link="wired")
        assert a["state"] == "pending_province" and a["steps"] == ["province"]
        county_admin = await _token(api, "xiuying-admin", "admin", "county:秀英区")
        assert (await _decide(api, a["id"], county_admin)).status_code == 403
        r = await _decide(api, a["id"], api.h("admin"))
        assert (r.json()["state"], r.json()["ip"]) == ("approved", "10.66.0.1")


async def test_reports_committed_but_not_yet_stored_when_the_server_died_are_replayed_at_start(tmp_path: Any) -> None:
    from tests.server.conftest import make_api

    h = at("2025-03-03 10:00")
    async with make_api(tmp_path) as api:
        await _fleet(api)
        await api.feed("PF0000", [], [Event(seq=1, ts=h + 3600, kind="svc", data={"hour": h, "services": 6,
                                                                                "face": 6})])
        assert api.app.state.access._queue, "committed, waiting to be stored"
        api.app.state.access._queue.clear()  # the process dies before its task stores them
        assert (await api.get("/api/v1/statistics/services", period="week")).json()["totals"]["services"] == 0
    async with make_api(tmp_path) as api:  # started again on the same database
        await api.app.state.access._replay
        await api.app.state.access.flush()
        s = (await api.get("/api/v1/statistics/services", period="week")).json()
        assert s["totals"]["services"] == 6 and s["totals"]["face"] == 6
        await api.app.state.access.replay()  # once more: idempotent
        await api.app.state.access.flush()
        assert (await api.get("/api/v1/statistics/services", period="week")).json()["totals"]["services"] == 6
