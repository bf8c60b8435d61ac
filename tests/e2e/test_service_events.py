"""Service statistics and interface reach from the terminal application's files, through a real agent, a real
broker (TLS, ACL) and a real server process (issue 18): only hourly counts leave the terminal. The application's
lines carry a person's name and ID number (as a careless application might write them); none of it may be found
in the MQTT payloads captured at the broker, the agent's log and outbox, the server's log or its database."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from tests.e2e.test_privacy import db_text, mqtt_text, server_client
from tests.fleet import AgentProc, agent_config, wait_for
from tests.identities import observer

NAME = "张秀兰"
ID_NUMBER = "460100198703150021"
PHONE = "13907551234"


def _lines(hour: int) -> list[dict]:
    person = {"name": NAME, "id_number": ID_NUMBER, "phone": PHONE, "address": "海口市秀英区石山镇美安村12号"}
    out = []
    for k, method in enumerate(["face", "face", "idcard", "evoucher", "face", "socialcard"]):
        out.append({"ts": hour + 60 * k + 5, "event": "service", "method": method, "business": "outpatient_settle",
                    "patient": person, "amount": "35.20"})
    out.append({"ts": hour + 900, "event": "check", "method": "idcard", **person})
    out.append({"ts": hour + 960, "event": "service", "method": "face", "business": "refund", "name": NAME})
    return out


def test_only_hourly_counts_leave_the_terminal(pki, broker, server, tmp_path: Path) -> None:
    sn = "HN00180001"
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    events = app_dir / "service-events.jsonl"
    hour = (int(time.time()) // 3600 - 2) * 3600  # an hour that is over
    with events.open("w") as f:
        for line in _lines(hour):
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
        f.write("not json, " + NAME + " " + ID_NUMBER + "\n")  # a broken line: skipped, never logged
    status = app_dir / "interfaces.json"
    status.write_text(json.dumps({"interfaces": {
        "settle-2101": {"ok": True, "last_ok": int(time.time()) - 30, "last_request": {"name": NAME}},
        "catalogue-1301": {"ok": False, "reason": f"HTTP 500 for {ID_NUMBER}"},
        "not-configured": {"ok": True}}}, ensure_ascii=False))
    wire_bytes: list[bytes] = []
    sniffer = server_client(pki, broker.port, observer(pki, broker),
                            on_message=lambda c, u, m: wire_bytes.append(m.payload))
    sniffer.subscribe([(f"pf/{sn}/#", 1)])
    extra = (f'[terminal_app]\nevents_file = "{events}"\nstatus_file = "{status}"\n'
             'interfaces = ["settle-2101", "catalogue-1301"]\ncellular_interface = "lo"\n'
             '[log]\nlevel = "DEBUG"\n')
    cfg = agent_config(pki, broker, sn, tmp_path / "a", sampling_interval=5, link="batch_interval_s = 0", extra=extra)
    agent = AgentProc(cfg, tmp_path / "a.log").start()

    def rows(sql: str) -> list:
        con = sqlite3.connect(server.db)
        try:
            return con.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    try:
        got = wait_for(lambda: rows(f"select services, face, idcard, evoucher, other, business from service_hour "
                                    f"where sn='{sn}'"), 60, "the hour's counts at the server")
        reach = wait_for(lambda: (r := rows(f"select interface, reached, detail from biz_access where sn='{sn}' "
                                            "order by interface")) and len(r) == 2 and r, 30, "both interfaces")
        addr = wait_for(lambda: rows(f"select ip, link from unit_address where sn='{sn}'"), 30, "the address")
    finally:
        agent.stop()
        sniffer.loop_stop()
    # 7 services (the "check" line is an identity check without a service); checks: face 4, ID card 2 (one of them
    # the check line), e-voucher 1, other 1 (a social-security card)
    assert got == [(7, 4, 2, 1, 1, json.dumps({"outpatient_settle": 6, "refund": 1}, sort_keys=True))]
    assert reach == [("catalogue-1301", 0, "other"), ("settle-2101", 1, "")]
    assert addr == [("127.0.0.1", "cellular")]

    mqtt = mqtt_text(wire_bytes)
    assert '"svc"' in mqtt and '"outpatient_settle"' in mqtt, "the counts did travel through the broker"
    places = {
        "mqtt": mqtt,
        "agent log": (tmp_path / "a.log").read_text(),
        "agent outbox": db_text(tmp_path / "a" / "outbox.sqlite"),
        "agent state": (tmp_path / "a" / "appwatch.json").read_text(),
        "server log": (tmp_path / "server" / "server.log").read_text(),
        "server db": db_text(server.db),
    }
    for where, text in places.items():
        for secret in (NAME, ID_NUMBER, PHONE, "美安村12号", "35.20"):
            assert secret not in text, f"{secret!r} found in {where}"


def test_the_reported_address_outside_the_allocation_raises_an_alert(pki, broker, server, tmp_path: Path) -> None:
    sn = "HN00180002"
    assert server.request("PUT", "/api/v1/institutions/H18", json={"name": "石山镇卫生院", "county": "秀英区",
                                                                   "region": "海口市"}).status_code == 200
    assert server.request("PUT", f"/api/v1/registry/units/{sn}", json={"institution": "H18"}).status_code == 200
    r = server.request("POST", "/api/v1/access/pools", json={"region": "秀英区", "link_type": "4g_vpdn",
                                                              "cidr": "10.61.18.0/29"})
    assert r.status_code == 200, r.text
    r = server.request("POST", "/api/v1/access/applications", json={
        "domain": "network", "action": "register", "institution": "H18", "sn": sn, "link_type": "4g_vpdn"})
    for _ in range(2):
        r = server.request("POST", f"/api/v1/access/applications/{r.json()['id']}/decision",
                           json={"decision": "approve"})
    assert (r.json()["state"], r.json()["ip"]) == ("approved", "10.61.18.1")
    # the terminal's cellular interface says 127.0.0.1 (the loopback stands in for wwan0): not what it was given
    extra = '[terminal_app]\ncellular_interface = "lo"\n'
    cfg = agent_config(pki, broker, sn, tmp_path / "a", sampling_interval=5, link="batch_interval_s = 0", extra=extra)
    agent = AgentProc(cfg, tmp_path / "a.log").start()
    try:
        alerts = wait_for(lambda: server.get("/api/v1/alerts", kind="address").json()["items"], 60,
                          "the address alert")
    finally:
        agent.stop()
    assert [a["sn"] for a in alerts] == [sn]
    assert "127.0.0.1" in alerts[0]["message"] and "10.61.18.1" in alerts[0]["message"]
    q = server.get("/api/v1/access/network", sn=sn).json()["items"][0]
    assert (q["ip"], q["reported_ip"], q["reported_link"]) == ("10.61.18.1", "127.0.0.1", "cellular")
