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
import collections
import logging
import socket
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.idcard.mask import redact_text
from wire import PROTOCOL_VERSION, boundary, codec, topics
from wire.clock import Clock
from wire.messages import Ack, sample_dict, seq_ranges

from ..alerts.lifecycle import raise_alert
from ..settings import Settings
from ..storage import EventRow, SampleRow, Storage
from ..tasks import cancel

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    messages: int = 0
    accepted: int = 0  # messages past the message-level checks (each of their items accepted or refused alone)
    samples_stored: int = 0
    events_stored: int = 0
    duplicates: int = 0
    commits: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    items_rejected: Counter[str] = field(default_factory=Counter)
    storage_errors: int = 0
    connected: bool = False
    last_commit: float = 0.0
    fields_dropped: int = 0
    batch_splits: int = 0
    dead_letters: int = 0
    last_storage_error: str = ""
    queued: int = 0
    oldest_queued_s: float = 0.0
    over_budget: Counter[str] = field(default_factory=Counter)  # by unit
    security_events: Counter[str] = field(default_factory=Counter)  # by what

    def as_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected, "messages": self.messages, "accepted": self.accepted, "samples_stored": self.samples_stored,
            "events_stored": self.events_stored, "duplicates": self.duplicates, "commits": self.commits,
            "rejected_messages": dict(self.rejected), "rejected_items": dict(self.items_rejected),
            "storage_errors": self.storage_errors, "last_commit": self.last_commit,
            "fields_dropped": self.fields_dropped, "batch_splits": self.batch_splits,
            "dead_letters": self.dead_letters, "last_storage_error": self.last_storage_error,
            "queued": self.queued, "oldest_queued_s": round(self.oldest_queued_s, 3),
            "over_budget_units": dict(self.over_budget.most_common(20)),
            "security_events": dict(self.security_events),
        }


