"""Commands through the API to a real agent: roles, states, output, audit."""

from __future__ import annotations

import json

from tests.commands.conftest import Fleet


def test_engineer_sends_diagnostics_but_cannot_reboot_and_viewer_sends_nothing(fleet: Fleet) -> None:
    fleet.start_server()
    fleet.start_agent("HN50000001")
    fleet.wait_online("HN50000001")
    r = fleet.send(role="engineer", type="network_check", sn="HN50000001")
    assert r.status_code == 201, r.text
    cid = r.json()["command"]["id"]
    done = fleet.wait_state(cid)
    assert done["state"] == "succeeded", done
    out = json.loads(done["output"])
    assert out["connected"] is True and "tls_handshake_ms" in out
    assert done["sent"] and done["started"] and done["finished"] and done["code"] == 0

    refused = fleet.send(role="engineer", type="reboot", sn="HN50000001")
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    assert fleet.send(role="viewer", type="network_check", sn="HN50000001").status_code == 403
    assert not (fleet.agent_dir("HN50000001") / "reboots").exists()
    # nothing was queued by the refused requests
    items = fleet.server.get("/api/v1/commands", sn="HN50000001").json()["items"]
    assert [c["type"] for c in items] == ["network_check"]

    # the audit: who sent what to whom, every state change, every API write incl. the refused ones
    created = fleet.audit(action="command.create")
    assert created[0]["actor"] == "test-engineer" and created[0]["client"] == "127.0.0.1"
    assert created[0]["detail"]["targets"] == ["HN50000001"] and created[0]["detail"]["type"] == "network_check"
    states = [(a["detail"]["from"], a["detail"]["to"]) for a in reversed(fleet.audit(action="command.state"))
              if a["detail"]["id"] == cid]
    assert states[0] == ("queued", "sent") and states[-1][1] == "succeeded"
    writes = fleet.audit(action="api.post", target="/api/v1/commands")
    assert sorted(w["status"] for w in writes) == [201, 403, 403]
    assert {w["actor"] for w in writes} == {"test-engineer", "test-viewer"}
    # the audit is not for engineers, and it is append-only
    assert fleet.server.get("/api/v1/audit", role="engineer").status_code == 403


def test_unknown_type_and_bad_params_are_refused_by_the_api(fleet: Fleet) -> None:
    fleet.start_server()
    r = fleet.send(type="format_disk", sn="HN50000002")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "type"
    r = fleet.send(type="collect_logs", sn="HN50000002", params={"lines": 10, "rm": "-rf"})
    assert r.status_code == 422 and "rm" in r.json()["detail"]
    r = fleet.send(type="network_check", sns=[f"HN5100{i:04d}" for i in range(60)])
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "confirm"
    r = fleet.send(type="network_check", sns=[f"HN5100{i:04d}" for i in range(60)], confirm=True)
    assert r.status_code == 201 and r.json()["job"]["total"] == 60


def test_pending_commands_per_unit_are_bounded(fleet: Fleet) -> None:
    fleet.start_server(max_pending_per_unit=3)
    for _ in range(3):
        assert fleet.send(type="network_check", sn="HN50000003").status_code == 201
    r = fleet.send(type="network_check", sn="HN50000003")
    assert r.status_code == 409 and "HN50000003" in r.json()["detail"]
