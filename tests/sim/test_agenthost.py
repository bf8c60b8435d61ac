"""The simulator's agent host: real Agent instances sharing one process, against a real Mosquitto. A power cut
(halt) ends exactly that unit without a goodbye (the broker publishes its will: "lost") and leaves its outbox
on disk; a clean stop says goodbye ("shutdown"); the other unit keeps running meanwhile."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulator.agenthost import HostProcess
from simulator.local import ENV
from tests.conftest import sqlite_count
from tests.fleet import agent_config, wait_for
from wire import codec, topics
from wire.messages import State

pytestmark = pytest.mark.timeout(60)


def test_halt_cuts_one_unit_stop_says_goodbye(pki, broker, tmp_path: Path) -> None:
    states: dict[str, State] = {}
    ctx = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))
    ctx.load_cert_chain(str(pki.dir / "server-client.pem"), str(pki.dir / "server-client.key"))
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    watcher.tls_set_context(ctx)

    def on_message(client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        states[msg.topic.split("/")[1]] = codec.decode(msg.payload, State)

    watcher.on_message = on_message
    watcher.connect("localhost", broker.port)
    watcher.subscribe(topics.topic("+", topics.STATE), qos=1)
    watcher.loop_start()
    sns = ("HN00090001", "HN00090002")
    configs = {sn: agent_config(pki, broker, sn, tmp_path / sn / "data", link="batch_interval_s = 0")
               for sn in sns}
    host = HostProcess(tmp_path / "host.log", env=ENV)
    try:
        a, b = (host.start(sn, configs[sn]) for sn in sns)
        wait_for(lambda: all(sn in states and states[sn].online for sn in sns), 20, "both units online")
        assert a.pid == b.pid  # one process
        a.send_signal(9)  # SIGKILL is a power cut
        assert a.wait(10) == -9
        wait_for(lambda: not states["HN00090001"].online, 10, "the broker to publish the halted unit's will")
        assert states["HN00090001"].reason == "lost"
        assert b.poll() is None and states["HN00090002"].online  # the other unit runs on
        # what the halted agent stored and nobody acknowledged (no server here) is still on its disk
        assert sqlite_count(tmp_path / "HN00090001" / "data" / "outbox.sqlite", "SELECT count(*) FROM outbox") >= 1
        b.send_signal(15)
        assert b.wait(10) == 0
        wait_for(lambda: not states["HN00090002"].online, 10, "the stopped unit's goodbye")
        assert states["HN00090002"].reason == "shutdown"
        again = host.start("HN00090001", configs["HN00090001"])  # power back on, in the same host
        wait_for(lambda: states["HN00090001"].online, 20, "the unit back online")
        assert again.poll() is None
    finally:
        host.close()
        watcher.loop_stop()
        watcher.disconnect()
    assert "Traceback" not in (tmp_path / "HN00090001" / "agent.log").read_text()
