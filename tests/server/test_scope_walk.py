"""The scope walk (issue 18): every operation of the API, enumerated from the app's own routes (a new one is walked
without anyone adding it here), asked by a user whose scope is one county for the other county's unit,
institution and alert: 404 for each (the same answer as for something that does not exist, so SNs do not leak),
and the lists, counts and exports that a scoped user may read hold nothing outside the county. The same
requests with a province token find those objects, so the 404 is the scope's doing."""

from __future__ import annotations

import re
from typing import Any

import httpx

from server.alerts.lifecycle import raise_alert
from server.auth import create_token
from server.auth.scope import PROVINCE_ONLY, SCOPED
from tests.server.conftest import Api, at

INSIDE = {"sn": "SX-A-0001", "code": "INST-A", "county": "长安区", "city": "西安市"}
OUTSIDE = {"sn": "SX-B-0001", "code": "INST-B", "county": "汉台区", "city": "汉中市"}
UNPLACED = "SX-X-0001"  # registered, no institution yet: the province's alone
LEAKS = (OUTSIDE["sn"], OUTSIDE["code"], OUTSIDE["county"], OUTSIDE["city"], UNPLACED, "B-clinic")


async def _fleet(api: Api) -> dict[str, str]:
    st = api.app.state.storage
    await st.upsert_institutions([
        {"code": INSIDE["code"], "name": "A-clinic", "county": INSIDE["county"], "region": INSIDE["city"]},
        {"code": OUTSIDE["code"], "name": "B-clinic", "county": OUTSIDE["county"], "region": OUTSIDE["city"]}])
    t0 = at("2025-03-03 08:00")
    await st.upsert_registry_units([{"sn": INSIDE["sn"], "institution": INSIDE["code"]},
                                    {"sn": OUTSIDE["sn"], "institution": OUTSIDE["code"]},
                                    {"sn": UNPLACED}], t0, "test")
    api.app.state.registry.invalidate()
    for sn in (INSIDE["sn"], OUTSIDE["sn"], UNPLACED):
        await api.minutes(sn, t0, 5)
    for sn, county in ((INSIDE["sn"], INSIDE["county"]), (OUTSIDE["sn"], OUTSIDE["county"])):
        await raise_alert(st, f"security:{sn}", "security", sn, county, t0, f"{sn} opened", {}, False)
    await raise_alert(st, "security:b", "security", None, OUTSIDE["county"], t0, "alert of county B", {}, False)
    await _jobs(api)
    alerts = (await api.get("/api/v1/alerts")).json()["items"]
    return {"alert_id": str(next(a["id"] for a in alerts if a["sn"] == OUTSIDE["sn"])), "job_id": "job-b"}


async def _jobs(api: Api) -> None:
    """A finished job to each county's unit, one to both, and their audit rows (as the command service writes
    them; it cannot sign commands here without a key)."""
    st = api.app.state.storage
    t0 = at("2025-03-03 09:00")
    async with st.write() as db:
        for k, (job, sns) in enumerate((("job-a", [INSIDE["sn"]]), ("job-b", [OUTSIDE["sn"]]),
                                        ("job-ab", [INSIDE["sn"], OUTSIDE["sn"]]))):
            await db.execute("INSERT INTO cmd_jobs(id, type, params, created_by, created, total, state) "
                             "VALUES (?,?,?,?,?,?,?)", (job, "ping", "{}", "t-admin", t0 + k, len(sns), "done"))
            for sn in sns:
                await db.execute("INSERT INTO cmd_commands(id, job, sn, type, params, created_by, created, issued, "
                                 "expires, payload, state) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                                 (f"{job}-{sn}", job, sn, "ping", "{}", "t-admin", t0 + k, t0, t0 + 600, b"x", "done"))
    audit = api.app.state.audit
    for job in ("job-a", "job-b", "job-ab"):
        await audit.record("t-admin", "job.create", job, role="admin")
    for sn in (INSIDE["sn"], OUTSIDE["sn"], UNPLACED):
        await audit.record("server", "command.state", sn, detail={"from": "sent", "to": "done"})


def _operations(app: Any) -> list[tuple[str, str, bool]]:
    """Every (method, path template, whether it asks who is calling) /openapi.json publishes."""
    return [(m.upper(), path, bool(op.get("security"))) for path, item in app.openapi()["paths"].items()
            for m, op in item.items() if m in ("get", "post", "put", "patch", "delete")]


def _fill(path: str, ids: dict[str, str]) -> str:
    values = {"sn": OUTSIDE["sn"], "code": OUTSIDE["code"], **ids}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "1"), path)


