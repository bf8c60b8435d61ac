"""The server inspects itself (issue 17): GET /api/v1/server/inspection, its alerts, and Prometheus /metrics.

Real parts: the app with its SQLite file (or PostgreSQL with ``--storage postgresql``), the real ingest path, a real
fleet CA in a folder (certificates with the dates under test), the real ``posfleet server db backup`` operation.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import msgspec

from agent.enroll import make_key_and_csr
from pki.ca import FleetCA
from server.storage import ops
from tests.server.conftest import OK_CHECKS, make_api, sample
from wire.messages import Check


def _ca(tmp_path: Path, terminals: dict[str, int]) -> Path:
    """A fleet CA with the server's client certificate and one terminal certificate per SN (days valid)."""
    d = tmp_path / "ca"
    ca = FleetCA.init(d, "correct horse battery")
    ca.issue_server_client(days=400)
    for sn, days in terminals.items():
        _key, csr = make_key_and_csr(sn, tmp_path / "t" / sn)
        (tmp_path / "t" / sn / "terminal.pem").write_bytes(ca.sign_csr(csr.read_bytes(), days=days))
    return d


def _metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pat = "^" + re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" (\S+)$"
    m = re.search(pat, text, re.M)
    return float(m.group(1)) if m else None


async def test_certificates_near_expiry_are_found_and_alerted(tmp_path: Path) -> None:
    ca_dir = _ca(tmp_path, {"HN00000001": 30, "HN00000002": 400, "HN00000003": 10})
    FleetCA(ca_dir, "correct horse battery").revoke(cn="HN00000003")  # revoked: not watched any more
    extra = {"pki": {"ca_dir": str(ca_dir)},
             "mqtt": {"ca_file": str(ca_dir / "ca.pem"), "cert_file": str(ca_dir / "server-client.pem")}}
    async with make_api(tmp_path, extra) as api:
        body = (await api.get("/api/v1/server/inspection", role="viewer")).json()
        certs = {c["what"]: c for c in body["certificates"]["items"]}
        assert 3640 < certs["ca"]["days_left"] <= 3650 and certs["ca"]["alert"] is False
        assert 399 < certs["server"]["days_left"] <= 400 and re.match(r"\d{4}-\d\d-\d\dT.*\+08:00$",
                                                                      certs["server"]["not_after"])
        terms = body["certificates"]["terminals"]
        assert terms["total"] == 2 and terms["expiring"] == 1 and terms["expired"] == 0
        assert [t["sn"] for t in terms["soonest"]] == ["HN00000001"] and 29 < terms["soonest"][0]["days_left"] <= 30

        r = await api.req("POST", "/api/v1/server/inspection/run")
        assert r.status_code == 200, r.text
        alerts = (await api.get("/api/v1/alerts", role="viewer", kind="certificate")).json()["items"]
        assert [(a["sn"], a["data"]["what"]) for a in alerts] == [("HN00000001", "terminal")]
        assert "expires in 30 days" in alerts[0]["message"] or "expires in 29 days" in alerts[0]["message"]

        # renewed (a new certificate for the same SN): the alert closes on the next inspection
        _key, csr = make_key_and_csr("HN00000001", tmp_path / "renew")
        FleetCA(ca_dir, "correct horse battery").sign_csr(csr.read_bytes(), days=825)
        await api.req("POST", "/api/v1/server/inspection/run")
        assert (await api.get("/api/v1/alerts", role="viewer", kind="certificate")).json()["items"] == []


