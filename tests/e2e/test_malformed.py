"""Malformed telemetry: each message rejected and counted by reason, none stored, the API keeps answering."""

from __future__ import annotations

import random
import ssl
import time

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import sqlite_count
from tests.fleet import wait_for
from wire import codec
from wire.messages import Batch, Check, Sample


def test_ten_thousand_bad_messages(pki, broker, server) -> None:
    sn = "HN00100001"
    t = pki.terminal(sn)
    ctx = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))
    ctx.load_cert_chain(str(t / "terminal.pem"), str(t / "terminal.key"))
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=sn, protocol=mqtt.MQTTv5)
    c.tls_set_context(ctx)
    c.max_inflight_messages_set(200)
    c.connect("localhost", broker.port)
    c.loop_start()
    rng = random.Random(7)
    now = int(time.time())
    topic = f"pf/{sn}/t"
    future = codec.encode(Batch(sn=sn, epoch=1, samples=[Sample(seq=1, ts=now + 10 * 86400, checks={"storage": Check(0)})]))
    kinds = {
        "undecodable": lambda i: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))).replace(b"\x01", b"\x03", 1)
        if i % 2 else b"\x02" + b"not deflate at all",
        "schema": lambda i: b"\x01" + msgspec.msgpack.encode({"sn": sn, "S": [{"q": "one"}]}),
        "sn_mismatch": lambda i: codec.encode(Batch(sn="HN99999999", epoch=1, samples=[Sample(seq=i, ts=now)])),
        "future": lambda i: future,
        "version": lambda i: codec.encode(Batch(sn=sn, epoch=1, v=99, samples=[Sample(seq=i, ts=now)])),
    }
    sent = {k: 0 for k in kinds}
    infos = []
    for i in range(9_995):
        kind = list(kinds)[i % len(kinds)]
        payload = kinds[kind](i)
        if kind == "undecodable" and payload[:1] in (b"\x01",):
            payload = b"\x07" + payload
        infos.append(c.publish(topic, payload, qos=1))
        sent[kind] += 1
    big = b"\x01" + b"\x00" * (10 * 1024 * 1024)
    for _ in range(5):
        infos.append(c.publish(topic, big, qos=1))
    for info in infos:
        info.wait_for_publish(30)
    # the server keeps answering the API while it works through them
    assert server.get("/api/v1/units").status_code == 200

    def stats():
        r = server.get("/api/v1/ingest/stats")
        assert r.status_code == 200, r.text
        return r.json()

    wait_for(lambda: stats()["messages"] >= 10_000, 120, "all 10,000 messages seen by the server")
    s = stats()
    rejected = s["rejected_messages"]
    assert rejected.get("oversize") == 5
    assert rejected.get("sn_mismatch") == sent["sn_mismatch"]
    assert rejected.get("version") == sent["version"]
    assert rejected.get("schema") == sent["schema"]
    assert rejected.get("undecodable", 0) + rejected.get("schema", 0) - sent["schema"] == sent["undecodable"]
    assert s["rejected_items"].get("future") == sent["future"]
    assert sqlite_count(server.db, "select count(*) from samples") == 0, "nothing stored"
    # logged rate-limited: one line per reason a minute (this run takes less), not one per message
    log = server.log.read_text()
    lines = [ln for ln in log.splitlines() if "rejected message from" in ln or "rejected sample" in ln]
    for reason in rejected:
        assert f": {reason}: " in log, f"no log line for {reason}"
    assert "rejected sample HN00100001/" in log, "the future-dated samples are logged too"
    assert 5 <= len(lines) <= 2 * (len(rejected) + 1), lines[:20]
    c.loop_stop()
    c.disconnect()
    assert server.proc.poll() is None