def _is_scoped(method: str, path: str) -> bool:
    return path in SCOPED or f"{method} {path}" in SCOPED


async def test_every_operation_answers_a_county_user_404_or_only_its_county(api: Api) -> None:
    ids = await _fleet(api)
    st = api.app.state.storage
    county = {"Authorization": f"Bearer {await create_token(st, 'county-a', 'admin', scope='county:长安区')}"}
    ops = _operations(api.app)
    assert len(ops) > 50, "the walk must see the whole API"
    walked: dict[str, list[str]] = {"404": [], "filtered": [], "open": []}
    for method, path, secured in ops:
        url = _fill(path, ids)
        kw: dict[str, Any] = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
        r = await api.client.request(method, url, headers=county, **kw)
        text = r.text
        if not secured:  # open to anyone (health): nothing of any county in it
            assert not any(leak in text for leak in LEAKS), (method, url, text[:500])
            walked["open"].append(f"{method} {path}")
            continue
        seeded = set(re.findall(r"\{(\w+)", path)) <= {"sn", "code", "alert_id", "job_id"}
        if ("{" in path and seeded) or not _is_scoped(method, path):
            assert r.status_code == 404, (method, url, r.status_code, text[:300])
            assert not any(leak in text for leak in LEAKS[:1]) or text.count(OUTSIDE["sn"]) <= 1, text
            walked["404"].append(f"{method} {path}")
            if "{" in path and seeded:  # the province finds what the test made: the 404 is the scope's
                province = await api.client.request(method, url, headers=api.h("admin"), **kw)
                assert province.status_code != 404, (method, url, province.text)
            continue
        if "{" in path:  # a scoped route naming things this test did not make (another domain's): no leak
            assert not any(leak in text for leak in LEAKS), (method, url, text[:500])
            continue
        assert r.status_code in (200, 201, 409, 422), (method, url, r.status_code, text[:300])
        assert not any(leak in text for leak in LEAKS), (method, url, text[:500])
        walked["filtered"].append(f"{method} {path}")
    # the scoped reads that must show the county's own things
    assert {"GET /api/v1/units", "GET /api/v1/registry/units", "GET /api/v1/institutions", "GET /api/v1/alerts",
            "GET /api/v1/analytics/live", "GET /dashboard/api/units",
            "GET /api/v1/registry/units.csv", "GET /api/v1/registry/units.xlsx",
            "GET /api/v1/availability", "GET /api/v1/availability/flagged", "GET /dashboard/api/trend",
            "GET /api/v1/analytics/network", "GET /api/v1/analytics/sim-data", "GET /api/v1/jobs",
            "GET /api/v1/audit", "GET /api/v1/reports/ops"} <= set(walked["filtered"])
    assert {"GET /api/v1/units/{sn}", "GET /api/v1/jobs/{job_id}", "POST /api/v1/jobs/{job_id}/abort"} <= \
        set(walked["404"])
    # the province's by decision, not by omission: declared, and answered 404
    assert {"/api/v1/ingest/stats", "/api/v1/ingest/dead-letters", "/api/v1/audit/limits",
            "/api/v1/reports/stored"} <= PROVINCE_ONLY
    assert not PROVINCE_ONLY & SCOPED, "a route is either the province's or filtered, not both"
    assert {"GET /api/v1/ingest/stats", "GET /api/v1/ingest/dead-letters"} <= set(walked["404"])
    assert {"GET /healthz", "GET /readyz", "POST /api/v1/session"} <= set(walked["open"])


