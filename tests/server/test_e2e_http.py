"""The real server process over real HTTP, with a real broker and a real agent: registry, roles, roll-ups."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.fleet import AgentProc, agent_config, wait_for

FAST = "batch_interval_s = 0\nbacklog_rate = 20.0"
TZ = ZoneInfo("Asia/Shanghai")


def test_registry_roles_and_an_agent_joining_over_http(pki, broker, server, tmp_path: Path) -> None:
    csv_body = ("\ufeff机构编码,机构名称,区县,统筹区,机构类型,服务时间,联系人\r\n"
                "H001,石山镇卫生院,秀英区,海口市,乡镇卫生院,00:00-24:00,王医生\r\n").encode()
    r = server.request("POST", "/api/v1/registry/institutions/import", content=csv_body)
    assert r.status_code == 200 and r.json() == {"imported": 1, "errors": []}
    assert server.request("POST", "/api/v1/registry/institutions/import", role="viewer",
                          content=csv_body).status_code == 403
    r = server.request("PUT", "/api/v1/registry/units/HN00090001", json={"institution": "H001"})
    assert r.status_code == 200, r.text

    # a terminal nobody registered starts reporting: it joins the registry, in service, no institution
    cfg = agent_config(pki, broker, "HN00090002", tmp_path / "a2", sampling_interval=5, link=FAST)
    agent = AgentProc(cfg, tmp_path / "a2.log").start()
    try:
        def joined():
            r = server.get("/api/v1/registry/units/HN00090002", role="viewer")
            return r.status_code == 200 and r.json()

        unit = wait_for(joined, 40, "the agent's unit in the registry")
        assert unit["status"] == "in_service" and unit["institution"] is None
        assert unit["status_history"][0]["by"] == "ingest"
    finally:
        agent.stop()

    listing = server.get("/api/v1/registry/units", role="viewer").json()
    assert {u["sn"] for u in listing["items"]} == {"HN00090001", "HN00090002"}
    # figures for the hours closed so far today answer over HTTP; the registered, silent unit is no data
    now = datetime.now(TZ).replace(minute=0, second=0, microsecond=0)
    r = server.get("/api/v1/availability", role="viewer", group_by="unit",
                   **{"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["complete"] is False and body["counted_to"] == now.isoformat()
    bad = server.get("/api/v1/availability", **{"from": "2025-01-01T00:00:00+8", "to": now.isoformat()})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "from"
    status = server.get("/api/v1/availability/status").json()
    assert status["rolled_to"] == now.isoformat()
