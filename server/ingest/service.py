"""MQTT ingest: every terminal's telemetry into storage, exactly once, acknowledged after commit.

* A shared subscription (``$share/posfleet/pf/+/t``) so a second server process can take
  half the load.
* A persistent session and manual acknowledgement: the broker's PUBACK for a terminal's
  batch is sent only after the database commit, so a server that crashes or falls
  behind loses nothing (the broker keeps and redelivers; ``max_queued_messages`` is raised
  in the generated broker config).
* Every stored (or duplicate) item is acknowledged to the terminal on ``pf/<sn>/a``, which
  is what lets the agent delete it from its outbox. The acknowledgement carries the
  server's time, which is how terminals learn their clock offset.
* Every rejected message is counted by reason and logged rate-limited; nothing stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from wire import PROTOCOL_VERSION, codec, topics
from wire.clock import Clock
from wire.messages import Ack, Batch, State, sample_dict, seq_ranges

from ..settings import Settings
from ..storage import EventRow, SampleRow, Storage
from ..tasks import cancel

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    messages: int = 0
    samples_stored: int = 0
    events_stored: int = 0
    duplicates: int = 0
    commits: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    items_rejected: Counter[str] = field(default_factory=Counter)
    storage_errors: int = 0
    connected: bool = False
    last_commit: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected, "messages": self.messages, "samples_stored": self.samples_stored,
            "events_stored": self.events_stored, "duplicates": self.duplicates, "commits": self.commits,
            "rejected_messages": dict(self.rejected), "rejected_items": dict(self.items_rejected),
            "storage_errors": self.storage_errors, "last_commit": self.last_commit,
        }


class _RateLimitedLog:
    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warn(self, reason: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -1e9) >= self.every:
            more = self._suppressed.pop(reason, 0)
            log.warning(message + (f" (+{more} more like it)" if more else ""), *args)
            self._last[reason] = now
        else:
            self._suppressed[reason] += 1


class Ingest:
    def __init__(self, settings: Settings, storage: Storage, clock: Clock | None = None) -> None:
        self.settings = settings
        self.storage = storage
        self.clock = clock or Clock()
        self.stats = IngestStats()
        self._queue: asyncio.Queue[tuple[str, bytes, int, int]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: mqtt.Client | None = None
        self._rl = _RateLimitedLog()
        self.on_committed: list[Any] = []  # callbacks(samples, events) after each commit
        self.on_state: list[Any] = []  # callbacks(sn, online: bool) when a unit's broker state arrives

    # lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        m = self.settings.mqtt
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.settings.path(m.ca_file)))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.settings.path(m.cert_file)), str(self.settings.path(m.key_file)))
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=m.client_id, protocol=mqtt.MQTTv5)
        c.tls_set_context(ctx)
        c.manual_ack_set(True)
        c.max_inflight_messages_set(200)
        c.reconnect_delay_set(1, 30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 7 * 86400
        props.ReceiveMaximum = m.receive_maximum
        c.connect_async(m.host, m.port, keepalive=m.keepalive_s, clean_start=False, properties=props)
        c.loop_start()
        self._client = c
        self._task = asyncio.create_task(self._writer(), name="ingest-writer")

    async def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        await cancel([self._task])

    def publish(self, topic_name: str, payload: bytes, qos: int = 1) -> bool:
        """Publish through the server's broker session (commands to terminals). False when not connected."""
        client = self._client
        if client is None or not self.stats.connected:
            return False
        return client.publish(topic_name, payload, qos=qos).rc == mqtt.MQTT_ERR_SUCCESS

    # paho thread ------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            log.error("broker refused the server: %s", reason_code)
            return
        group = self.settings.share_group()  # secret: decision 011
        client.subscribe([
            (topics.shared(topics.TELEMETRY, group), 1),
            (f"{topics.PREFIX}/+/{topics.STATE}", 1),
        ])
        self.stats.connected = True
        log.info("ingest connected to the broker (session present: %s)", flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self.stats.connected = False
        log.warning("ingest disconnected from the broker: %s", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:  # type: ignore[no-untyped-def]
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (msg.topic, msg.payload, msg.mid, msg.qos))

    # writer -------------------------------------------------------------------------------
    async def _writer(self) -> None:
        limit = self.settings.ingest.batch_messages
        while True:
            items = [await self._queue.get()]
            while len(items) < limit:
                try:
                    items.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                await self._process(items)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop ingest; the items stay unacknowledged
                log.exception("ingest failed on %d messages; they stay with the broker", len(items))

    def _reject(self, reason: str, sn: str, detail: str) -> None:
        self.stats.rejected[reason] += 1
        self._rl.warn(reason, "rejected message from %s: %s: %s", sn or "?", reason, detail[:200])

    async def _process(self, items: list[tuple[str, bytes, int, int]]) -> None:
        now = self.clock.now()
        received = time.time()
        horizon = now + self.settings.ingest.future_tolerance_s
        samples: list[SampleRow] = []
        events: list[EventRow] = []
        acks: dict[tuple[str, int], list[int]] = {}
        rejected_items: dict[tuple[str, int], list[tuple[int, str]]] = {}
        states: list[tuple[str, State]] = []
        for topic_name, payload, _mid, _qos in items:
            self.stats.messages += 1
            parsed = topics.parse(topic_name)
            if parsed is None or not topics.valid_sn(parsed[0]):
                self._reject("bad_topic", "", topic_name)
                continue
            sn, kind = parsed
            if kind == topics.STATE:
                if not payload:
                    continue  # retained state cleared
                try:
                    states.append((sn, codec.decode(payload, State)))
                except codec.DecodeError as err:
                    self._reject(err.reason, sn, err.message)
                continue
            if kind != topics.TELEMETRY:
                self._reject("bad_topic", sn, topic_name)
                continue
            if len(payload) > self.settings.ingest.max_payload:
                self._reject("oversize", sn, f"{len(payload)} bytes")
                continue
            try:
                batch = codec.decode(payload, Batch)
            except codec.DecodeError as err:
                self._reject(err.reason, sn, err.message)
                continue
            if batch.v != PROTOCOL_VERSION:
                self._reject("version", sn, f"protocol version {batch.v}, expected {PROTOCOL_VERSION}")
                continue
            if batch.sn != sn:
                self._reject("sn_mismatch", sn, f"payload says {batch.sn!r}")
                continue
            key = (sn, batch.epoch)
            ok = acks.setdefault(key, [])
            for s in batch.samples:
                if s.ts > horizon:
                    rejected_items.setdefault(key, []).append((s.seq, "future"))
                    self.stats.items_rejected["future"] += 1
                    self._rl.warn("future", "rejected sample %s/%d dated %d s in the future", sn, s.seq, int(s.ts - now))
                    continue
                if s.interval <= 0 or s.interval > 3600:
                    rejected_items.setdefault(key, []).append((s.seq, "interval"))
                    self.stats.items_rejected["interval"] += 1
                    continue
                body = sample_dict(s)
                samples.append(SampleRow(
                    sn, batch.epoch, s.seq, s.ts, s.interval, s.clock, s.connected, s.rtt_ms,
                    {k: [c.state, c.reason] for k, c in s.checks.items()}, body, received,
                ))
                ok.append(s.seq)
            for e in batch.events:
                if e.ts > horizon:
                    rejected_items.setdefault(key, []).append((e.seq, "future"))
                    self.stats.items_rejected["future"] += 1
                    continue
                events.append(EventRow(sn, batch.epoch, e.seq, e.ts, e.kind, dict(e.data), received))
                ok.append(e.seq)
        # commit; retry while storage fails (nothing is acknowledged until it is committed)
        delay = 0.5
        while True:
            try:
                stored = await self.storage.store_telemetry(samples, events)
                for sn, st in states:
                    await self.storage.set_state(sn, st.online, st.ts or now, st.reason, st.version)
                break
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self.stats.storage_errors += 1
                log.error("storage commit failed (%s); retrying in %.1f s", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self.stats.commits += 1
        self.stats.last_commit = received
        self.stats.samples_stored += sum(1 for _ in samples)
        self.stats.events_stored += len(events)
        self.stats.duplicates += len(samples) + len(events) - stored
        for cb in self.on_committed:
            try:
                cb(samples, events)
            except Exception:
                log.exception("post-commit hook failed")
        for sn, st in states:
            for cb in self.on_state:
                try:
                    cb(sn, st.online)
                except Exception:
                    log.exception("state hook failed")
        client = self._client
        if client is None:
            return
        for _topic, _payload, mid, qos in items:
            if qos:
                client.ack(mid, qos)
        now_ms = int(self.clock.now() * 1000)
        for (sn, epoch), seqs in acks.items():
            bad = rejected_items.get((sn, epoch), [])
            ack = Ack(epoch=epoch, time_ms=now_ms, ranges=seq_ranges(seqs),
                      rejected=[(q, q, why) for q, why in bad])
            client.publish(topics.topic(sn, topics.ACK), codec.encode(ack), qos=0)
        # a unit that just said hello gets the time even with nothing to acknowledge
        for sn, st in states:
            if st.online and not any(k[0] == sn for k in acks):
                client.publish(topics.topic(sn, topics.ACK), codec.encode(Ack(epoch=0, time_ms=now_ms)), qos=0)
