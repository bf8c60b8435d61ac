"""A terminal's own MQTT session for tests that play a terminal by hand (hostile input, fuzzing): its certificate,
its client id, and the server's acknowledgements it receives."""

from __future__ import annotations

import ssl
import threading

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from wire import codec
from wire.messages import Ack, Batch, Check, Sample

OK = {"printer": [0], "idcard": [0], "modem": [0], "storage": [0]}


class Terminal:
    """A unit's MQTT session with its own certificate; collects the server's acknowledgements."""

    def __init__(self, pki, broker, sn: str, inflight: int = 1000) -> None:  # type: ignore[no-untyped-def]
        self.sn = sn
        t = pki.terminal(sn)
        ctx = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))
        ctx.load_cert_chain(str(t / "terminal.pem"), str(t / "terminal.key"))
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=sn, protocol=mqtt.MQTTv5)
        self.c.tls_set_context(ctx)
        self.c.max_inflight_messages_set(inflight)
        self.acked: set[int] = set()
        self.rejected: dict[int, str] = {}
        self.undecodable: list[str] = []  # acknowledgements a terminal (msgspec, strict like the agent) cannot read
        self._lock = threading.Lock()
        self.c.on_message = self._on_message
        self.c.connect("localhost", broker.port)
        self.c.subscribe(f"pf/{sn}/a", qos=1)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        try:
            ack = codec.decode(msg.payload, Ack)
        except codec.DecodeError as err:  # recorded, not raised: a raise here would stop this session's paho thread
            self.undecodable.append(str(err))
            return
        with self._lock:
            for a, b in ack.ranges:
                self.acked.update(range(a, b + 1))
            for a, b, why in ack.rejected:
                for q in range(a, b + 1):
                    self.rejected[q] = why

    def send(self, payload: bytes) -> mqtt.MQTTMessageInfo:
        return self.c.publish(f"pf/{self.sn}/t", payload, qos=1)

    def raw(self, batch: dict) -> mqtt.MQTTMessageInfo:
        """A batch built by hand in the wire's own field names (what a tampered terminal can send)."""
        return self.send(b"\x01" + msgspec.msgpack.encode({"sn": self.sn, "e": 1, **batch}))

    def good(self, seqs: range, now: int) -> mqtt.MQTTMessageInfo:
        return self.send(codec.encode(Batch(sn=self.sn, epoch=1, samples=[
            Sample(seq=q, ts=now - 60 * (len(seqs) - i), checks={k: Check(v[0]) for k, v in OK.items()})
            for i, q in enumerate(seqs)])))

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()
