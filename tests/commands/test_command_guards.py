"""Commands a terminal must not run however valid their signature: retained ones (catalogue V5) and reboots
over the hourly budget (catalogue S8).

The commands are signed with the server's own command key and published with the server's broker
certificate (the only identity allowed to write ``pf/<sn>/c``): what a server bug, a replay by whoever
holds that certificate, or a stray ``retain`` would put on the wire.
"""

from __future__ import annotations

import time

from tests.commands.conftest import Fleet
from tests.commands.test_security import _publisher, _signed
from tests.fleet import wait_for
from wire import topics


def _reboots(fleet: Fleet, sn: str) -> int:
    f = fleet.agent_dir(sn) / "reboots"
    return f.read_text().count("x") if f.exists() else 0


def _results(fleet: Fleet, state: str) -> dict[str, str]:
    rows = [a["detail"] for a in fleet.audit(action="command.unmatched_result", limit=1000)]
    return {d["id"]: d["output"] for d in rows if d["state"] == state}


def _events(fleet: Fleet, sn: str, kind: str) -> list[dict]:
    assert fleet.server is not None
    r = fleet.server.get(f"/api/v1/units/{sn}/events", kind=kind, limit=1000)
    return r.json()["items"] if r.status_code == 200 else []


def _back_after_reboot(fleet: Fleet, sn: str) -> None:
    """Start the unit again after its reboot script killed the agent, and return once the new agent listens.
    The server first records the killed session as ended (the broker's will), then the new agent's hello (sent
    after its subscriptions). Waiting for "online" alone can return on the killed session's flag, not yet cleared
    on a loaded machine, before the new agent has even started: a command published then reaches nobody (a clean
    session queues nothing) and the next reboot never comes."""
    assert fleet.server is not None

    def session_ended() -> bool:
        r = fleet.server.get(f"/api/v1/units/{sn}")  # type: ignore[union-attr]
        return r.status_code == 200 and r.json().get("broker_session") is False
    wait_for(session_ended, 30, f"{sn}'s killed session recorded as ended", interval=0.2)
    fleet.start_agent(sn)
    fleet.wait_online(sn)


def test_retained_reboot_is_never_run_and_counted_at_every_reconnect(fleet: Fleet) -> None:
    """A genuinely signed reboot left retained on the unit's command topic: the broker hands it to the agent
    at every (re)subscription. It never runs; every delivery is counted and reported (``cmd_refused``,
    reason ``retained``). Without the guard the first connection reboots the terminal."""
    sn = "HN50200001"
    starts = 10  # the catalogue's ten reconnects
    fleet.start_server()
    pub = _publisher(fleet)
    try:
        pub.publish(topics.topic(sn, topics.COMMAND), _signed(fleet, id="retained-reboot", sn=sn),
                    qos=1, retain=True).wait_for_publish(5)
        for i in range(starts):
            fleet.start_agent(sn)
            fleet.wait_online(sn)
            # the retained message is delivered right after the subscription; its report follows it
            wait_for(lambda i=i: sum(e["data"]["count"] for e in _events(fleet, sn, "cmd_refused")) >= i + 1, 30,
                     f"retained command reported after start {i + 1}", interval=0.3)
            fleet.agents[sn].stop()
        # a live command still runs: the guard is about the retain flag, nothing else
        fleet.start_agent(sn)
        fleet.wait_online(sn)
        cid = fleet.send(type="collect_logs", sn=sn, params={"lines": 5}).json()["command"]["id"]
        assert fleet.wait_state(cid)["state"] == "succeeded"
    finally:
        pub.publish(topics.topic(sn, topics.COMMAND), b"", qos=1, retain=True).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
    assert _reboots(fleet, sn) == 0, "a retained reboot ran"
    events = _events(fleet, sn, "cmd_refused")
    assert sum(e["data"]["count"] for e in events) >= starts
    assert {e["data"]["reason"] for e in events} == {"retained"} and {e["data"]["type"] for e in events} == {"reboot"}
    assert "retained-reboot" not in _results(fleet, "running") | _results(fleet, "succeeded"), "never taken on"
    log = (fleet.agent_dir(sn) / "agent.log").read_text()
    assert "ignored a retained reboot command" in log


def test_agent_runs_at_most_three_reboots_an_hour(fleet: Fleet) -> None:
    """Five valid reboots, each once the unit is back from the one before (a server bug, or someone replaying
    signed commands): three run, the fourth and fifth are refused ``rate_limited`` and reported; the terminal
    stays up. Without the budget all five run."""
    sn = "HN50200002"
    fleet.start_server()
    fleet.start_agent(sn)
    fleet.wait_online(sn)
    pub = _publisher(fleet)
    try:
        for i in range(5):
            pub.publish(topics.topic(sn, topics.COMMAND), _signed(fleet, id=f"budget-{i}", sn=sn),
                        qos=1).wait_for_publish(5)
            if i < 3:
                wait_for(lambda i=i: _reboots(fleet, sn) == i + 1, 20, f"reboot {i + 1}")
                wait_for(lambda: not fleet.agents[sn].alive(), 15, "the reboot script to end the agent")
                _back_after_reboot(fleet, sn)  # the unit is back, listening for the next command
            else:
                wait_for(lambda i=i: f"budget-{i}" in _results(fleet, "rejected"), 30, f"reboot {i + 1} refused",
                         interval=0.3)
    finally:
        pub.loop_stop()
        pub.disconnect()
    refused = _results(fleet, "rejected")
    for i in (3, 4):
        assert refused[f"budget-{i}"].startswith("rate_limited:"), refused
        assert "at most 3 an hour" in refused[f"budget-{i}"]
    time.sleep(1)
    assert _reboots(fleet, sn) == 3
    assert fleet.agents[sn].alive()


