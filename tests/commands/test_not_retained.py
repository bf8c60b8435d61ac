"""Server side of V5: a command is never published retained. A retained command would be handed to whoever
subscribes to the unit's command topic later (a unit re-enrolled, a restarted agent), outside the dispatcher's
bookkeeping; the agent's own refusal of a retained command is its second line (agent/)."""

from __future__ import annotations

import ssl
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.commands.conftest import Fleet
from tests.fleet import wait_for
from tests.identities import observer
from wire import topics


def _watch(fleet: Fleet, topic: str, got: list[tuple[bytes, bool]]) -> mqtt.Client:
    ctx = ssl.create_default_context(cafile=str(fleet.pki.dir / "ca.pem"))
    ctx.load_cert_chain(*map(str, observer(fleet.pki, fleet.broker)))
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watch", protocol=mqtt.MQTTv5)
    c.tls_set_context(ctx)
    subscribed = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_message = lambda cl, u, m: got.append((bytes(m.payload), bool(m.retain)))
    c.connect("localhost", fleet.broker.port, keepalive=10)
    c.loop_start()
    assert subscribed.wait(10)
    return c


def test_commands_are_published_not_retained(fleet: Fleet) -> None:
    sn = "HN50900001"
    fleet.start_server()
    fleet.start_agent(sn)
    fleet.wait_online(sn)
    live: list[tuple[bytes, bool]] = []
    watch = _watch(fleet, topics.topic(sn, topics.COMMAND), live)
    try:
        cid = fleet.send(type="collect_logs", sn=sn, params={"lines": 5}).json()["command"]["id"]
        wait_for(lambda: live, 15, "the command on the wire")
        assert fleet.wait_state(cid)["state"] == "succeeded"
    finally:
        watch.disconnect()
        watch.loop_stop()
    assert all(not retained for _payload, retained in live), "a command went out with the retain flag"
    later: list[tuple[bytes, bool]] = []
    watch = _watch(fleet, topics.topic(sn, topics.COMMAND), later)  # a subscriber that comes afterwards
    try:
        time.sleep(1.5)
        assert later == [], "the broker kept the command as the topic's retained message"
    finally:
        watch.disconnect()
        watch.loop_stop()