async def test_a_county_user_sees_and_commands_its_own_units_only(api: Api) -> None:
    await _fleet(api)
    st = api.app.state.storage
    h = {"Authorization": f"Bearer {await create_token(st, 'county-a', 'engineer', scope='county:长安区')}"}
    city = {"Authorization": f"Bearer {await create_token(st, 'city-b', 'viewer', scope='city:汉中市')}"}

    async def get(path: str, headers: dict[str, str], **params: Any) -> httpx.Response:
        return await api.client.get(path, params=params, headers=headers)

    units = (await get("/api/v1/units", h)).json()
    assert [u["sn"] for u in units["items"]] == [INSIDE["sn"]] and units["total"] == 1
    assert [u["sn"] for u in (await get("/api/v1/units", city)).json()["items"]] == [OUTSIDE["sn"]]
    assert (await get(f"/api/v1/units/{INSIDE['sn']}", h)).status_code == 200
    assert (await get(f"/api/v1/units/{INSIDE['sn']}/samples", h)).json()["items"]
    reg = (await get("/api/v1/registry/units", h, county=OUTSIDE["county"])).json()
    assert reg["total"] == 0 and reg["items"] == [], "asking for another county finds nothing"
    assert [i["code"] for i in (await get("/api/v1/institutions", h)).json()["items"]] == [INSIDE["code"]]
    csv = (await get("/api/v1/registry/units.csv", h)).text
    assert INSIDE["sn"] in csv and OUTSIDE["sn"] not in csv and UNPLACED not in csv
    live = (await get("/api/v1/analytics/live", h)).json()
    assert OUTSIDE["code"] not in str(live) and INSIDE["code"] in str(live)
    alerts = (await get("/api/v1/alerts", city)).json()["items"]
    assert sorted(a["message"] for a in alerts) == ["SX-B-0001 opened", "alert of county B"]
    # commands: the named units must all be in scope; a filter is not for scoped users
    out = await api.client.post("/api/v1/commands", json={"type": "ping", "sns": [INSIDE["sn"], OUTSIDE["sn"]]},
                                headers=h)
    assert out.status_code == 404 and OUTSIDE["sn"] in out.json()["detail"]
    out = await api.client.post("/api/v1/jobs", json={"type": "ping", "filter": {"county": INSIDE["county"]}},
                                headers=h)
    assert out.status_code == 422 and out.json()["errors"][0]["field"] == "filter"
    listed = await api.client.get("/api/v1/commands", params={"sn": OUTSIDE["sn"]}, headers=h)
    assert listed.status_code == 404
    listed = await api.client.get("/api/v1/commands", params={"sn": INSIDE["sn"]}, headers=h)
    assert listed.status_code == 200 and listed.json()["total"] == 2  # its unit's commands (jobs a and ab)
    # the province sees every unit, the unplaced one too
    assert (await api.get("/api/v1/units")).json()["total"] == 3


DAY = {"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-04T00:00:00+08:00"}
RATES = ("service_slots", "intact_slots", "network_ok_slots", "no_data_slots", "device_rate", "network_rate",
         "units", "flagged_units")


async def _day(api: Api) -> None:
    """County A: A1 well all day, A2 out of paper all morning; county B: B1 with its link down all day; the
    unplaced unit well. Registered before the day opens, counted at the next midnight."""
    from wire.messages import Check

    api.clock.t = at("2025-03-03 07:00")
    for code, county, city in ((INSIDE["code"], INSIDE["county"], INSIDE["city"]),
                               (OUTSIDE["code"], OUTSIDE["county"], OUTSIDE["city"])):
        r = await api.req("PUT", f"/api/v1/institutions/{code}", json={"name": code, "county": county, "region": city})
        assert r.status_code == 200, r.text
    for sn, inst in (("SX-A-0001", INSIDE["code"]), ("SX-A-0002", INSIDE["code"]), (OUTSIDE["sn"], OUTSIDE["code"])):
        assert (await api.req("PUT", f"/api/v1/registry/units/{sn}", json={"institution": inst})).status_code == 200
    assert (await api.req("PUT", f"/api/v1/registry/units/{UNPLACED}", json={})).status_code == 200
    paper_out = {"printer": Check(1, "paper_out"), "idcard": Check(0), "modem": Check(0), "storage": Check(0)}
    t0 = at("2025-03-03 08:00")
    await api.minutes("SX-A-0001", t0, 600)
    await api.minutes("SX-A-0002", t0, 240, checks=paper_out)
    await api.minutes("SX-A-0002", at("2025-03-03 12:00"), 360)
    await api.minutes(OUTSIDE["sn"], t0, 600, connected=False, rtt_ms=None)
    await api.minutes(UNPLACED, t0, 600)
    api.clock.t = at("2025-03-04 00:00")
    await api.settle()


