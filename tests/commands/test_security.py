"""What a terminal refuses: forged, tampered, misaddressed, expired, unknown, replayed commands.

The forged ones are published the way an attacker holding the server's broker certificate
would (a replay needs no key at all); the real agent must refuse them and report why, and the
server keeps the trace in its audit as results of commands it never sent.
"""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pki.ca import FleetCA
from server.commands.keys import load_key, make_key
from tests.commands.conftest import Fleet
from tests.fleet import PASS, wait_for
from tests.identities import observer, server_identity
from wire import codec, topics
from wire.commands import Command, SignedCommand, encode_command


def _client(fleet: Fleet, cert: Path, key: Path, name: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{time.monotonic_ns()}", protocol=mqtt.MQTTv5)
    ctx = ssl.create_default_context(cafile=str(fleet.pki.dir / "ca.pem"))
    ctx.load_cert_chain(str(cert), str(key))
    c.tls_set_context(ctx)
    connected = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: connected.set()
    c.connect("localhost", fleet.broker.port, keepalive=30)
    c.loop_start()
    assert connected.wait(10)
    return c


def _publisher(fleet: Fleet) -> mqtt.Client:
    """Whoever holds a server broker certificate (the only identities allowed to write pf/+/c); its own identity,
    posfleet-server-intruder: the broker takes the CN as the client id, so the server's own would log the server out."""
    return _client(fleet, *server_identity(fleet.pki, fleet.broker, "intruder"), "intruder")


def _signed(fleet: Fleet, **fields: object) -> bytes:
    key = load_key(fleet.keys["command_key"], fleet.keys["command_endorsement"])
    now = int(time.time())
    base: dict[str, object] = {"id": f"forged-{time.monotonic_ns()}", "sn": "HN50100001", "type": "reboot",
                               "issued": now, "expires": now + 600, "nonce": f"n-{time.monotonic_ns()}"}
    base.update(fields)
    body = encode_command(Command(**base))  # type: ignore[arg-type]
    return codec.encode(SignedCommand(body=body, sig=key.sign(body), endorsement=key.endorsement))


def _rejections(fleet: Fleet, n: int) -> dict[str, str]:
    def got() -> dict[str, str] | None:
        rows = [a["detail"] for a in fleet.audit(action="command.unmatched_result", limit=1000)]
        out = {d["id"]: d["output"] for d in rows if d["state"] == "rejected"}
        return out if len(out) >= n else None
    return wait_for(got, 30, f"{n} rejections reported", interval=0.3)  # type: ignore[no-any-return]


def test_forged_tampered_misaddressed_expired_and_unknown_commands_never_run(fleet: Fleet, tmp_path: Path) -> None:
    sn = "HN50100001"
    fleet.start_server()
    fleet.start_agent(sn)
    fleet.wait_online(sn)
    now = int(time.time())
    pub = _publisher(fleet)
    try:
        # tampered: a validly signed network check whose body is changed into a reboot afterwards
        good = codec.decode(_signed(fleet, id="tampered", type="network_check"), SignedCommand)
        evil = encode_command(Command(id="tampered", sn=sn, type="reboot", issued=now, expires=now + 600,
                                      nonce="tampered-nonce"))
        tampered = codec.encode(SignedCommand(body=evil, sig=good.sig, endorsement=good.endorsement))
        # a key the fleet CA never endorsed (another CA endorses it)
        other_ca = FleetCA.init(tmp_path / "rogue-ca", PASS)
        rk, re_, _ = make_key(other_ca, tmp_path / "rogue", "command", 30)
        rogue = load_key(rk, re_)
        body = encode_command(Command(id="rogue-key", sn=sn, type="reboot", issued=now, expires=now + 600, nonce="rk"))
        rogue_msg = codec.encode(SignedCommand(body=body, sig=rogue.sign(body), endorsement=rogue.endorsement))
        cases = {
            "tampered": tampered,
            "rogue-key": rogue_msg,
            "other-sn": _signed(fleet, id="other-sn", sn="HN50100002"),
            "expired": _signed(fleet, id="expired", issued=now - 7200, expires=now - 3600),
            "unknown": _signed(fleet, id="unknown", type="format_disk"),
            "bad-params": _signed(fleet, id="bad-params", type="collect_logs", params={"lines": 10, "path": "/etc"}),
        }
        for payload in cases.values():
            pub.publish(topics.topic(sn, topics.COMMAND), payload, qos=1).wait_for_publish(5)
        reasons = _rejections(fleet, len(cases))
    finally:
        pub.loop_stop()
        pub.disconnect()
    assert "signature does not verify" in reasons["tampered"]
    assert "not signed by the fleet CA" in reasons["rogue-key"]
    assert "is for 'HN50100002'" in reasons["other-sn"]
    assert reasons["expired"].startswith("expired")
    assert "unknown command type" in reasons["unknown"]
    assert "unknown parameter" in reasons["bad-params"]
    assert not (fleet.agent_dir(sn) / "reboots").exists(), "no refused command ran"
    # the agent still works: a real command from the server runs
    cid = fleet.send(type="collect_logs", sn=sn, params={"lines": 5}).json()["command"]["id"]
    assert fleet.wait_state(cid)["state"] == "succeeded"


def test_replayed_reboot_is_not_run_again(fleet: Fleet) -> None:
    sn = "HN50100003"
    fleet.start_server()
    fleet.start_agent(sn)
    fleet.wait_online(sn)
    # listen on the unit's command topic, as a sniffer on the link would (a test observer: the unit's own
    # certificate is the unit's client id and would log the agent out)
    captured: list[bytes] = []
    spy = _client(fleet, *observer(fleet.pki, fleet.broker), "spy")
    spy.on_message = lambda c, u, m: captured.append(bytes(m.payload))
    spy.subscribe(topics.topic(sn, topics.COMMAND), qos=1)
    time.sleep(0.3)
    try:
        cid = fleet.send(type="reboot", sn=sn).json()["command"]["id"]
        wait_for(lambda: captured, 10, "the command on the wire")
        wait_for(lambda: not fleet.agents[sn].alive(), 15, "the reboot script to kill the agent")
    finally:
        spy.loop_stop()
        spy.disconnect()
    fleet.start_agent(sn)  # the unit is back
    assert fleet.wait_state(cid)["state"] == "succeeded"
    assert (fleet.agent_dir(sn) / "reboots").read_text().count("x") == 1
    pub = _publisher(fleet)
    try:
        for _ in range(3):
            pub.publish(topics.topic(sn, topics.COMMAND), captured[0], qos=1).wait_for_publish(5)
    finally:
        pub.loop_stop()
        pub.disconnect()
    # commands are handled in order: once this one is done, the replays were handled before it
    check = fleet.send(type="collect_logs", sn=sn, params={"lines": 5}).json()["command"]["id"]
    assert fleet.wait_state(check)["state"] == "succeeded"
    assert (fleet.agent_dir(sn) / "reboots").read_text().count("x") == 1, "a replayed reboot ran again"
    assert fleet.command(cid)["state"] == "succeeded"


def test_a_forged_copy_sent_first_does_not_block_the_genuine_command(fleet: Fleet, tmp_path: Path) -> None:
    """Rejections are recorded under a command's id only once its signature verified: a forged message that
    borrows a genuine command's id (published before it) must not make the terminal refuse the real one."""
    sn = "HN50100009"
    fleet.start_server()
    fleet.start_agent(sn)
    fleet.wait_online(sn)
    now = int(time.time())
    genuine = _signed(fleet, id="same-id", sn=sn, type="collect_logs", params={"lines": 3}, nonce="genuine-nonce")
    good = codec.decode(genuine, SignedCommand)
    forged_body = encode_command(Command(id="same-id", sn=sn, type="collect_logs", issued=now, expires=now + 600,
                                         nonce="genuine-nonce", params={"lines": 4}))
    forged = codec.encode(SignedCommand(body=forged_body, sig=good.sig, endorsement=good.endorsement))
    pub = _publisher(fleet)
    try:
        pub.publish(topics.topic(sn, topics.COMMAND), forged, qos=1).wait_for_publish(5)
        _rejections(fleet, 1)  # the forged one was refused...
        pub.publish(topics.topic(sn, topics.COMMAND), genuine, qos=1).wait_for_publish(5)

        def genuine_done() -> dict[str, str] | None:
            rows = [a["detail"] for a in fleet.audit(action="command.unmatched_result", limit=1000)]
            done = [d for d in rows if d["id"] == "same-id" and d["state"] == "succeeded"]
            return done[0] if done else None

        assert wait_for(genuine_done, 30, "the genuine command to run", interval=0.3)  # ...the genuine one ran
    finally:
        pub.loop_stop()
        pub.disconnect()