async def test_backup_age_and_disk_fill_raise_and_clear_server_alerts(tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        settings = api.app.state.settings
        body = (await api.get("/api/v1/server/inspection", role="viewer")).json()
        assert body["backup"]["last"] is None and body["backup"]["alert"] is True
        assert any(p["check"] == "backup" for p in body["problems"])
        # SQLite: the database's file system; PostgreSQL: its disks are the database host's, the server's own here
        db = next(d for d in body["disks"] if "database" in d["what"] or settings.storage.url.startswith("postgres"))
        assert 0 < db["used_pct"] < 100 and body["database"]["bytes"] > 0
        assert (body["database"]["fill_pct"] is None) == settings.storage.url.startswith("postgres")

        # the disk line far below today's fill: the disk is "full"
        settings.inspection.disk_alert_pct = max(0.1, db["used_pct"] - 5)
        await api.req("POST", "/api/v1/server/inspection/run")
        kinds = {a["data"]["check"] for a in (await api.get("/api/v1/alerts", role="viewer", kind="server")).json()["items"]}
        assert {"backup", "disk"} <= kinds

        # a backup by the operator's command is seen by the server, and its age with it
        ops.backup(settings.storage.url, tmp_path / "b" / "fleet.bak")
        settings.inspection.disk_alert_pct = 99.9
        res = await api.req("POST", "/api/v1/server/inspection/run")
        body = res.json()
        assert body["backup"]["file"] == str((tmp_path / "b" / "fleet.bak").resolve())
        assert body["backup"]["age_h"] < 0.1 and body["backup"]["alert"] is False
        kinds = {a["data"]["check"] for a in (await api.get("/api/v1/alerts", role="viewer", kind="server")).json()["items"]}
        assert "backup" not in kinds and "disk" not in kinds

        # two days later with no new backup: the alert is back, with the age
        later = await api.app.state.inspector.run(now=time.time() + 49 * 3600)
        assert later["backup"]["alert"] is True and 48 < later["backup"]["age_h"] < 50
        backup = [a for a in (await api.get("/api/v1/alerts", role="viewer", kind="server")).json()["items"]
                  if a["data"]["check"] == "backup"]
        assert len(backup) == 1 and "49 h old" in backup[0]["message"]


async def test_metrics_count_ingest_rejects_latency_and_alerts(tmp_path: Path) -> None:
    async with make_api(tmp_path, {"alerts": {"enabled": False}}) as api:  # evaluated by the test alone
        t0 = int(api.clock.t) // 60 * 60
        await api.req("PUT", "/api/v1/institutions/H001", json={"name": "x", "county": "秀英区"})
        await api.req("PUT", "/api/v1/registry/units/HN00000001", json={"institution": "H001"})
        cover_open = {**OK_CHECKS, "printer": Check(1, "cover_open")}
        await api.feed("HN00000001", [sample(k, t0 + 60 * k, checks=cover_open) for k in range(5)])
        bad = b"\x01" + msgspec.msgpack.encode({"sn": "HN00000001", "e": "not a number"})
        await api.app.state.ingest._process([("pf/HN00000001/t", bad, 0, 0)])
        for _ in range(3):
            assert (await api.get("/api/v1/units/HN00000001", role="viewer")).status_code == 200
        assert (await api.req("POST", "/api/v1/alerts/evaluate")).status_code == 200

        r = await api.client.get("/metrics")  # the test client's address is 127.0.0.1: open
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        text = r.text
        assert _metric(text, "posfleet_ingest_samples_stored_total") == 5
        assert _metric(text, "posfleet_ingest_messages_total") == 2
        rejected = re.findall(r'^posfleet_ingest_rejected_messages_total\{reason="([^"]+)"\} (\S+)$', text, re.M)
        assert len(rejected) == 1 and float(rejected[0][1]) == 1
        assert _metric(text, "posfleet_api_request_duration_seconds_count", method="GET",
                       route="/api/v1/units/{sn}", status="2xx") == 3
        assert "HN00000001" not in text  # route templates, never a unit's SN: bounded label values
        assert _metric(text, "posfleet_units", state="offline") == 1
        assert _metric(text, "posfleet_ingest_lag_seconds") == 0
        assert _metric(text, "posfleet_recount_backlog_hours") is not None
        assert _metric(text, "posfleet_alerts_open", kind="fault") == 1
        open_alerts = sum(float(v) for v in re.findall(r"^posfleet_alerts_open\{kind=\"[^\"]+\"\} (\S+)$", text, re.M))
        assert open_alerts == (await api.get("/api/v1/alerts", role="viewer")).json()["total"] > 0

        # the self-inspection says the same of ingest: messages, samples stored, lag, rejects by reason
        ingest = (await api.get("/api/v1/server/inspection", role="viewer")).json()["ingest"]
        assert (ingest["messages"], ingest["samples_stored"], ingest["lag_s"]) == (2, 5, 0)
        assert ingest["rejected_messages"] == {rejected[0][0]: 1}, ingest


async def test_metrics_from_another_network_need_a_token(tmp_path: Path) -> None:
    async with make_api(tmp_path, {"metrics": {"open_to": ["127.0.0.0/8", "10.9.0.0/16"]}}) as api:
        far = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app, client=("192.0.2.7", 4000)),
                                base_url="http://test")
        near = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app, client=("10.9.3.4", 4000)),
                                 base_url="http://test")
        async with far, near:
            assert (await far.get("/metrics")).status_code == 401
            assert (await far.get("/metrics", headers={"Authorization": "Bearer pf_wrong"})).status_code == 401
            assert (await far.get("/metrics", headers=api.h("viewer"))).status_code == 200
            assert (await near.get("/metrics")).status_code == 200