async def test_a_county_user_gets_its_county_figures_as_the_province_counts_them(api: Api) -> None:
    """Availability, flagged units, the dashboard's trend, the county network and SIM-data figures: a county user
    gets (not 404) exactly what the province's per-county answer says of that county, and nothing of the other
    county or of the unplaced unit; no contract tier (the province's alone)."""
    await _day(api)
    st = api.app.state.storage
    h = {"Authorization": f"Bearer {await create_token(st, 'county-a', 'viewer', scope='county:长安区')}"}

    async def mine(path: str, **params: Any) -> dict[str, Any]:
        r = await api.client.get(path, params=params, headers=h)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        assert not any(leak in r.text for leak in LEAKS), (path, r.text[:500])
        return r.json()  # type: ignore[no-any-return]

    province = (await api.get("/api/v1/availability", group_by="county", **DAY)).json()
    theirs = {i["county"]: i for i in province["items"]}[INSIDE["county"]]
    assert theirs["units"] == 2 and theirs["flagged_units"] == 1
    assert (theirs["service_slots"], theirs["intact_slots"], theirs["network_ok_slots"]) == (1200, 960, 1200)
    assert province["fleet"]["units"] == 4 and province["fleet"]["tier"] is not None

    fleet = (await mine("/api/v1/availability", **DAY))["fleet"]
    assert {k: fleet[k] for k in RATES} == {k: theirs[k] for k in RATES}
    assert fleet["tier"] is None and fleet["final_payment"] is None, "the tier is the province's alone"
    by_county = await mine("/api/v1/availability", group_by="county", **DAY)
    assert [i["county"] for i in by_county["items"]] == [INSIDE["county"]] and by_county["total"] == 1
    by_unit = await mine("/api/v1/availability", group_by="unit", **DAY)
    assert [i["sn"] for i in by_unit["items"]] == ["SX-A-0001", "SX-A-0002"]
    other = await mine("/api/v1/availability", county=OUTSIDE["county"], **DAY)
    assert other["fleet"]["units"] == 0, "asking for the other county counts nothing"

    flagged_all = (await api.get("/api/v1/availability/flagged", **DAY)).json()
    assert {u["sn"] for u in flagged_all["items"]} == {"SX-A-0002", OUTSIDE["sn"]}
    flagged = await mine("/api/v1/availability/flagged", **DAY)
    assert [u["sn"] for u in flagged["items"]] == ["SX-A-0002"] and flagged["total"] == 1

    day = {p["date"]: p for p in (await mine("/dashboard/api/trend", days=2))["points"]}["2025-03-03"]
    prov_day = {p["date"]: p for p in (await api.get("/dashboard/api/trend", days=2, county=INSIDE["county"])
                                       ).json()["points"]}["2025-03-03"]
    assert day == prov_day and day["units"] == 2 and day["flagged_units"] == 1

    net = await mine("/api/v1/analytics/network", hours=24)
    prov_net = {c["county"]: c for c in (await api.get("/api/v1/analytics/network", hours=24)).json()["counties"]}
    assert len(prov_net) == 3 and net["counties"] == [prov_net[INSIDE["county"]]]
    assert net["counties"][0]["units"] == 2
    assert (await mine("/api/v1/analytics/network", hours=24, county=OUTSIDE["county"]))["counties"] == []

    data = await mine("/api/v1/analytics/sim-data")
    prov_data = (await api.get("/api/v1/analytics/sim-data", county=INSIDE["county"])).json()
    assert [i["sn"] for i in data["items"]] == [i["sn"] for i in prov_data["items"]] == ["SX-A-0001", "SX-A-0002"]
    assert data["total"] == 2


