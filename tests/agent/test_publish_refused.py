"""A publish the broker refuses is not a delivery (catalogue V3).

The broker's ACL denies the unit's telemetry topic for a while (an operator's mistake), then is fixed and
reloaded (SIGHUP), with the agent connected throughout. Mosquitto answers each denied MQTT 5 PUBLISH with
PUBACK 0x87 (not authorised). The agent must release nothing while denied, count and log the refusals, never
take such a PUBACK for a round trip, and once the server acknowledges again deliver every sample and report
``publish_not_authorized`` with the count. (MQTT 3.1.1 has no reason code: there the server's application
acknowledgement alone keeps the rows, as it does here too.)
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from pki.ca import acl_text
from tests.conftest import epoch
from tests.fleet import AgentProc, Broker, Server, agent_config, wait_for

SN = "HN01300001"


class AclBroker(Broker):
    """The test's own Mosquitto: the fleet's configuration with an ACL file this test rewrites and reloads."""

    def __init__(self, pki, workdir: Path) -> None:
        super().__init__(pki, workdir)
        self.acl = self.workdir / "acl"
        self.set_acl(deny_telemetry=True)
        text = self.conf.read_text().replace(f"acl_file {pki.dir.resolve()}/acl", f"acl_file {self.acl}")
        assert f"acl_file {self.acl}" in text
        self.conf = self.workdir / "mosquitto.conf"
        self.conf.write_text(text)

    def set_acl(self, *, deny_telemetry: bool) -> None:
        text = acl_text()
        if deny_telemetry:
            text = text.replace("pattern write pf/%u/t\n", "")
        self.acl.write_text(text)

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)


def _outbox_samples(data: Path) -> list[int]:
    with sqlite3.connect(data / "outbox.sqlite", timeout=10) as con:
        return [r[0] for r in con.execute("SELECT seq FROM outbox WHERE kind='s' ORDER BY seq")]


def test_denied_telemetry_is_kept_then_delivered_and_reported(pki, tmp_path: Path) -> None:
    broker = AclBroker(pki, tmp_path / "broker").start()
    server = Server(pki, broker, tmp_path / "server").start()
    data = tmp_path / "data"
    cfg = agent_config(pki, broker, SN, data, sampling_interval=5,
                       link="batch_interval_s = 0\nack_timeout_s = 3\nbacklog_rate = 20.0")
    agent = AgentProc(cfg, tmp_path / "agent.log").start()
    try:
        # denied: the agent is connected and sends, the broker refuses every telemetry publish
        wait_for(lambda: (tmp_path / "agent.log").read_text().count("publish_not_authorized") >= 1, 30,
                 "the refusal seen by the agent")
        wait_for(lambda: len(_outbox_samples(data)) >= 3, 30, "samples taken while denied")
        time.sleep(4)  # and re-sent at least once (ack_timeout_s = 3)
        stored = server.get(f"/api/v1/units/{SN}/samples", limit=1000)
        assert stored.status_code == 404 or stored.json()["items"] == [], "nothing got through while denied"
        kept = _outbox_samples(data)
        assert len(kept) >= 3, "every sample stays in the outbox: 0 rows released while denied"
        # fixed
        broker.set_acl(deny_telemetry=False)
        broker.reload()

        def delivered() -> set[int]:
            r = server.get(f"/api/v1/units/{SN}/samples", limit=1000)
            return {s["seq"] for s in r.json()["items"]} if r.status_code == 200 else set()

        wait_for(lambda: set(kept) <= delivered(), 60, "every sample kept while denied delivered after the fix")
        wait_for(lambda: server.get(f"/api/v1/units/{SN}/events", kind="publish_not_authorized").status_code == 200
                 and server.get(f"/api/v1/units/{SN}/events", kind="publish_not_authorized").json()["items"], 60,
                 "publish_not_authorized reported after the fix")
        samples = server.get(f"/api/v1/units/{SN}/samples", limit=1000).json()["items"]
        event = server.get(f"/api/v1/units/{SN}/events", kind="publish_not_authorized").json()["items"][0]["data"]
        assert event["reason_code"] == 0x87 and event["count"] >= 3 and event["first"] <= event["last"], event
        # a refused PUBACK is no round trip: samples taken while everything was refused have none
        denied_until = event["last"]
        during = [s for s in samples if s["seq"] in kept and epoch(s["ts"]) < denied_until - 5]
        assert during and all(s.get("rtt_ms") is None for s in during), during[:3]
        assert agent.alive()
    finally:
        agent.stop()
        server.stop()
        broker.stop()
    log = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in log
    assert log.count("publish_not_authorized: the broker refused") == 1, "logged once per 10 minutes, not per publish"
    assert "delivery works again" in log