def test_a_wrong_metrics_network_is_named_at_start(tmp_path: Path) -> None:
    import pytest

    from server.settings import SettingsError, parse

    with pytest.raises(SettingsError, match=r"metrics\.open_to.*item 1: '10\.0\.0\.0/33'"):
        parse({"metrics": {"open_to": ["::1/128", "10.0.0.0/33"]}})


async def test_renewal_requests_left_unsigned_are_alerted(tmp_path: Path) -> None:
    from server.storage import renewals

    async with make_api(tmp_path) as api:
        st = api.app.state.storage
        await renewals.put(st, "HN00000001", {"state": "requested", "received": time.time() - 8 * 86400})
        await renewals.put(st, "HN00000002", {"state": "requested", "received": time.time() - 3600})
        await renewals.put(st, "HN00000003", {"state": "switched"})
        body = (await api.req("POST", "/api/v1/server/inspection/run")).json()
        r = body["certificates"]["renewals"]
        assert r["waiting"] == 2 and r["by_state"] == {"requested": 2, "switched": 1} and r["alert"] is True
        assert r["oldest_waiting"].endswith("+08:00")
        server = (await api.get("/api/v1/alerts", role="viewer", kind="server")).json()["items"]
        renewal = [a for a in server if a["data"]["check"] == "renewal"]
        assert len(renewal) == 1 and "2 terminal certificate renewal request(s) wait for the CA, the oldest 8 days" \
            in renewal[0]["message"] and renewal[0]["data"]["n"] == 2
        # the CA signed them: the alert closes
        for sn in ("HN00000001", "HN00000002"):
            await renewals.put(st, sn, {"state": "signed"})
        await api.req("POST", "/api/v1/server/inspection/run")
        server = (await api.get("/api/v1/alerts", role="viewer", kind="server")).json()["items"]
        assert [a for a in server if a["data"]["check"] == "renewal"] == []


def test_an_unreadable_ca_index_is_a_warning_at_start(tmp_path: Path) -> None:
    from server.settings import check_files, parse

    s = parse({"ingest_enabled": False, "storage": {"url": f"sqlite:///{tmp_path / 'fleet.sqlite'}"},
               "pki": {"ca_dir": str(tmp_path / "no-ca")}})
    found = [p for p in check_files(s) if p.setting == "pki.ca_dir"]
    assert len(found) == 1 and not found[0].fatal and "cannot read the CA's index" in str(found[0])
    _ca(tmp_path, {})
    s = parse({"ingest_enabled": False, "storage": {"url": f"sqlite:///{tmp_path / 'fleet.sqlite'}"},
               "pki": {"ca_dir": str(tmp_path / "ca")}})
    assert [p for p in check_files(s) if p.setting == "pki.ca_dir"] == []
