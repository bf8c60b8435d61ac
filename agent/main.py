"""The edge agent: samples health every interval, keeps every sample on disk until the
server has committed it, and sends them in small paced batches over the MQTT link.

All state lives in the agent's own thread; the link's callbacks only put events on a
queue. One loop: take the sample that is due, handle link events, send what is due.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import psutil

from wire import __version__, codec, topics
from wire.messages import (
    CLOCK_CHECKED,
    CLOCK_CORRECTED,
    CLOCK_UNVERIFIED,
    FAULT,
    OK,
    Ack,
    Batch,
    Check,
    Event,
    Sample,
)
from wire.signing import verify_detached

from . import systemd
from .appwatch import AppWatch
from .clock import Clock, boot_id, ntp_synchronised
from .collectors import StorageCollector, SystemCollector, read_component_version
from .commands import CommandExecutor
from .config import AgentConfig
from .config_guard import ConfigGuard
from .link import Link, tls_context
from .netq import RttTracker
from .outbox import KIND_SAMPLE, Outbox, OutboxError, Row
from .peripherals import PeripheralSet
from .renew import Renewer

log = logging.getLogger(__name__)

PROBE_WAIT_REAL_S = 5.0
#: the longest the loop sleeps when nothing is due: it wakes for each slot, each event (connection, message,
#: acknowledgement, round trip, command), a probe's deadline and the backlog's pacing; this bound is for what is
#: polled (the engineer's console events, a configuration change's deadline). It was 0.2 s: five wake-ups a
#: second that did nothing, most of an idle terminal's CPU
IDLE_WAIT_S = 1.0
#: the most often a repeated refusal (retained commands, publishes the broker refused) is logged or reported
REPORT_EVERY_S = 600.0


@dataclass
class Stats:
    samples: int = 0
    batches_sent: int = 0
    items_acked: int = 0
    items_rejected: int = 0
    outbox_errors: int = 0
    memory_held: int = 0
    acks_ignored: int = 0
    buffer_resets: int = 0
    retained_ignored: int = 0  # retained messages on the command/ack topics: never acted on
    publishes_refused: int = 0  # MQTT 5 PUBACKs with a failure reason code (0x87 not authorised, ...)
    last_error: str = ""
    reasons: dict[str, int] = field(default_factory=dict)


def sn_from_certificate(cert_file: Path) -> str:
    """The terminal SN is its certificate's CN."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        raise ValueError(f"{cert_file}: certificate has no CN")
    return str(attrs[0].value)


