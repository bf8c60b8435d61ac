"""Admin abort of a running job; off-hours scheduling on the server's (accelerated) clock; county/model
filters from the registry; the `posfleet server command send|show` CLI against the real server."""

from __future__ import annotations

import time

from tests.commands.conftest import Fleet
from tests.commands.lite import executed
from tests.commands.test_jobs import _job, _lite, _wait_all_online
from tests.fleet import wait_for


def test_admin_aborts_a_running_job_and_the_remaining_units_never_get_it(fleet: Fleet) -> None:
    fleet.start_server()
    sns = [f"HN5900{i:04d}" for i in range(8)]
    lite = _lite(fleet, sns)
    try:
        _wait_all_online(fleet, sns)
        # 30 units a minute: one every 2 s, so most of the job is still queued when it is aborted
        r = fleet.send(type="collect_logs", params={"lines": 1}, sns=sns, rate_per_min=30)
        assert r.status_code == 201, r.text
        jid = r.json()["job"]["id"]
        wait_for(lambda: _job(fleet, jid)["progress"].get("succeeded", 0) >= 1, 20, "the first unit", interval=0.2)
        path = f"/api/v1/jobs/{jid}/abort"
        assert fleet.server.request("POST", path, role="engineer", json={"reason": "x"}).status_code == 403
        assert fleet.server.request("POST", path, role="viewer", json={}).status_code == 403
        r = fleet.server.request("POST", path, role="admin", json={"reason": "wrong county"})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["state"] == "aborted" and "wrong county" in job["reason"]
        time.sleep(3)  # longer than a release interval: nothing more goes out
        job = _job(fleet, jid)
        assert job["state"] == "aborted"
        done = [u for u in job["units"] if u["sent"] is not None]
        stopped = [u for u in job["units"] if u["sent"] is None]
        assert 1 <= len(done) <= 3 and len(stopped) >= 5, job["progress"]
        assert all(u["state"] == "expired" and "aborted by" in u["reason"] and "wrong county" in u["reason"]
                   for u in stopped)
        # units already sent finish as usual
        wait_for(lambda: all(u["state"] == "succeeded" for u in _job(fleet, jid)["units"] if u["sent"]), 15,
                 "the sent units to finish", interval=0.3)
        assert sum(executed(fleet.root / "lite" / u["sn"]) for u in stopped) == 0
        assert sum(executed(fleet.root / "lite" / u["sn"]) for u in done) == len(done)
        # a second abort is a conflict; an unknown job is 404
        assert fleet.server.request("POST", path, role="admin", json={}).status_code == 409
        assert fleet.server.request("POST", "/api/v1/jobs/jnope/abort", role="admin", json={}).status_code == 404
        rows = fleet.audit(action="job.abort")
        assert rows[0]["target"] == jid and rows[0]["actor"] and rows[0]["role"] == "admin"
    finally:
        lite.stop()


def _register(fleet: Fleet, institutions: dict[str, dict[str, str]], units: dict[str, dict[str, str]]) -> None:
    for code, body in institutions.items():
        r = fleet.server.request("PUT", f"/api/v1/institutions/{code}", json={"name": f"clinic {code}", **body})
        assert r.status_code == 200, r.text
    for sn, body in units.items():
        r = fleet.server.request("PUT", f"/api/v1/registry/units/{sn}", json=body)
        assert r.status_code == 200, r.text


def test_county_and_model_filter_selects_exactly_the_registered_units(fleet: Fleet) -> None:
    fleet.start_server()
    sns = [f"HN5910{i:04d}" for i in range(6)]
    _register(fleet, {"LK01": {"county": "Lankao"}, "QX01": {"county": "Qixian"}}, {
        sns[0]: {"institution": "LK01", "model": "A920"}, sns[1]: {"institution": "LK01", "model": "A920"},
        sns[2]: {"institution": "LK01", "model": "A8"}, sns[3]: {"institution": "QX01", "model": "A920"},
        sns[4]: {"institution": "QX01", "model": "A8"}, sns[5]: {"model": "A920"}})
    lite = _lite(fleet, sns)
    try:
        _wait_all_online(fleet, sns)
        r = fleet.send(role="engineer", type="collect_logs", params={"lines": 1},
                       filter={"county": "Lankao", "model": "A920"})
        assert r.status_code == 201, r.text
        jid = r.json()["job"]["id"]
        job = wait_for(lambda: (j := _job(fleet, jid))["state"] == "finished" and j, 30, "the job", interval=0.3)
        assert sorted(u["sn"] for u in job["units"]) == sns[:2]
        assert job["progress"] == {"succeeded": 2}
        time.sleep(1)
        assert [executed(fleet.root / "lite" / sn) for sn in sns] == [1, 1, 0, 0, 0, 0]
        # one county, every model
        r = fleet.send(role="engineer", type="collect_logs", params={"lines": 1}, filter={"county": "Qixian"})
        assert sorted(u["sn"] for u in _job(fleet, r.json()["job"]["id"])["units"]) == sns[3:5]
        # a filter that selects nobody, an unknown filter field, an empty filter: refused, field named
        r = fleet.send(role="engineer", type="collect_logs", filter={"county": "Nowhere"})
        assert r.status_code == 422 and "no unit" in r.text
        assert fleet.send(role="engineer", type="collect_logs", filter={"colour": "red"}).status_code == 422
        r = fleet.send(role="engineer", type="collect_logs", filter={})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "filter"
    finally:
        lite.stop()
