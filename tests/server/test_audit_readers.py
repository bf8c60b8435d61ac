"""Auditors read the audit trail (issue 18): the auditor role exists for it. A province auditor reads every row, a
county auditor the rows about its county's units and jobs (as a county administrator does), viewers and
engineers are refused; the API limit counters are the province auditors' too."""

from __future__ import annotations

from server.auth import create_token
from tests.server.conftest import Api, at

INSIDE, OUTSIDE = "SX-A-0001", "SX-B-0001"


async def _seed(api: Api) -> None:
    st = api.app.state.storage
    await st.upsert_institutions([
        {"code": "INST-A", "name": "A-clinic", "county": "长安区", "region": "西安市"},
        {"code": "INST-B", "name": "B-clinic", "county": "汉台区", "region": "汉中市"}])
    await st.upsert_registry_units([{"sn": INSIDE, "institution": "INST-A"},
                                    {"sn": OUTSIDE, "institution": "INST-B"}], at("2025-03-03 08:00"), "test")
    audit = api.app.state.audit
    for sn in (INSIDE, OUTSIDE):  # as the command service writes a command's state change
        await audit.record("server", "command.state", sn, detail={"from": "sent", "to": "done"})
    await audit.record("wang", "session.signin", "wang", client="10.1.2.3", status=200, detail={"result": "ok"})


async def test_auditors_read_the_trail_scoped_and_other_roles_are_refused(api: Api) -> None:
    await _seed(api)
    st = api.app.state.storage
    province = {"Authorization": f"Bearer {await create_token(st, 'audit-p', 'auditor')}"}
    county = {"Authorization": f"Bearer {await create_token(st, 'audit-c', 'auditor', scope='county:长安区')}"}

    r = await api.client.get("/api/v1/audit", headers=province, params={"limit": 1000})
    assert r.status_code == 200, r.text
    rows = {(a["action"], a["target"]) for a in r.json()["items"]}
    assert {("command.state", INSIDE), ("command.state", OUTSIDE), ("session.signin", "wang")} <= rows
    r = await api.client.get("/api/v1/audit", headers=province, params={"action": "session.*"})
    assert [(a["actor"], a["client"], a["detail"]) for a in r.json()["items"]] == [("wang", "10.1.2.3",
                                                                                    {"result": "ok"})]

    mine = await api.client.get("/api/v1/audit", headers=county, params={"limit": 1000})
    assert mine.status_code == 200, mine.text
    assert [(a["action"], a["target"]) for a in mine.json()["items"]] == [("command.state", INSIDE)]
    assert mine.json()["total"] == 1 and OUTSIDE not in mine.text and "wang" not in mine.text

    for role in ("viewer", "engineer"):
        refused = await api.get("/api/v1/audit", role=role)
        assert refused.status_code == 403 and "auditor" in refused.json()["detail"], refused.text

    assert (await api.client.get("/api/v1/audit/limits", headers=province)).status_code == 200
    assert (await api.client.get("/api/v1/audit/limits", headers=county)).status_code == 404, "the province's"