@dataclass
class _Msg:
    """One inbound message after the boundary: what to store, acknowledge and refuse."""

    topic: str
    sn: str
    size: int
    epoch: int | None = None
    state: Any = None
    samples: list[SampleRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    ok: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    item_bytes: int = 0  # msgpack bytes of the items accepted (what the stored-bytes budget counts)


TAKEOVERS = 3  # more "lost" wills than this from one unit ...
TAKEOVER_WINDOW_S = 600  # ... within this many real seconds: certificate_shared


class Budget:
    """Per-unit budgets: messages, bytes and events a minute (real time x the clock's speed), and what a unit
    may make the server store a day. One compromised terminal can then neither fill the disk nor crowd out
    the others' ingest; a real agent stays far below (see IngestSettings)."""

    def __init__(self, settings: Settings, speed: float = 1.0) -> None:
        i = settings.ingest
        k = max(1.0, speed)
        self.limits = {"messages": i.unit_messages_per_minute * k, "bytes": i.unit_bytes_per_minute * k,
                       "events": i.unit_events_per_minute * k}
        self.stored_per_day = i.unit_stored_bytes_per_day
        self._minute = -1
        self._used: dict[str, list[float]] = {}  # sn -> [messages, bytes, events] this minute
        self._day = -1
        self._stored: Counter[str] = Counter()

    def _roll(self, now: float) -> None:
        minute = int(time.monotonic() // 60)
        if minute != self._minute:
            self._minute, self._used = minute, {}
        day = int(now // 86400)
        if day != self._day:
            self._day, self._stored = day, Counter()

    def charge(self, sn: str, size: int, now: float) -> str:
        """Count one message of ``size`` bytes; the budget it exceeds ("" when within all)."""
        self._roll(now)
        u = self._used.setdefault(sn, [0.0, 0.0, 0.0])
        u[0] += 1
        u[1] += size
        if u[0] > self.limits["messages"]:
            return "messages"
        if u[1] > self.limits["bytes"]:
            return "bytes"
        if self.stored_per_day and self._stored[sn] > self.stored_per_day:
            return "stored_bytes"
        return ""

    def charge_events(self, sn: str, n: int) -> bool:
        u = self._used.setdefault(sn, [0.0, 0.0, 0.0])
        u[2] += n
        return u[2] > self.limits["events"]

    def stored(self, sn: str, size: int) -> None:
        self._stored[sn] += size

    def describe(self, what: str) -> str:
        if what == "stored_bytes":
            return f"{self.stored_per_day} bytes stored a day"
        return f"{self.limits[what]:g} {what} a minute"


def _systemic(err: BaseException) -> bool:
    """A storage failure of the database itself (locked, full, read-only, I/O, connection), not of the data."""
    import sqlite3

    if isinstance(err, sqlite3.OperationalError | OSError | ConnectionError | TimeoutError):
        return True
    name = type(err).__module__ + "." + type(err).__name__
    return name.startswith("asyncpg.exceptions.") and "Connection" in name


def _redact(value: Any) -> Any:
    """Event data as stored: every string with ID and phone numbers masked (the schema already keeps names out)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


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


def _no_delay(client: Any, userdata: Any, sock: Any) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not TCP (a unix socket): nothing to turn off
        pass


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
        self.budget = Budget(settings, max([settings.clock.speed, *(v for _t, v in settings.clock.schedule)]))
        self._security_sent: dict[tuple[str, str], float] = {}
        self._lost: dict[str, collections.deque[float]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._arrivals: collections.deque[float] = collections.deque()  # monotonic arrival of each queued message
        self.on_committed: list[Any] = []  # callbacks(samples, events) after each commit
        self.on_state: list[Any] = []  # callbacks(sn, online: bool) when a unit's broker state arrives
        # why the broker cannot be reached (the last error), since when, and when that was last logged
        self.broker_error = ""
        self._down_since: float | None = time.monotonic()
        self._down_logged: float | None = None
        self._watch: asyncio.Task[None] | None = None

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
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        # no Nagle on the broker connection: the PUBACK of a batch and its acknowledgement are two small writes,
        # and the second waited for the broker's delayed ACK of the first (44 ms per acknowledgement, measured)
        c.on_socket_open = _no_delay
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = m.session_expiry_s
        props.ReceiveMaximum = m.receive_maximum
        c.connect_async(m.host, m.port, keepalive=m.keepalive_s, clean_start=False, properties=props)
        c.loop_start()
        self._client = c
        self._task = asyncio.create_task(self._writer(), name="ingest-writer")
        self._watch = asyncio.create_task(self._watch_broker(), name="ingest-broker-watch")

    async def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        await cancel([self._task, self._watch])

    # the broker out of reach: said at once, then every mqtt.report_every_s -----------------------
    def broker_address(self) -> str:
        m = self.settings.mqtt
        return f"{m.host}:{m.port}"

    def _broker_down(self, why: str) -> None:
        """(paho thread) The broker could not be reached, refused us or dropped us: log it at once the first time
        (and when the reason changes), then :meth:`_watch_broker` repeats it every ``mqtt.report_every_s``."""
        now = time.monotonic()
        changed = why != self.broker_error
        self.broker_error = why
        if self._down_since is None:
            self._down_since = now
        if self._down_logged is None or changed:
            self._down_logged = now
            log.error("ingest cannot reach the broker at %s: %s (retrying; /readyz answers 503 until connected)",
                      self.broker_address(), why)

    async def _watch_broker(self) -> None:
        while True:
            every = self.settings.mqtt.report_every_s
            await asyncio.sleep(min(5.0, every))
            now = time.monotonic()
            if self.stats.connected or self._down_since is None:
                continue
            if self._down_logged is None or now - self._down_logged >= every:
                self._down_logged = now
                log.error("ingest still not connected to the broker at %s after %.0f s: %s",
                          self.broker_address(), now - self._down_since, self.broker_error or "no answer yet")

    def health(self) -> tuple[bool, list[str]]:
        """Ready to take telemetry? False with the reasons when disconnected, or stalled (messages waiting
        longer than ``ingest.stall_s`` for a commit, e.g. while the database refuses writes)."""
        why = []
        if not self.stats.connected:
            why.append(f"ingest is not connected to the broker at {self.broker_address()}"
                       + (f": {self.broker_error}" if self.broker_error else ""))
        lag = self.lag()
        self.stats.oldest_queued_s = lag
        self.stats.queued = self._queue.qsize()
        if lag > self.settings.ingest.stall_s:
            why.append(f"ingest stalled: a message has waited {lag:.0f} s for a commit"
                       + (f" (last storage error: {self.stats.last_storage_error})" if self.stats.last_storage_error else ""))
        return not why, why

    def figures(self) -> dict[str, Any]:
        """The ingest figures with ``ready`` and ``problems`` (see :meth:`health`)."""
        ready, why = self.health()
        return {**self.stats.as_dict(), "ready": ready, "problems": why}

    def publish(self, topic_name: str, payload: bytes, qos: int = 1) -> bool:
        """Publish through the server's broker session (commands to terminals). False when not connected."""
        client = self._client
        if client is None or not self.stats.connected:
            return False
        return client.publish(topic_name, payload, qos=qos).rc == mqtt.MQTT_ERR_SUCCESS

    # paho thread ------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            self._broker_down(f"the broker refused the connection: {reason_code}")
            return
        group = self.settings.share_group()  # secret: decision 011
        client.subscribe([
            (topics.shared(topics.TELEMETRY, group), 1),
            (f"{topics.PREFIX}/+/{topics.STATE}", 1),
        ])
        self.stats.connected = True
        down = time.monotonic() - self._down_since if self._down_since is not None else 0.0
        self._down_since, self._down_logged, self.broker_error = None, None, ""
        log.info("ingest connected to the broker at %s (session present: %s)%s", self.broker_address(),
                 flags.session_present, f" after {down:.0f} s without" if down >= 1 else "")

    def _on_connect_fail(self, client, userdata) -> None:  # type: ignore[no-untyped-def]
        err = sys.exc_info()[1]  # paho calls this inside its `except OSError` around the connection attempt
        self._broker_down(f"{type(err).__name__}: {err}" if err is not None else "the connection failed")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        was = self.stats.connected
        self.stats.connected = False
        if was:
            log.warning("ingest disconnected from the broker at %s: %s", self.broker_address(), reason_code)
            self._down_since = self._down_logged = time.monotonic()
            self.broker_error = f"disconnected: {reason_code}"
        else:  # e.g. the TLS handshake or CONNECT failed after the TCP connection
            self._broker_down(f"disconnected before the session started: {reason_code}")

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:  # type: ignore[no-untyped-def]
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._enqueue, (msg.topic, msg.payload, msg.mid, msg.qos))

    def _enqueue(self, item: tuple[str, bytes, int, int]) -> None:
        self._arrivals.append(time.monotonic())
        self._queue.put_nowait(item)

    def lag(self) -> float:
        """Seconds the oldest message not yet committed has waited (0 when none waits)."""
        return time.monotonic() - self._arrivals[0] if self._arrivals else 0.0

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
            for _ in items:
                if self._arrivals:
                    self._arrivals.popleft()

    def _reject(self, reason: str, sn: str, detail: str) -> None:
        self.stats.rejected[reason] += 1
        self._rl.warn(reason, "rejected message from %s: %s: %s", sn or "?", reason, detail[:200])

    def _reject_item(self, m: _Msg, seq: int | None, reason: str, detail: str) -> None:
        if seq is not None:  # an item whose seq cannot be read cannot be named in the acknowledgement
            m.rejected.append((seq, reason))
        self.stats.items_rejected[reason] += 1
        self._rl.warn("item:" + reason, "rejected item %s/%s: %s: %s", m.sn, "?" if seq is None else seq, reason, detail[:200])

    def _parse(self, topic_name: str, payload: bytes, now: float, received: float) -> _Msg | None:
        """One message through the boundary: a :class:`_Msg` of validated rows, or None (rejected whole)."""
        parsed = topics.parse(topic_name)
        if parsed is None or not topics.valid_sn(parsed[0]):
            self._reject("bad_topic", "", topic_name[:100])
            return None
        sn, kind = parsed
        if kind == topics.STATE:
            if not payload:
                self.stats.accepted += 1
                return None  # retained state cleared
            try:
                st = boundary.decode_state(payload)
            except codec.DecodeError as err:
                self._reject(err.reason, sn, err.message)
                return None
            return _Msg(topic_name, sn, len(payload), state=st)
        if kind != topics.TELEMETRY:
            self._reject("bad_topic", sn, topic_name[:100])
            return None
        if len(payload) > self.settings.ingest.max_payload:
            self._reject("oversize", sn, f"{len(payload)} bytes")
            return None
        over = self.budget.charge(sn, len(payload), now)
        if over:
            self._over_budget(sn, over, now)
            return None
        try:
            batch = boundary.decode_batch(payload)
        except codec.DecodeError as err:
            self._reject(err.reason, sn, err.message)
            return None
        if batch.v != PROTOCOL_VERSION:
            self._reject("version", sn, f"protocol version {batch.v}, expected {PROTOCOL_VERSION}")
            return None
        if batch.sn != sn:
            self._reject("identity_mismatch", sn, f"payload says {batch.sn!r}")
            self._security(sn, "identity_mismatch", now, f"telemetry on {sn}'s topic claims to be from {batch.sn!r}")
            return None
        if batch.events and self.budget.charge_events(sn, len(batch.events)):
            self._over_budget(sn, "events", now)
            return None
        m = _Msg(topic_name, sn, len(payload), epoch=batch.epoch)
        horizon = now + self.settings.ingest.future_tolerance_s
        floor = now - self.settings.ingest.max_age_days * 86400
        for raw in batch.samples:
            try:
                smp, dropped = boundary.sample(raw)
            except boundary.ItemError as err:
                self._reject_item(m, err.seq, err.reason, err.message)
                continue
            if dropped:
                self.stats.fields_dropped += len(dropped)
                self._rl.warn("field_dropped", "sample %s/%d: dropped %s", sn, smp.seq, "; ".join(dropped)[:300])
            if smp.ts > horizon:
                self._reject_item(m, smp.seq, "future", f"dated {int(smp.ts - now)} s in the future")
                continue
            if smp.ts < floor:
                self._reject_item(m, smp.seq, "too_old", f"dated {int(now - smp.ts) // 86400} days ago")
                continue
            body = sample_dict(smp)
            m.item_bytes += len(raw)
            m.samples.append(SampleRow(
                sn, batch.epoch, smp.seq, smp.ts, smp.interval, smp.clock, smp.connected, smp.rtt_ms,
                {k: [c.state, c.reason] for k, c in smp.checks.items()}, body, received,
            ))
            m.ok.append(smp.seq)
        for raw in batch.events:
            try:
                e, data = boundary.event(raw)
            except boundary.ItemError as err:
                self._reject_item(m, err.seq, err.reason, err.message)
                continue
            if e.ts > horizon:
                self._reject_item(m, e.seq, "future", f"event dated {int(e.ts - now)} s in the future")
                continue
            if e.ts < floor:
                self._reject_item(m, e.seq, "too_old", f"event dated {int(now - e.ts) // 86400} days ago")
                continue
            m.events.append(EventRow(sn, batch.epoch, e.seq, e.ts, e.kind, _redact(data), received))
            m.item_bytes += len(raw)
            m.ok.append(e.seq)
        return m

    def _over_budget(self, sn: str, what: str, now: float) -> None:
        self._reject("over_budget", sn, f"{what} over the unit's budget")
        self.stats.over_budget[sn] += 1
        self._security(sn, "flood", now, f"over its {what} budget ({self.budget.describe(what)}); "
                                         "messages over it are dropped unstored")

    def _taken_over(self, sn: str, now: float) -> None:
        """A unit's session ended without a goodbye (its last will, ``lost``). The broker names sessions after the
        certificate (decision 011), so two terminals holding one copied certificate log each other out every few
        seconds, each time firing the other's will: more than ``TAKEOVERS`` in ``TAKEOVER_WINDOW_S`` real seconds
        raise ``certificate_shared`` (catalogue S4 b). A link that drops that often is worth a look as well."""
        t = time.monotonic()
        q = self._lost.setdefault(sn, collections.deque())
        q.append(t)
        while q and t - q[0] > TAKEOVER_WINDOW_S:
            q.popleft()
        if len(q) > TAKEOVERS:
            self._security(sn, "certificate_shared", now,
                           f"its session was taken over {len(q)} times in {TAKEOVER_WINDOW_S // 60} minutes: "
                           "probably a copied certificate in use on another machine (or a link that keeps dropping)")
        if len(self._lost) > 100_000:
            self._lost.clear()

    def _security(self, sn: str, what: str, now: float, message: str) -> None:
        """A security alert for the unit (at most one write per unit and kind every 10 minutes)."""
        key = (sn, what)
        last = self._security_sent.get(key)
        if last is not None and time.monotonic() - last < 600:
            return
        self._security_sent[key] = time.monotonic()
        if len(self._security_sent) > 100_000:
            self._security_sent.clear()
        self.stats.security_events[what] += 1
        log.warning("security: unit %s: %s", sn, message)
        task = asyncio.ensure_future(raise_alert(
            self.storage, f"security:{what}:{sn}", "security", sn, None, int(now), f"{sn}: {message}", {"what": what}, True))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _commit(self, msgs: list[_Msg]) -> tuple[list[_Msg], int]:
        """Store ``msgs``; returns the dead-lettered ones and how many items were new.

        One transaction for all of them first. If it fails for a reason in the data (not the database
        being unavailable), each message is committed alone, so one bad message never holds back another;
        a message that still fails alone goes to the dead letters and is acknowledged. While the database
        itself fails (locked, full, gone), it is retried with back-off and nothing is acknowledged."""
        delay = 0.5
        while True:
            try:
                return [], await self._store(msgs)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self.stats.storage_errors += 1
                if _systemic(err):
                    self.stats.last_storage_error = f"{type(err).__name__}: {err}"[:300]
                    log.error("storage commit failed (%s); retrying in %.1f s", err, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                if len(msgs) > 1:
                    log.warning("a commit of %d messages failed (%s: %s); storing them one by one",
                                len(msgs), type(err).__name__, str(err)[:200])
                    self.stats.batch_splits += 1
                    dead: list[_Msg] = []
                    stored = 0
                    for m in msgs:
                        d, n = await self._commit([m])
                        dead += d
                        stored += n
                    return dead, stored
                await self._dead_letter(msgs[0], f"{type(err).__name__}: {err}")
                return msgs, 0

    async def _store(self, msgs: list[_Msg]) -> int:
        samples = [s for m in msgs for s in m.samples]
        events = [e for m in msgs for e in m.events]
        stored = await self.storage.store_telemetry(samples, events)
        for m in msgs:
            if m.state is not None:
                st = m.state
                await self.storage.set_state(m.sn, st.online, st.ts or self.clock.now(), st.reason, st.version)
        return stored

    async def _dead_letter(self, m: _Msg, reason: str) -> None:
        import hashlib

        body = msgspec.json.encode({
            "epoch": m.epoch, "samples": [s.body for s in m.samples],
            "events": [{"seq": e.seq, "ts": e.ts, "kind": e.kind, "data": e.data} for e in m.events],
            "state": None if m.state is None else msgspec.structs.asdict(m.state),
        }).decode()
        self.stats.dead_letters += 1
        log.error("dead letter from %s (%d samples, %d events): %s", m.sn, len(m.samples), len(m.events), reason[:300])
        m.rejected += [(q, "server_error") for q in m.ok]
        m.ok = []
        try:
            await self.storage.add_dead_letter(time.time(), m.sn, m.topic, reason, m.size,
                                               hashlib.sha256(body.encode()).hexdigest(), body[:1_000_000])
        except Exception as err:  # the dead letter itself failing must not stop ingest
            log.error("could not keep the dead letter from %s: %s", m.sn, err)

    async def _process(self, items: list[tuple[str, bytes, int, int]]) -> None:
        now = self.clock.now()
        received = time.time()
        msgs: list[_Msg] = []
        for topic_name, payload, _mid, _qos in items:
            self.stats.messages += 1
            try:
                m = self._parse(topic_name, payload, now, received)
            except Exception as err:  # a bug in the boundary must not stop ingest either: count and go on
                log.exception("ingest could not parse a message on %s", topic_name[:100])
                self._reject("internal", "", f"{type(err).__name__}: {err}")
                m = None
            if m is not None:
                self.stats.accepted += 1
                msgs.append(m)
        dead, stored = await self._commit(msgs)
        dead_ids = {id(m) for m in dead}
        good = [m for m in msgs if id(m) not in dead_ids]
        samples = [s for m in good for s in m.samples]
        events = [e for m in good for e in m.events]
        states = [(m.sn, m.state) for m in good if m.state is not None]
        self.stats.commits += 1
        self.stats.last_commit = received
        self.stats.samples_stored += len(samples)
        self.stats.events_stored += len(events)
        self.stats.duplicates += len(samples) + len(events) - stored
        for m in good:
            self.budget.stored(m.sn, m.item_bytes)
        for cb in self.on_committed:
            try:
                cb(samples, events)
            except Exception:
                log.exception("post-commit hook failed")
        for sn, st in states:
            if not st.online and st.reason == "lost":
                self._taken_over(sn, now)
            for cb in self.on_state:
                try:
                    cb(sn, st.online)
                except Exception:
                    log.exception("state hook failed")
        # per (sn, epoch): the seqs committed and the seqs refused for good
        acks: dict[tuple[str, int], tuple[list[int], list[tuple[int, str]]]] = {}
        for m in msgs:
            if m.epoch is not None:
                ok, bad = acks.setdefault((m.sn, m.epoch), ([], []))
                ok.extend(m.ok)
                bad.extend(m.rejected)
        client = self._client
        if client is None:
            return
        for _topic, _payload, mid, qos in items:
            if qos:
                client.ack(mid, qos)
        now_ms = int(self.clock.now() * 1000)
        acked: set[str] = set()
        for (sn, epoch), (seqs, bad) in acks.items():
            if not seqs and not bad:
                continue
            ack = Ack(epoch=epoch, time_ms=now_ms, ranges=seq_ranges(seqs),
                      rejected=[(q, q, why) for q, why in bad])
            client.publish(topics.topic(sn, topics.ACK), codec.encode(ack), qos=0)
            acked.add(sn)
        # a unit that just said hello gets the time even with nothing to acknowledge
        for sn, st in states:
            if st.online and sn not in acked:
                client.publish(topics.topic(sn, topics.ACK), codec.encode(Ack(epoch=0, time_ms=now_ms)), qos=0)