async def test_a_county_users_report_is_its_county_report_without_a_tier(api: Api) -> None:
    """The operations report of a county user covers its county (as the province's county report counts it) and
    prints no contract tier; the other county answers 404; a city user names one county of its city."""
    await _day(api)
    st = api.app.state.storage
    h = {"Authorization": f"Bearer {await create_token(st, 'county-a', 'viewer', scope='county:长安区')}"}
    city = {"Authorization": f"Bearer {await create_token(st, 'city-b', 'viewer', scope='city:汉中市')}"}
    q = {"from": "2025-03-03", "to": "2025-03-03", "format": "csv"}
    mine = await api.client.get("/api/v1/reports/ops", params=q, headers=h)
    assert mine.status_code == 200, mine.text[:300]
    assert not any(leak in mine.text for leak in LEAKS), mine.text[:1000]
    assert "SX-A-0002" in mine.text, "the county's flagged unit is in its report"
    province = await api.client.get("/api/v1/reports/ops", params={**q, "county": INSIDE["county"]}, headers=api.h())
    assert mine.text == province.text, "the county user's report is the province's report of that county"
    whole = (await api.client.get("/api/v1/reports/ops", params=q, headers=api.h())).text
    assert OUTSIDE["sn"] in whole and whole != mine.text
    html = (await api.client.get("/api/v1/reports/ops", params={**q, "format": "html"}, headers=h)).text
    assert "区县报告不判定档次" in html and "尾款为合同总价" not in html, "no contract tier in a county report"
    assert 'id="server"' not in html, "the server's self-inspection is the province's, not in a county report"
    other = await api.client.get("/api/v1/reports/ops", params={**q, "county": OUTSIDE["county"]}, headers=h)
    assert other.status_code == 404 and other.json()["detail"] == f"county {OUTSIDE['county']} not found"
    assert (await api.client.get("/api/v1/reports/ops", params=q, headers=city)).status_code == 422
    theirs = await api.client.get("/api/v1/reports/ops", params={**q, "county": OUTSIDE["county"]}, headers=city)
    assert theirs.status_code == 200 and OUTSIDE["sn"] in theirs.text and INSIDE["sn"] not in theirs.text
    assert (await api.client.get("/api/v1/reports/ops", params={**q, "county": INSIDE["county"]},
                                 headers=city)).status_code == 404
    assert (await api.client.get("/api/v1/reports/stored", headers=h)).status_code == 404


async def test_a_county_user_reads_its_jobs_and_the_audit_rows_about_its_units(api: Api) -> None:
    """Jobs: those whose every unit lies in the county (a job reaching another county is the province's).
    Audit trail: the rows whose target is one of the county's units or jobs, as the province's trail has them."""
    await _fleet(api)
    st = api.app.state.storage
    h = {"Authorization": f"Bearer {await create_token(st, 'county-a', 'admin', scope='county:长安区')}"}
    city = {"Authorization": f"Bearer {await create_token(st, 'city-b', 'admin', scope='city:汉中市')}"}
    jobs = await api.client.get("/api/v1/jobs", headers=h)
    assert jobs.status_code == 200 and [j["id"] for j in jobs.json()["items"]] == ["job-a"] and jobs.json()["total"] == 1
    assert [j["id"] for j in (await api.client.get("/api/v1/jobs", headers=city)).json()["items"]] == ["job-b"]
    assert (await api.get("/api/v1/jobs")).json()["total"] == 3
    one = await api.client.get("/api/v1/jobs/job-a", headers=h)
    assert one.status_code == 200 and [u["sn"] for u in one.json()["units"]] == [INSIDE["sn"]]
    for job in ("job-b", "job-ab"):
        assert (await api.client.get(f"/api/v1/jobs/{job}", headers=h)).status_code == 404
    assert (await api.client.post("/api/v1/jobs/job-ab/abort", json={}, headers=h)).status_code == 404

    mine = (await api.client.get("/api/v1/audit", headers=h, params={"limit": 1000})).json()
    assert sorted((r["action"], r["target"]) for r in mine["items"]) == [
        ("command.state", INSIDE["sn"]), ("job.create", "job-a")] and mine["total"] == 2
    province = (await api.get("/api/v1/audit", limit=1000)).json()["items"]
    assert sorted(r["id"] for r in mine["items"]) == sorted(
        r["id"] for r in province if r["target"] in (INSIDE["sn"], "job-a"))
    assert not any(leak in str(mine) for leak in LEAKS)
    theirs = (await api.client.get("/api/v1/audit", headers=city, params={"action": "command.*"})).json()
    assert [r["target"] for r in theirs["items"]] == [OUTSIDE["sn"]]