def test_server_refuses_the_fourth_reboot_within_an_hour(fleet: Fleet) -> None:
    """The server answers the operator at once: the fourth reboot/shutdown for a unit within an hour is a 429
    with reason ``rate_limited`` naming the unit; other units and other command types are not affected."""
    fleet.start_server()
    sn, other = "HN50200003", "HN50200004"
    for ctype in ("reboot", "shutdown", "reboot"):
        r = fleet.send(type=ctype, sn=sn)
        assert r.status_code == 201, r.text
    for ctype in ("reboot", "shutdown"):
        r = fleet.send(type=ctype, sn=sn)
        assert r.status_code == 429, r.text
        assert r.json()["reason"] == "rate_limited" and sn in r.json()["detail"], r.json()
        assert r.json()["errors"][0]["field"] == "sn"
    r = fleet.send(type="reboot", sns=[other, sn])
    assert r.status_code == 429 and sn in r.json()["detail"] and other not in r.json()["detail"], r.text
    assert fleet.send(type="reboot", sn=other).status_code == 201
    assert fleet.send(type="collect_logs", sn=sn, params={"lines": 5}).status_code == 201
    assert len([c for c in fleet.server.get("/api/v1/commands", sn=sn).json()["items"]  # type: ignore[union-attr]
                if c["type"] in ("reboot", "shutdown")]) == 3


def test_server_never_retains_a_command(fleet: Fleet) -> None:
    """The other half of V5: what the server publishes on pf/<sn>/c carries no retain flag (seen by a subscriber
    asking for the flag as published), and nothing is left retained there for the next subscription."""
    import paho.mqtt.client as mqtt

    from tests.commands.test_security import _client
    from tests.identities import observer

    sn = "HN50200005"
    fleet.start_server()
    fleet.start_agent(sn)
    fleet.wait_online(sn)
    seen: list[bool] = []
    spy = _client(fleet, *observer(fleet.pki, fleet.broker), "spy")
    spy.on_message = lambda c, u, m: seen.append(bool(m.retain))
    spy.subscribe(topics.topic(sn, topics.COMMAND), options=mqtt.SubscribeOptions(qos=1, retainAsPublished=True))
    time.sleep(0.3)
    try:
        cid = fleet.send(type="collect_logs", sn=sn, params={"lines": 5}).json()["command"]["id"]
        assert fleet.wait_state(cid)["state"] == "succeeded"
        wait_for(lambda: seen, 10, "the command on the wire")
    finally:
        spy.loop_stop()
        spy.disconnect()
    assert seen and not any(seen), seen
    late: list[bytes] = []
    spy2 = _client(fleet, *observer(fleet.pki, fleet.broker), "late")
    spy2.on_message = lambda c, u, m: late.append(bytes(m.payload))
    spy2.subscribe(topics.topic(sn, topics.COMMAND), qos=1)
    time.sleep(1.0)
    spy2.loop_stop()
    spy2.disconnect()
    assert late == [], "a command was left retained"
    assert _reboots(fleet, sn) == 0


def test_shutdown_waits_for_an_update_in_progress(fleet: Fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Catalogue S8's second half: a shutdown that arrives while the agent's new release is still confirming itself
    (here a release that never hears the server's acknowledgements, so it rolls itself back at its deadline) is
    not run then; it is reported ``delivered`` ("deferred: …"), and runs from the server's next send once the
    update has been rolled back. Without the guard it cuts the confirmation short."""
    from tests.commands.test_agent_update import Restart, _agent_package, _update

    sn = "HN50200006"
    fleet.start_server(resend_after_s=1.0, max_sends=200)
    fleet.start_agent(sn)
    fleet.wait_online(sn)
    log = fleet.agent_dir(sn) / "agent.log"
    with Restart(fleet, sn):
        upd = _update(fleet, sn, _agent_package(tmp_path, fleet, "0.2.5", drops_acks=True), health_timeout_s=10)
        wait_for(lambda: "agent 0.2.5 started after the handover" in log.read_text(), 30, "the new release to start")
        cid = fleet.send(type="shutdown", sn=sn).json()["command"]["id"]
        # (the release never hears the server, so its clock stays unchecked and its reports wait in its outbox: what
        # the server sees of the deferral comes after the rollback; the agent's log shows it at once)
        wait_for(lambda: f"shutdown {cid} deferred: the agent's new release is confirming itself" in log.read_text(),
                 15, "the shutdown deferred")
        assert _reboots(fleet, sn) == 0, "the shutdown ran during the update"
        done = fleet.wait_state(upd, timeout=60)
        assert done["state"] == "failed" and "rolled back" in done["output"], done
        final = fleet.wait_state(cid, timeout=60)
    assert final["state"] == "succeeded" and _reboots(fleet, sn) == 1, final
    text = log.read_text()
    assert text.index("rolled back to 0.1.0") < text.index(f"shutdown requested by command {cid}"), \
        "the shutdown ran after the update was rolled back, not before"
