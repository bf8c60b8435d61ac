"""Admin abort of a running job; off-hours scheduling on the server's (accelerated) clock; county/model
filters from the registry; the `posfleet server command send|show` CLI against the real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from simulator.local import ENV
from tests.commands.conftest import Fleet
from tests.commands.lite import executed
from tests.commands.test_jobs import _job, _lite, _wait_all_online
from tests.conftest import epoch
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
        sent_by_then = {u["sn"] for u in _job(fleet, jid)["units"] if u["sent"] is not None}
        time.sleep(3)  # longer than a release interval: nothing more goes out
        job = _job(fleet, jid)
        assert job["state"] == "aborted"
        done = [u for u in job["units"] if u["sent"] is not None]
        stopped = [u for u in job["units"] if u["sent"] is None]
        # (how many went out before the abort depends on the box's speed: 1-3 when quiet, 4 once under load)
        assert {u["sn"] for u in done} == sent_by_then and 1 <= len(done) and len(stopped) >= 3, job["progress"]
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


def test_off_hours_holds_a_unit_until_its_institution_closes_and_an_unknown_unit_until_the_default_hours_end(
        fleet: Fleet) -> None:
    """The server runs 150 times faster from 17:10 Beijing time: the clinic open 08:00-18:00 closes 20 s
    (real) later (from 17:30, 12 s, the set-up alone took too long on a loaded box). Its unit stays queued until then; a unit whose clinic is closed now gets the command at once.
    A unit the registry does not know falls back to the server's default service hours ([availability]
    service_hours, set to 08:00-17:50 here so it is told apart from the clinic's): held until 17:50, then sent
    before the clinic's unit."""
    cst = timezone(timedelta(hours=8))
    now = datetime.now(cst)
    start = now.replace(hour=17, minute=10, second=0, microsecond=0)
    if start > now:
        start -= timedelta(days=1)  # in the past, so the terminals' real clocks never see a future command
    closes = start.replace(hour=18, minute=0).timestamp()
    default_closes = start.replace(hour=17, minute=50).timestamp()  # 16 s (real) after the start
    speed = 150.0
    anchor = time.time()
    fleet.start_server(clock={"speed": speed, "start": start.isoformat(), "anchor": anchor},
                       settings='[availability]\nservice_hours = "08:00-17:50"')
    open_sn, closed_sn, unknown_sn = "HN59200001", "HN59200002", "HN59200003"
    _register(fleet, {"OPEN1": {"county": "Lankao", "hours": "08:00-18:00"},
                      "SHUT1": {"county": "Lankao", "hours": "06:00-07:00"}},
              {open_sn: {"institution": "OPEN1"}, closed_sn: {"institution": "SHUT1"}})
    sns = [open_sn, closed_sn, unknown_sn]
    lite = _lite(fleet, sns)
    try:
        _wait_all_online(fleet, sns)
        assert fleet.server.get(f"/api/v1/registry/units/{unknown_sn}").status_code == 404, "not in the registry"
        r = fleet.send(type="collect_logs", params={"lines": 1}, sns=sns, off_hours=True)
        assert r.status_code == 201, r.text
        jid = r.json()["job"]["id"]
        assert r.json()["job"]["off_hours"] is True
        created = epoch(r.json()["job"]["created"])
        assert created < default_closes - 120, f"the job was made {(created - start.timestamp()) / speed:.1f} s " \
            "(real) after the server started: too late for this test"

        def unit(sn: str) -> dict:
            return next(u for u in _job(fleet, jid)["units"] if u["sn"] == sn)

        def server_now() -> float:
            return (time.time() - anchor) * speed + start.timestamp()
        wait_for(lambda: unit(closed_sn)["sent"] is not None, 10, "the closed clinic's unit", interval=0.2)
        # until 17:50 on the server's clock the unknown unit is held, and the open clinic's until 18:00
        while server_now() < default_closes - 30:
            for sn in (open_sn, unknown_sn):
                u = unit(sn)
                assert u["state"] == "queued" and u["sent"] is None, u
            time.sleep(0.3)
        u = wait_for(lambda: (x := unit(unknown_sn))["sent"] is not None and x, 20, "the default hours to end",
                     interval=0.2)
        assert default_closes <= epoch(u["sent"]) < closes, f"sent at {epoch(u['sent']) - default_closes:.0f} s after 17:50"
        while server_now() < closes - 30:
            u = unit(open_sn)
            assert u["state"] == "queued" and u["sent"] is None, u
            time.sleep(0.3)
        u = wait_for(lambda: (x := unit(open_sn))["sent"] is not None and x, 20, "the open clinic to close",
                     interval=0.2)
        assert epoch(u["sent"]) >= closes, f"sent {closes - epoch(u['sent']):.0f} s (server clock) before closing time"
        assert executed(fleet.root / "lite" / closed_sn) == 1
        wait_for(lambda: executed(fleet.root / "lite" / open_sn) == 1 and executed(fleet.root / "lite" / unknown_sn)
                 == 1, 10, "the held units to run it")
    finally:
        lite.stop()


def _cli(fleet: Fleet, *args: str, role: str = "admin") -> subprocess.CompletedProcess[str]:
    env = dict(ENV, POSFLEET_URL=f"http://127.0.0.1:{fleet.server.http_port}",
               POSFLEET_TOKEN=fleet.server.token(role))
    return subprocess.run([sys.executable, "-m", "posfleet", "server", "command", *args], capture_output=True,
                          text=True, env=env, timeout=60, cwd=fleet.root)


def test_cli_send_and_show_against_the_real_server(fleet: Fleet) -> None:
    sn = "HN59300001"
    fleet.start_server()
    fleet.start_agent(sn)
    fleet.wait_online(sn)
    p = _cli(fleet, "send", "--type", "collect_logs", "--sn", sn, "--params", '{"lines": 2}', role="engineer")
    assert p.returncode == 0, p.stdout + p.stderr
    cid = json.loads(p.stdout)["command"]["id"]
    fleet.wait_state(cid)
    p = _cli(fleet, "show", cid, role="viewer")
    assert p.returncode == 0, p.stdout + p.stderr
    shown = json.loads(p.stdout)
    assert shown["id"] == cid and shown["sn"] == sn and shown["state"] == "succeeded" and shown["code"] == 0
    # an engineer cannot reboot: the CLI exits non-zero with the server's reason, and nothing ran
    p = _cli(fleet, "send", "--type", "reboot", "--sn", sn, role="engineer")
    assert p.returncode == 1 and "needs role admin" in p.stdout
    # several units make a job; show takes a job id too
    other = "HN59300002"
    p = _cli(fleet, "send", "--type", "collect_logs", "--sn", sn, "--sn", other, "--expires", "60")
    assert p.returncode == 0, p.stdout + p.stderr
    jid = json.loads(p.stdout)["job"]["id"]
    p = _cli(fleet, "show", jid)
    assert p.returncode == 0, p.stdout + p.stderr
    job = json.loads(p.stdout)
    assert job["id"] == jid and sorted(u["sn"] for u in job["units"]) == [sn, other]
    p = _cli(fleet, "show", "c-no-such-command")
    assert p.returncode == 1 and "no command" in p.stdout
    p = _cli(fleet, "send", "--type", "collect_logs")
    assert p.returncode == 2 and "give --sn" in p.stderr
    assert not (fleet.agent_dir(sn) / "reboots").exists()