class Agent:
    # How a signed command or package is checked: in a short-lived child process on a terminal, so the agent never
    # holds ``cryptography`` (decision 019). The simulator's agent host, many agents in one process, checks in place.
    signed_check = staticmethod(verify_detached)

    def __init__(self, cfg: AgentConfig, *, clock: Clock | None = None, rng: random.Random | None = None,
                 config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.guard = ConfigGuard(config_path)
        self._restart = False
        self._halted = False
        self.clock = clock or Clock.from_config(cfg.clock.speed, cfg.clock.start, cfg.clock.anchor, cfg.clock.schedule)
        self.rng = rng or random.Random()
        self.sn = cfg.sn or sn_from_certificate(cfg.path(cfg.link.cert_file))
        if not topics.valid_sn(self.sn):
            raise ValueError(f"sn: {self.sn!r} is not a valid terminal SN")
        self.data_dir = cfg.path(cfg.data_dir)
        self.interval = cfg.sampling.interval_s
        self.boot_id = boot_id(cfg.boot_id_file)
        self.stats = Stats()
        self.events: queue.Queue[tuple[str, object]] = queue.Queue()
        self.system = SystemCollector()
        self.storage = StorageCollector(self.data_dir, cfg.storage.mounts, cfg.storage.critical_fill_pct)
        self.peripherals = PeripheralSet(cfg.peripherals, monotonic=self.clock.monotonic)
        app_files = msgspec.structs.replace(cfg.terminal_app, **{
            k: str(cfg.path(v)) for k in ("events_file", "status_file") if (v := getattr(cfg.terminal_app, k))})
        self.appwatch = AppWatch(app_files, self.data_dir)  # the terminal application's files (issue 18)
        self.rtt = RttTracker()
        self.outbox: Outbox | None = None
        self.outbox_error = ""
        # Samples that could not be written to disk: held in memory under a volatile epoch.
        self.volatile_epoch = random.SystemRandom().randrange(2**31, 2**32)
        self.memory: list[Sample] = []
        self._memory_seq = 0
        self.inflight: dict[int, float] = {}  # seq -> monotonic send time
        self.memory_inflight: dict[int, float] = {}
        self.clock_ok = False
        self._open_outbox()  # a damaged one is moved aside here, and its buffer_reset event stored
        self._check_clock()
        self._urgent = True
        self._newest_first = True
        self._last_checks: dict[str, int] = {}
        self._last_batch_mono = 0.0
        self._pump_at = 0.0  # monotonic time pump() has more to send (pacing, a full batch sent); 0: nothing
        self._open_sample: tuple[Sample, float] | None = None
        self._next_slot = 0.0
        self.last_sample: Sample | None = None
        self.console: object | None = None
        self._last_inventory = 0.0
        self._stop = threading.Event()
        self.commands: CommandExecutor | None = None
        if cfg.commands.enabled:
            try:
                self.commands = CommandExecutor(self)
            except (OSError, sqlite3.Error) as err:
                log.error("remote commands disabled: cannot open commands.sqlite: %s", err)
        link_cfg = cfg.link
        self.renewer: Renewer | None = None
        if cfg.renewal.enabled:
            r = cfg.renewal
            self.renewer = Renewer(
                self.sn, cfg.path(link_cfg.ca_file), cfg.path(link_cfg.cert_file), cfg.path(link_cfg.key_file),
                passphrase=link_cfg.key_passphrase, days_before=r.days_before, resend_s=r.resend_h * 3600,
                switch_timeout_s=r.switch_timeout_s, now=self.clock.now, clock_checked=lambda: self.clock_ok,
                store_event=lambda kind, data: self.store_event(Event(seq=0, ts=int(self.clock.now()), kind=kind,
                                                                      data=data)))
            self.renewer.recover()  # a switch cut short is finished before the key and certificate are loaded
        ctx = tls_context(
            cfg.path(link_cfg.ca_file), cfg.path(link_cfg.cert_file), cfg.path(link_cfg.key_file),
            link_cfg.key_passphrase, link_cfg.tls_min_version,
        )
        self.link = Link(
            self.sn, link_cfg.host, link_cfg.port, ctx,
            keepalive=link_cfg.keepalive_s, reconnect_min=link_cfg.reconnect_min_s,
            reconnect_max=link_cfg.reconnect_max_s, version=__version__,
            on_connect=lambda: self.events.put(("connect", None)),
            on_disconnect=lambda why: self.events.put(("disconnect", why)),
            on_message=lambda kind, payload: self.events.put(("message", (kind, payload))),
            on_rtt=lambda ms: self.events.put(("rtt", ms)),
            on_retained=lambda kind, payload: self.events.put(("retained", (kind, payload))),
            on_refused=lambda kind, code, name: self.events.put(("refused", (kind, code, name))),
            rng=self.rng,
            # the broker certificate's dates against the best known time, deferred to the server's while the clock
            # is unchecked (agent/tls.py); a simulated clock's time is not comparable with them: OpenSSL checks
            best_time=self._best_time if self.clock.real else None,
            now=self.clock.now,
            monotonic=self.clock.monotonic, wait=self.clock.wait,
        )
        if self.renewer is not None:
            self.renewer.context = ctx
            self.renewer.reconnect = self.link.reconnect
            self.renewer.connects = lambda: self.link.connects
        # retained commands ignored since the last cmd_refused report, by command type; reported at once, then
        # at most every REPORT_EVERY_S (a flapping link re-delivers the retained message at every reconnect)
        self._retained_unreported: dict[str, int] = {}
        self._retained_reported_mono = 0.0
        # publishes the broker refused (MQTT 5 PUBACK reason code >= 0x80) since delivery last worked:
        # code -> {count, first, last, name}; reported as publish_not_authorized once the server acknowledges again
        self._refused: dict[int, dict[str, object]] = {}
        self._refused_logged_mono = 0.0

    # outbox -----------------------------------------------------------------------
    def _open_outbox(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.outbox = Outbox(self.data_dir / "outbox.sqlite", int(self.cfg.outbox.max_mb * 1024 * 1024))
            # outbox_error is cleared by the first write that succeeds, not by opening: a full disk still
            # opens, and clearing here would log the same failure again at every sample
            if getattr(self, "clock_ok", False):
                self._redate_held()  # the clock was checked while the outbox was closed
        except (OSError, OutboxError) as err:
            self.outbox = None
            if str(err) != self.outbox_error:
                log.error("outbox unavailable, holding samples in memory: %s", err)
            self.outbox_error = str(err)
            return
        self._report_reset()

    def _report_reset(self) -> None:
        """A damaged outbox was moved aside and a fresh one made: say so to the server (``buffer_reset``: the
        reason and the quarantined file's name; what was in it and not yet sent is lost to the counting)."""
        if self.outbox is None or self.outbox.reset is None:
            return
        reset, self.outbox.reset = self.outbox.reset, None
        self.stats.buffer_resets += 1
        self.inflight.clear()
        self._urgent = True
        self._store(Event(seq=0, ts=int(self.clock.now()), kind="buffer_reset", data=dict(reset)))

    def _outbox_corrupt(self, err: OutboxError) -> bool:
        """``err`` says the outbox file is damaged (found while running): quarantine it and carry on with a
        fresh one. True when a fresh outbox is open."""
        if not err.corrupt or self.outbox is None:
            return False
        try:
            self.outbox.replace_corrupt(str(err))
        except OutboxError as again:
            log.error("%s; holding samples in memory", again)
            self.outbox_error = str(again)
            self.outbox = None
            self.inflight.clear()
            return False
        self._report_reset()
        return self.outbox is not None

    def _boottime_of(self, item: Sample | Event) -> float:
        """The boot-time reading at the item's own timestamp (not at the moment it is stored), so a
        later clock correction maps it back onto exactly its slot."""
        now, boottime = self.clock.now_and_boottime()
        return boottime - (now - item.ts)

    def _store(self, item: Sample | Event) -> None:
        if self.outbox is None:
            self._open_outbox()
        if self.outbox is not None:
            try:
                try:
                    item.seq = self.outbox.add(item, boot_id=self.boot_id, boottime=self._boottime_of(item),
                                               held=not self.clock_ok)
                except OutboxError as err:
                    if not self._outbox_corrupt(err) or self.outbox is None:
                        raise
                    item.seq = self.outbox.add(item, boot_id=self.boot_id, boottime=self._boottime_of(item),
                                               held=not self.clock_ok)
                if self.outbox_error:
                    log.info("outbox writable again")
                self.outbox_error = ""
                self._flush_memory()
                return
            except OutboxError as err:
                self.stats.outbox_errors += 1
                if err.args[0] != self.outbox_error:
                    log.error("%s; holding samples in memory", err)
                self.outbox_error = str(err)
                # Reopen at the next sample: a connection opened on a read-only filesystem stays
                # read-only even after the filesystem is repaired.
                self.outbox.close()
                self.outbox = None
                self.inflight.clear()
        if isinstance(item, Sample):
            self._memory_seq += 1
            item.seq = self._memory_seq
            if item.clock == CLOCK_UNVERIFIED:
                item.clock = CLOCK_CHECKED if self.clock_ok else CLOCK_UNVERIFIED
            self.memory.append(item)
            cap = self.cfg.outbox.memory_fallback
            if len(self.memory) > cap:
                lost = self.memory[: len(self.memory) - cap]
                del self.memory[: len(self.memory) - cap]
                log.error("memory fallback full: %d oldest samples lost", len(lost))
            self.stats.memory_held = len(self.memory)

    def _flush_memory(self) -> None:
        """The disk works again: move what was held in memory into the outbox."""
        if not self.memory or self.outbox is None:
            return
        held, self.memory = self.memory, []
        self.memory_inflight.clear()
        for s in held:
            try:
                s.seq = self.outbox.add(s, boot_id=self.boot_id, boottime=self._boottime_of(s))
            except OutboxError:
                self.memory.append(s)
        self.stats.memory_held = len(self.memory)

    # clock ------------------------------------------------------------------------
    def _check_clock(self) -> None:
        if self.clock_ok:
            return
        if self.cfg.clock.trust_ntp and self.clock.speed == 1.0 and ntp_synchronised():
            self._clock_checked("ntp")

    def _best_time(self) -> float | None:
        """The time once the clock has been checked (NTP, or the server's offset), None before (the link's thread)."""
        return self.clock.now() if self.clock_ok else None

    def _clock_moved(self, jump: float) -> None:
        """The server's time moved this clock by ``jump`` seconds: what is planned or kept in memory on the old
        time moves with it, onto the interval grid (as the outbox re-dates its rows). Without this a clock set back
        by 18 months would take its next sample in 18 months, and one set forward would date its next sample on
        the old time."""
        if abs(jump) < 1.0:
            return
        grid = self.interval
        if self._next_slot:
            self._next_slot = round((self._next_slot + jump) / grid) * grid
        self._last_inventory += jump
        pending = [s for s in self.memory if s.clock == CLOCK_UNVERIFIED]
        if self._open_sample is not None:
            pending.append(self._open_sample[0])
        for s in pending:
            s.ts = round((s.ts + jump) / s.interval) * s.interval
            s.clock = CLOCK_CORRECTED

    def _clock_checked(self, how: str) -> None:
        self.clock_ok = True
        log.info("clock checked (%s)", how)
        self._redate_held()
        self._urgent = True  # what was held (command results, events) goes out now, not with the next batch
        for s in self.memory:
            if s.clock == CLOCK_UNVERIFIED:
                s.clock = CLOCK_CHECKED

    def _redate_held(self) -> None:
        if self.outbox is None:
            return
        try:
            n = self.outbox.redate(self.boot_id, *self.clock.now_and_boottime())
            self.outbox.release_old_boots(self.boot_id)
            if n:
                log.info("re-dated %d samples taken before the clock was checked", n)
        except OutboxError as err:
            log.error("%s", err)
            self._outbox_corrupt(err)

    # sampling -----------------------------------------------------------------------
    def take_sample(self, slot_ts: int) -> Sample:
        sysinfo = self.system.collect()
        fs, storage_check = self.storage.collect()
        if self.outbox_error and storage_check.state == OK:
            storage_check = Check(FAULT, f"outbox: {self.outbox_error}"[:120])
        checks = {"storage": storage_check}
        checks.update(self.peripherals.check_all())
        identity_event = self.peripherals.pop_identity_event()
        if identity_event:
            # reported when first seen and when it changes (a SIM swap), not in every sample
            self._store(Event(seq=0, ts=slot_ts, kind=identity_event, data=self.peripherals.identity()))
            self._urgent = True
        for event in self.appwatch.poll(slot_ts, self.peripherals.identity()):
            # service counts per hour, interface reach and the address when they change; never the application's
            # lines themselves
            self._store(event)
        signal = self.peripherals.signal()
        rscp_dbm, ecio_db = self.peripherals.signal_3g()
        cell_id, tac = self.peripherals.cell()
        data_bytes = self.peripherals.data_bytes()
        if data_bytes is None and self.cfg.link.data_interface:
            nic = psutil.net_io_counters(pernic=True).get(self.cfg.link.data_interface)
            data_bytes = None if nic is None else nic.bytes_sent + nic.bytes_recv
        connected = self.link.connected
        info = self.link.tcp_info() if connected else None
        self.stats.samples += 1
        return Sample(
            seq=0, ts=slot_ts, interval=self.interval,
            clock=CLOCK_CHECKED if self.clock_ok else CLOCK_UNVERIFIED,
            connected=connected,
            rtt_var_ms=None if info is None else int(round(info.rttvar_ms)),
            retrans=None if info is None else info.total_retrans,
            segs_out=None if info is None else info.segs_out,
            fs=fs, checks=checks, signal_dbm=signal[0], csq=signal[1], cell_id=cell_id, tac=tac,
            data_bytes=data_bytes, rscp_dbm=rscp_dbm, ecio_db=ecio_db,
            **sysinfo,  # type: ignore[arg-type]
        )

    def _finish_sample(self, sample: Sample, probe_lost: bool) -> None:
        worst, jitter = self.rtt.take()
        if probe_lost:
            worst = max(worst or 0, int(PROBE_WAIT_REAL_S * 1000))
        sample.rtt_ms = worst
        if jitter is not None:
            sample.rtt_var_ms = jitter
        states = {k: c.state for k, c in sample.checks.items()}
        if states != self._last_checks:
            if self._last_checks:
                changed = {k for k in states.keys() | self._last_checks.keys() if states.get(k) != self._last_checks.get(k)}
                log.info("check state changed: %s", ", ".join(
                    f"{k}={'ok' if states.get(k) == OK else 'fault' if states.get(k) == FAULT else 'unknown'}"
                    + (f" ({sample.checks[k].reason})" if k in sample.checks and sample.checks[k].reason else "")
                    for k in sorted(changed)))
                self._urgent = True
            self._last_checks = states
        self._store(sample)
        self.last_sample = sample
        systemd.notify("WATCHDOG=1")

    def store_event(self, event: Event) -> None:
        """Keep an event in the outbox and send it soon (command results, audit records)."""
        self._store(event)
        self._urgent = True

    def _inventory(self) -> None:
        data: dict[str, object] = {
            "agent": __version__, "boot_id": self.boot_id, "hostname": socket.gethostname(),
            "components": {
                name: read_component_version(src.file, src.command, src.pattern)
                for name, src in self.cfg.components.items()
            },
        }
        data.update(self.peripherals.identity())
        self._store(Event(seq=0, ts=int(self.clock.now()), kind="inventory", data=data))
        self._last_inventory = self.clock.now()

    # link events -----------------------------------------------------------------------
    def _handle(self, kind: str, arg: object) -> None:
        if kind == "connect":
            if self.renewer is not None:
                self.renewer.on_connect()
            self._urgent = True
            self._newest_first = True
            self.inflight.clear()
            self.memory_inflight.clear()
        elif kind == "disconnect":
            self.inflight.clear()
            self.memory_inflight.clear()
        elif kind == "retained":
            self._on_retained(*arg)  # type: ignore[misc]
        elif kind == "refused":
            self._on_refused(*arg)  # type: ignore[misc]
        elif kind == "rtt":
            self.rtt.add(float(arg))  # type: ignore[arg-type]
            if self._open_sample is not None:
                sample, _ = self._open_sample
                self._open_sample = None
                self._finish_sample(sample, probe_lost=False)
        elif kind == "message":
            topic_kind, payload = arg  # type: ignore[misc]
            if topic_kind == topics.ACK:
                self._on_ack(payload)
            elif topic_kind == topics.COMMAND and self.commands is not None:
                self.commands.handle(payload)
            elif topic_kind == topics.CERT and self.renewer is not None:
                self.renewer.on_certificate(payload)
        elif kind == "cmd_done" and self.commands is not None:
            cid, ctype, code, output, started = arg  # type: ignore[misc]
            self.commands.finish(cid, ctype, code, output, started)
        elif kind == "restart":
            log.warning("restarting for command %s (a configuration change, or a handover to an agent release)", arg)
            self._restart = True
            self._stop.set()

    def _on_retained(self, topic_kind: str, payload: bytes) -> None:
        """A retained message on our command (or ack) topic: never executed, counted, reported (catalogue V5)."""
        self.stats.retained_ignored += 1
        if topic_kind != topics.COMMAND:
            log.warning("ignored a retained message on %s (%d bytes): only the live ones count", topic_kind, len(payload))
            return
        ctype = "?"
        try:  # what it claims to be, for the report; not verified, never run
            from wire.commands import SignedCommand, decode_command

            ctype = decode_command(codec.decode(payload, SignedCommand).body).type[:32] or "?"
        except Exception:  # hostile bytes: still ignored and counted
            pass
        self._retained_unreported[ctype] = self._retained_unreported.get(ctype, 0) + 1
        if self.stats.retained_ignored == 1 or self.clock.monotonic() - self._retained_reported_mono >= REPORT_EVERY_S:
            log.warning("ignored a retained %s command (%d ignored so far): a command is run only when sent live; "
                        "clear the retained message on %s", ctype, self.stats.retained_ignored,
                        topics.topic(self.sn, topics.COMMAND))
        self._report_retained()

    def _report_retained(self) -> None:
        if not self._retained_unreported:
            return
        if self._retained_reported_mono and self.clock.monotonic() - self._retained_reported_mono < REPORT_EVERY_S:
            return
        self._retained_reported_mono = self.clock.monotonic()
        todo, self._retained_unreported = self._retained_unreported, {}
        for ctype, n in todo.items():
            self.store_event(Event(seq=0, ts=int(self.clock.now()), kind="cmd_refused",
                                   data={"reason": "retained", "count": n, "type": ctype}))

    def _on_refused(self, topic_kind: str, code: int, name: str) -> None:
        """The broker answered a publish with a failure reason code: not delivered. The rows stay in the outbox
        (sent again after ``ack_timeout_s``); counted, logged at most every REPORT_EVERY_S, and reported as
        ``publish_not_authorized`` once the server acknowledges again (catalogue V3)."""
        self.stats.publishes_refused += 1
        now = int(self.clock.now())
        st = self._refused.setdefault(code, {"count": 0, "first": now, "last": now, "name": name})
        st["count"] = int(st["count"]) + 1  # type: ignore[call-overload]
        st["last"] = now
        if not self._refused_logged_mono or self.clock.monotonic() - self._refused_logged_mono >= REPORT_EVERY_S:
            self._refused_logged_mono = self.clock.monotonic()
            log.error("publish_not_authorized: the broker refused %d publish(es) since delivery last worked, the "
                      "latest on %s: %s (0x%02X); the data stays in the outbox and is sent again",
                      sum(int(v["count"]) for v in self._refused.values()),  # type: ignore[call-overload]
                      topics.topic(self.sn, topic_kind), name, code)

    def _report_refused(self) -> None:
        """Delivery works again (the server acknowledged): report what the broker refused meanwhile."""
        if not self._refused:
            return
        todo, self._refused = self._refused, {}
        self._refused_logged_mono = 0.0
        for code, st in sorted(todo.items()):
            log.warning("delivery works again after %d publish(es) refused with %s (0x%02X)", st["count"], st["name"], code)
            self.store_event(Event(seq=0, ts=int(self.clock.now()), kind="publish_not_authorized", data={
                "count": st["count"], "reason_code": code, "first": st["first"], "last": st["last"]}))

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = codec.decode(payload, Ack)
        except codec.DecodeError as err:
            self.stats.acks_ignored += 1
            log.warning("ignored an acknowledgement: %s", err)
            return
        server_now = ack.time_ms / 1000
        if self.guard.pending is not None:
            cid = self.guard.confirm()  # the server is reachable under the new configuration
            if cid:
                log.info("configuration change %s confirmed", cid)
                if self.commands is not None:
                    self.commands.report(cid, "set_config", "succeeded", 0, "configuration applied; server reached",
                                         time.time())
        if not self.clock_ok or abs(server_now - self.clock.now()) > max(5.0, 2 * self.clock.speed):
            before = self.clock.now()
            self.clock.set_offset(server_now - self.clock.raw())
            self._clock_moved(self.clock.now() - before)
            self.clock_ok = False
            self._clock_checked("server time")
        gone = ack.ranges + [(lo, hi) for lo, hi, _ in ack.rejected]
        if gone:
            self._report_refused()
        for lo, hi, reason in ack.rejected:
            self.stats.items_rejected += hi - lo + 1
            self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + hi - lo + 1
            log.warning("server rejected items %d-%d for good: %s", lo, hi, reason)
        if ack.epoch == self.volatile_epoch:
            done = {s for lo, hi in gone for s in range(lo, hi + 1)}
            self.memory = [s for s in self.memory if s.seq not in done]
            for s in done:
                self.memory_inflight.pop(s, None)
            self.stats.memory_held = len(self.memory)
            return
        if self.outbox is None or ack.epoch != self.outbox.epoch:
            self.stats.acks_ignored += 1
            return
        try:
            n = self.outbox.delete(gone)
        except OutboxError as err:
            log.error("%s", err)
            self._outbox_corrupt(err)
            return
        self.stats.items_acked += n
        for lo, hi in gone:
            if hi - lo < 4096:
                for s in range(lo, hi + 1):
                    self.inflight.pop(s, None)
            else:
                for s in [s for s in self.inflight if lo <= s <= hi]:
                    del self.inflight[s]

    # sending -------------------------------------------------------------------------------
    def pump(self) -> None:
        self._pump_at = 0.0
        if not self.link.connected:
            return  # the connection's event wakes the loop
        now_mono = self.clock.monotonic()
        timeout = self.cfg.link.ack_timeout_s  # real seconds: round trips are not accelerated
        for d in (self.inflight, self.memory_inflight):
            for seq in [s for s, t in d.items() if now_mono - t > timeout]:
                del d[seq]
        self._send_memory(now_mono)
        if self.outbox is None:
            return
        if self.inflight or self.memory_inflight:  # an acknowledgement that never comes: resend when it is due
            self._pump_at = min(list(self.inflight.values()) + list(self.memory_inflight.values())) + timeout
        if len(self.inflight) >= self.cfg.link.max_batch * 4:
            return  # window full: wait for acknowledgements
        if now_mono - self._last_batch_mono < 1.0 / self.cfg.link.backlog_rate:
            self._pump_again(self._last_batch_mono + 1.0 / self.cfg.link.backlog_rate)
            return  # pacing
        try:
            if self._newest_first:
                # after (re)connecting, the newest state goes first so the server knows the unit is back: the newest
                # sample, whatever events came after it (an inventory, an identity change), then the backlog
                rows = self.outbox.pending(1, exclude=set(self.inflight), newest=True, kind=KIND_SAMPLE)
                if rows:  # (none yet: every sample waits for the clock check; the newest goes first after it)
                    self._send_rows(rows, now_mono)
                    self._newest_first = False
                    self._pump_again(now_mono + 1.0 / self.cfg.link.backlog_rate)
                    return
            rows = self.outbox.pending(self.cfg.link.max_batch, exclude=set(self.inflight))
        except OutboxError as err:
            log.error("%s", err)
            if self._outbox_corrupt(err):
                self._pump_again(now_mono + 1.0)
            return
        if not rows:
            self._urgent = False
            return
        oldest_age = self.clock.now() - rows[0].ts
        due = (
            self._urgent
            or len(rows) >= self.cfg.link.max_batch
            # the oldest unsent sample covers [ts, ts + interval): a batch every batch_interval_s exactly
            or oldest_age + self.interval >= self.cfg.link.batch_interval_s
        )
        if due:
            self._send_rows(rows, now_mono)
            if len(rows) < self.cfg.link.max_batch:
                self._urgent = False
            else:  # a backlog: the next batch when the pacing allows
                self._pump_again(now_mono + 1.0 / self.cfg.link.backlog_rate)

    def _pump_again(self, at: float) -> None:
        self._pump_at = min(self._pump_at, at) if self._pump_at else at

    def _send_rows(self, rows: list[Row], now_mono: float) -> None:
        batch = Batch(
            sn=self.sn, epoch=self.outbox.epoch if self.outbox else 0,
            samples=[r.item for r in rows if isinstance(r.item, Sample)],
            events=[r.item for r in rows if isinstance(r.item, Event)],
        )
        if self.link.publish(topics.TELEMETRY, codec.encode(batch)):
            for r in rows:
                self.inflight[r.seq] = now_mono
            self.stats.batches_sent += 1
            self._last_batch_mono = now_mono

    def _send_memory(self, now_mono: float) -> None:
        todo = [s for s in self.memory if s.seq not in self.memory_inflight and s.clock != CLOCK_UNVERIFIED]
        if not todo:
            return
        todo = todo[: self.cfg.link.max_batch]
        batch = Batch(sn=self.sn, epoch=self.volatile_epoch, samples=todo)
        if self.link.publish(topics.TELEMETRY, codec.encode(batch)):
            for s in todo:
                self.memory_inflight[s.seq] = now_mono
            self.stats.batches_sent += 1

    # the loop ---------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._wake()

    def halt(self) -> None:
        """Stop as a power cut would (the simulator's agent host): no goodbye on the link, and the sample
        waiting for its probe is lost; the outbox stays on disk as it is."""
        self._halted = True
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        """Wake the loop from its wait (up to IDLE_WAIT_S) now. From a thread of its own: stop() may run in a
        signal handler on the loop's thread, which may be holding the queue's lock at that instant."""
        threading.Thread(target=self.events.put, args=(("wake", None),), name="agent-wake", daemon=True).start()

    def status_snapshot(self) -> dict[str, object]:
        """What an engineer needs at the terminal: health, checks, link, backlog, clock, recent errors.

        Safe to call from another thread (it only reads)."""
        from wire.messages import sample_dict

        outbox_count = oldest = None
        if self.outbox is not None:
            try:
                outbox_count, oldest = self.outbox.count(), self.outbox.oldest_ts()
            except Exception as err:  # a broken disk must not break the console
                log.debug("outbox unreadable for status: %s", err)
        last = self.last_sample
        return {
            "sn": self.sn, "version": __version__,
            "health": sample_dict(last) if last is not None else None,
            "checks": {k: {"state": c.state, "reason": c.reason} for k, c in (last.checks if last else {}).items()},
            "link": {"connected": self.link.connected, "host": self.cfg.link.host, "port": self.cfg.link.port,
                     "connects": self.link.connects, "failures": self.link.failures, "last_error": self.link.last_error},
            "outbox": {"count": outbox_count, "oldest_ts": oldest, "error": self.outbox_error,
                       "memory_held": len(self.memory), "inflight": len(self.inflight)},
            "clock": {"checked": self.clock_ok, "now": self.clock.now()},
            "stats": {"samples": self.stats.samples, "batches_sent": self.stats.batches_sent,
                      "items_acked": self.stats.items_acked, "items_rejected": self.stats.items_rejected,
                      "buffer_resets": self.stats.buffer_resets, "retained_ignored": self.stats.retained_ignored,
                      "publishes_refused": self.stats.publishes_refused},
            "identity": self.peripherals.identity(),
            "certificate": self.renewer.snapshot() if self.renewer is not None else None,
        }

    def _sample_if_due(self) -> None:
        now = self.clock.now()
        if now < self._next_slot:
            return
        if self._open_sample is not None:  # the previous probe never came back
            sample, _ = self._open_sample
            self._open_sample = None
            self._finish_sample(sample, probe_lost=True)
        self._check_clock()
        sample = self.take_sample(int(self._next_slot))
        missed = int((now - self._next_slot) // self.interval)
        self._next_slot += self.interval * (1 + max(0, missed))
        if self.cfg.link.probe_every_sample and self.link.connected and self.link.probe():
            self._open_sample = (sample, self.clock.monotonic() + min(PROBE_WAIT_REAL_S, 0.8 * self.interval / self.clock.speed))
        else:
            self._finish_sample(sample, probe_lost=False)
        if now - self._last_inventory >= 86400:
            self._inventory()

    def next_wake(self) -> float:
        """The :meth:`Clock.monotonic` time at which :meth:`step` has something to do: the next slot, a probe's
        deadline or pump()'s next turn (events that arrive sooner are due at once)."""
        now = self.clock.monotonic()
        wake = now + (self._next_slot - self.clock.now()) / self.clock.speed
        if self._open_sample is not None:
            wake = min(wake, self._open_sample[1])
        if self._pump_at:
            wake = min(wake, self._pump_at)
        return wake

    def _idle_wait(self) -> float:
        """Seconds the loop may sleep: until :meth:`next_wake`, at most :data:`IDLE_WAIT_S` (events wake it
        sooner)."""
        return max(0.0, min(self.next_wake() - self.clock.monotonic(), IDLE_WAIT_S))

    def _config_guard_overdue(self) -> bool:
        """A remote configuration change that has not reached the server in time: put the old one back."""
        if not self.guard.overdue(self.clock.now()):
            return False
        cid = self.guard.roll_back()
        log.error("configuration change %s lost the server: rolled back", cid)
        if cid and self.commands is not None:
            self.commands.report(cid, "set_config", "failed", 1,
                                 "rolled back: the server was not reached under the new configuration", time.time())
        self._restart = True
        return True

    def _wait_for_events(self, timeout: float) -> None:
        try:
            kind, arg = self.events.get(timeout=timeout)
            self._handle(kind, arg)
            while True:
                kind, arg = self.events.get_nowait()
                self._handle(kind, arg)
        except queue.Empty:
            pass

    def handle_events(self) -> int:
        """Handle every event waiting on the queue without blocking (the simulator's lockstep worker, which
        drives the link itself); returns how many."""
        n = 0
        try:
            while True:
                kind, arg = self.events.get_nowait()
                self._handle(kind, arg)
                n += 1
        except queue.Empty:
            return n

    def start(self, *, link_thread: bool = True) -> None:
        """Everything before the first turn of the loop. ``link_thread=False``: the link gets no thread of its
        own; whoever drives the agent runs the link's attempts and network rounds (simulator/vworker.py)."""
        log.info("agent %s starting as %s (data in %s)", __version__, self.sn, self.data_dir)
        # Spread the first connection over a few seconds so a fleet powering up together does not
        # hit the broker in the same instant.
        delay = self.rng.uniform(0, min(3.0, self.cfg.link.reconnect_min_s))
        if link_thread:
            self.link.start(initial_delay=delay)
        else:
            self.link.start_external(initial_delay=delay)
        if self.cfg.console is not None:
            from .console import Console

            self.console = Console(self, self.cfg.console)
            self.console.start()  # type: ignore[attr-defined]
        if self.commands is not None:
            self.commands.start()
        systemd.notify("READY=1")
        # fed once a sample: the timeout must outlast two sampling intervals and a slow sample
        systemd.extend_watchdog(2 * self.interval / self.clock.speed + 60)
        self._next_slot = math.ceil(self.clock.now() / self.interval) * self.interval
        self._inventory()

    def step(self) -> bool:
        """One turn of the loop's body: the sample that is due, a lost probe, the console's events, what is due
        to be sent. False when the agent must stop (a configuration change that lost the server)."""
        self._sample_if_due()
        if self._config_guard_overdue():
            return False
        if self._open_sample is not None and self.clock.monotonic() > self._open_sample[1]:
            sample, _ = self._open_sample
            self._open_sample = None
            self._finish_sample(sample, probe_lost=True)
        if self.console is not None:
            for ev in self.console.take_events():  # type: ignore[attr-defined]
                self.store_event(ev)  # engineers' sessions and commands, reported to the server
        self._report_retained()  # what was held back by the rate limit, once it is due
        if self.renewer is not None:
            try:
                self.renewer.tick(self.link.connected)
            except OSError as err:  # a full or read-only disk: the certificate in use stays, tried again later
                log.error("certificate renewal: %s", err)
        self.pump()
        return True

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def finish(self) -> None:
        """Everything after the loop: the sample waiting for its probe, goodbye (or not, when halted), close."""
        if self._open_sample is not None and not self._halted:
            self._finish_sample(self._open_sample[0], probe_lost=False)
        if self.console is not None:
            self.console.stop()  # type: ignore[attr-defined]
        if self._halted:
            self.link.abort()
        else:
            self.link.stop()
        self.peripherals.close()
        if self.commands is not None:
            self.commands.stop()
        if self.outbox is not None:
            self.outbox.close()
        log.info("agent stopped")

    def run(self) -> None:
        """The field's loop: :meth:`step`, then wait for an event or :meth:`next_wake` (the simulator's lockstep
        worker runs the same :meth:`start`, :meth:`step`, :meth:`next_wake` and :meth:`finish` without threads)."""
        self.start()
        try:
            while not self._stop.is_set():
                if not self.step():
                    break
                self._wait_for_events(self._idle_wait())
        finally:
            self.finish()
        if self._restart and self.config_path is not None:
            from .commands import reexec

            reexec(self.config_path)
