"""A worker of the virtual-time player: a share of the fleet's units as real agents, driven without threads.

Each unit is a real ``agent.main.Agent`` with a :class:`wire.clock.VirtualClock`, its real drivers on in-process
emulators (``emu://``, simulator/emulators/inproc.py) and its real paho/TLS session to the real broker, whose
network loop this worker runs (``Link.start_external``: the same ``attempt``/``lost``/``housekeeping`` steps as
the field's link thread, and the same ``Agent.step``/``next_wake`` as the field's loop).

The coordinator (simulator/vplayer.py) owns the fleet's virtual time and moves it a window (one second) at a time,
skipping windows where nothing is due: ``advance(t)`` runs every unit that has something due in ``[t, t + 1 s)``
(a slot, a probe's deadline, the outbox's pacing, a reconnection attempt, bytes held back by an emulated latency),
each on its own virtual clock and in its own order, with network rounds until everything in flight is settled
(written, answered by the broker, acknowledged by the server) before the unit's next event; it answers with the
earliest time one of its units has something due. The server reads the window's middle
(``wire.clock.FileClock``), so every acknowledgement carries a time within half a second of its unit's clock
(docs/decisions/025-simulator-virtual-time.md).

Emulated network:

* latency ``rtt_ms``: what the agent writes is held back ``rtt_ms`` of the unit's virtual time, then written; the
  broker's answers are read at once, the unit's clock unmoved. So a PUBLISH->PUBACK round trip measures
  ``rtt_ms`` exactly. paho's own writes (it writes what is queued when it reads a CONNACK) wait for the worker's
  like any other, and the answers to what was written are awaited while later writes are held back.
* time an agent spends on its own clock (a driver's timeouts against a silent emulator: 3.2 s for an unresponsive
  modem) moves that unit's clock only; its writes go out at its own time.
* link cut (``network_down``, ``sim_missing``): the TCP connection is shut down under paho (the broker sees a lost
  connection and publishes the will) and the link's attempts go to a port that refuses connections until the
  cut ends; the link's own backoff (virtual) decides when it tries again.
"""

from __future__ import annotations

import logging
import os
import random
import selectors
import signal
import socket
import sqlite3
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: real seconds a unit may wait for an answer (a PUBACK, the server's acknowledgement) before the worker
#: reports an acknowledgement timeout and lets time move on
SETTLE_TIMEOUT_S = 20.0
PERIPHERAL_FAULTS = {
    "printer": frozenset({"printer_paper_out", "printer_cover_open", "printer_offline"}),
    "idcard": frozenset({"idcard_reader_fault"}),
    "modem": frozenset({"modem_unresponsive", "sim_missing"}),
}


class SharedSystem:
    """The host's system figures (CPU, memory, load) for every unit of a worker, read once per virtual window:
    all its agents run on the same machine, whose figures mean nothing for the scenario, and psutil's reads cost
    0.3 ms a sample. Same keys and values as ``agent.collectors.SystemCollector``."""

    def __init__(self, worker: Worker) -> None:
        from agent.collectors import SystemCollector

        self._worker = worker
        self._real = SystemCollector()
        self._at: float | None = None
        self._last: dict[str, object] = {}

    def collect(self) -> dict[str, object]:
        if self._at != self._worker.now:
            self._at = self._worker.now
            self._last = self._real.collect()
        return dict(self._last)


@dataclass
class UnitSpec:
    """What a worker needs to build one unit (picklable: sent from the coordinator)."""

    sn: str
    config: str  # agent.toml
    boot_id_file: str
    modem: str
    printer: str
    idcard: str
    ident: dict[str, str]


@dataclass(frozen=True)
class Owed:
    """The answers a unit's connection waits for: the CONNACK, the broker's PUBACKs (by message id), the server's
    acknowledgements (by the outbox's and the memory's sequence numbers) and the server's time for the hello."""

    connack: bool = False
    mids: frozenset[int] = frozenset()
    seqs: frozenset[int] = frozenset()
    memory: frozenset[int] = frozenset()
    hello: bool = False

    def any(self) -> bool:
        return self.connack or self.hello or bool(self.mids or self.seqs or self.memory)

    def __and__(self, other: Owed) -> Owed:
        return Owed(self.connack and other.connack, self.mids & other.mids, self.seqs & other.seqs,
                    self.memory & other.memory, self.hello and other.hello)


@dataclass
class VUnit:
    spec: UnitSpec
    emulators: dict[str, Any]
    devices: list[Any]
    clock: Any = None
    agent: Any = None
    running: bool = False
    cut: bool = False
    rtt_s: float = 0.0
    hold_until: float | None = None
    # what was owed an answer when the unit last wrote: while later writes are held back by a latency, the answers
    # to these still belong to the moment they were written (_waiting)
    written: Owed = field(default_factory=Owed)
    reading: bool = False  # the worker is reading its connection (paho's own writes wait for _writes)
    hello_pending: bool = False
    connects_seen: int = 0
    next_t: float = 0.0
    samples_seen: int = 0
    starts: int = 0
    late_wakes: int = 0
    max_offset: float = 0.0
    max_ack_skew: float = 0.0  # the largest |server time - the unit's clock| of an acknowledgement, when read
    ack_timeouts: int = 0
    # samples whose date changed after they were taken (the agent's clock moved under them); the one sample after a
    # night jump, dated at the slot it missed, aside (its slot counts for nobody)
    redated: int = 0
    night_slots: set[int] = field(default_factory=set)
    cuts: int = 0
    power_cut: bool = False  # stopped by a power cut: back with a new boot


class Worker:
    """Runs its units; every method is called by the coordinator through :func:`serve` (or directly)."""

    def __init__(self, specs: list[UnitSpec], broker_port: int, interval: int) -> None:
        from simulator.emulators import idcard, modem, printer

        self.broker_port = broker_port
        self.interval = interval
        self.now = 0.0
        self.incidents: list[str] = []
        # a bound socket that never listens: connecting to it is refused, as a cut link refuses
        self._refuser = socket.socket()
        self._refuser.bind(("127.0.0.1", 0))
        self.refusing_port = self._refuser.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.units: dict[str, VUnit] = {}
        self.system = SharedSystem(self)
        # CPU seconds by part of a sample (POSFLEET_SIM_PARTS=1; benchmarks/bench_sim_virtual.py): a process_time
        # reading around each part, about 1 us each, unlike a profiler's cost on every call
        self.parts: dict[str, float] | None = {} if os.environ.get("POSFLEET_SIM_PARTS") else None
        self.rounds = 0
        self.window_end = float("inf")  # the end of the window being played (advance)
        self.wait_s = 0.0  # real seconds spent waiting for answers (the broker, the server)
        self.jumped = False
        for spec in specs:
            emus = {
                "modem": modem.ModemEmulator(spec.modem, **spec.ident),
                "printer": printer.PrinterEmulator(spec.printer),
                "idcard": idcard.IdCardEmulator(idcard.SyntheticCard.resident(),
                                                lift_to_reread=_lift_to_reread(spec.idcard)),
            }
            u = VUnit(spec, emus, [])
            self.units[spec.sn] = u

    # units ---------------------------------------------------------------------------------------------
    def _build(self, u: VUnit, t: float, new_boot: bool) -> None:
        from paho.mqtt.enums import MQTTErrorCode

        from agent.config import load as load_config
        from agent.main import Agent
        from simulator.emulators import inproc
        from wire import codec
        from wire.clock import VirtualClock
        from wire.messages import Ack

        if new_boot or u.clock is None:
            if new_boot:
                Path(u.spec.boot_id_file).write_text(uuid.uuid4().hex + "\n")
            u.clock = VirtualClock(t)
            for d in u.devices:
                d.close()
            u.devices = [inproc.InprocDevice(e, u.clock, f"{u.spec.sn}-{k}") for k, e in u.emulators.items()]
        else:
            u.clock.advance_to(t)
            u.clock.set_offset(0.0)  # a restarted agent learns the server's time again
        cfg = load_config(Path(u.spec.config))
        seed = int.from_bytes(u.spec.sn.encode()[-8:].rjust(8, b"\0"), "big") ^ u.starts
        u.agent = Agent(cfg, clock=u.clock, rng=random.Random(seed), config_path=Path(u.spec.config))
        u.agent.system = self.system
        if self.parts is not None:
            self._time_parts(u.agent)
        self._watch_dates(u)
        if u.cut:
            u.agent.link.port = self.refusing_port
        # every acknowledgement settles the hello that may be waiting for one
        link = u.agent.link
        orig = link._on_message
        debug = bool(os.environ.get("POSFLEET_SIM_DEBUG"))

        def on_message(kind: str, payload: bytes, _u: VUnit = u, _orig: Any = orig) -> None:
            if kind == "a":
                _u.hello_pending = False
                try:
                    server_t = codec.decode(payload, Ack).time_ms / 1000
                except codec.DecodeError:
                    server_t = None  # the agent counts and ignores it
                if server_t is not None:
                    # the server's time (the window's middle) against the unit's clock when read: under a second
                    # when every answer is read in the window its question was written in (half a window and the
                    # unit's offset); an answer read windows late is stale by as much
                    skew = abs(server_t - _u.clock.now())
                    _u.max_ack_skew = max(_u.max_ack_skew, skew)
                    if debug:
                        log.warning("%s ack time %.3f at its time %.3f (corrected %.3f)", _u.spec.sn, server_t,
                                    _u.clock.raw(), _u.clock.now())
            if _orig is not None:
                _orig(kind, payload)

        link._on_message = on_message
        # paho writes what is queued itself when it reads a CONNACK (Client._handle_connack calls loop_write): the
        # subscriptions and the hello would go out at once, past the latency, and be answered while nobody waits
        # for them; during the worker's reads they wait for _writes, held back like every other write
        client = link.client
        write = client.loop_write

        def loop_write(_u: VUnit = u, _write: Any = write) -> Any:
            if _u.reading:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            return _write()

        client.loop_write = loop_write
        u.connects_seen = 0
        u.hold_until = None
        u.written = Owed()
        u.hello_pending = False
        u.samples_seen = 0
        u.agent.start(link_thread=False)
        u.running = True
        u.starts += 1

    def _time_parts(self, a: Any) -> None:
        parts = self.parts
        assert parts is not None

        def timed(obj: Any, name: str, part: str) -> None:
            fn = getattr(obj, name)

            def wrapper(*args: Any, **kw: Any) -> Any:
                t0 = time.process_time()
                try:
                    return fn(*args, **kw)
                finally:
                    parts[part] = parts.get(part, 0.0) + time.process_time() - t0

            setattr(obj, name, wrapper)

        timed(a.peripherals, "check_all", "drivers + emulators")
        timed(a.storage, "collect", "storage check")
        if a.outbox is not None:
            for name in ("add", "pending", "delete"):
                timed(a.outbox, name, "outbox (SQLite)")
        for name in ("loop_read", "loop_write"):
            timed(a.link.client, name, "paho read/write")
        timed(a.link.client, "publish", "paho publish")
        timed(a, "step", "agent (all)")
        timed(a, "handle_events", "agent (all)")

    def _watch_dates(self, u: VUnit) -> None:
        """The self-check "no sample re-dated": the agent moves the dates of samples it has taken when its clock
        moves by a second or more (``Agent._clock_moved``: those in memory and the one waiting for its probe) and
        when its clock is first checked (``Agent._redate_held``: the outbox's held rows, from their boot-time
        reading). Each sample whose date changes is counted in ``u.redated``: a sample dated on a clock the server
        then corrects by minutes lands in another slot (trap 1 of decision 025)."""
        from agent.outbox import KIND_SAMPLE

        a = u.agent
        moved, held = a._clock_moved, a._redate_held

        def memory_dates() -> dict[int, tuple[Any, int]]:
            kept = list(a.memory) + ([a._open_sample[0]] if a._open_sample is not None else [])
            return {id(s): (s, s.ts) for s in kept}

        def outbox_dates() -> dict[int, int]:
            box = a.outbox
            if box is None:
                return {}
            try:
                with box._lock:
                    return dict(box._db.execute("SELECT seq, ts FROM outbox WHERE held=1 AND kind=?",
                                                (KIND_SAMPLE,)).fetchall())
            except sqlite3.Error:
                return {}

        def clock_moved(jump: float) -> None:
            before = memory_dates()
            moved(jump)
            u.redated += sum(1 for s, ts in before.values() if s.ts != ts and ts not in u.night_slots)

        def redate_held() -> None:
            before = outbox_dates()
            held()
            box = a.outbox
            if not before or box is None:
                return
            try:
                with box._lock:
                    after = dict(box._db.execute(
                        f"SELECT seq, ts FROM outbox WHERE seq IN ({','.join('?' * len(before))})",
                        list(before)).fetchall())
            except sqlite3.Error:
                return
            u.redated += sum(1 for seq, ts in before.items()
                             if seq in after and after[seq] != ts and ts not in u.night_slots)

        a._clock_moved = clock_moved  # type: ignore[method-assign]
        a._redate_held = redate_held  # type: ignore[method-assign]

    def _unregister(self, u: VUnit) -> None:
        for key in list(self.sel.get_map().values()):
            if key.data is u:
                try:
                    self.sel.unregister(key.fileobj)
                except (KeyError, ValueError):
                    pass

    def _stop_agent(self, u: VUnit, power_cut: bool) -> None:
        a = u.agent
        if a is None:
            return
        self._unregister(u)
        if power_cut:
            a.halt()
        else:
            a.stop()
        a.finish()
        u.agent = None
        u.running = False
        u.hold_until = None

    def _cut(self, u: VUnit, on: bool) -> None:
        u.cut = on
        u.cuts += on
        if u.agent is None:
            return
        link = u.agent.link
        link.port = self.refusing_port if on else self.broker_port
        if on:
            sock = link.socket()
            if sock is not None:
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # a reset under paho: the broker's will
                except OSError:
                    pass
                self._read(u)

    def apply(self, sn: str, st: dict[str, Any], t: float) -> None:
        """Bring one unit to the emulation state ``st`` (simulator.run.UnitState as a dict) at time ``t``."""
        u = self.units[sn]
        for kind, switches in PERIPHERAL_FAULTS.items():
            emu = u.emulators[kind]
            emu.faults.difference_update(switches)
            emu.faults.update(set(st["faults"]) & switches)
        u.rtt_s = st["rtt_ms"] / 1000.0
        link_up = st["link_up"]
        if u.running and not st["running"]:
            u.power_cut = st["stop_signal"] == int(signal.SIGKILL)
            self._stop_agent(u, power_cut=u.power_cut)
        if u.cut != (not link_up):
            self._cut(u, not link_up)
        if not u.running and st["running"]:
            self._build(u, t, new_boot=u.power_cut)
            u.power_cut = False
        self._schedule(u)

    # time --------------------------------------------------------------------------------------------
    def _schedule(self, u: VUnit) -> None:
        a = u.agent
        if a is None:
            u.next_t = float("inf")
            return
        t = a.next_wake()
        if a.link.socket() is None and not a.link._stop.is_set():
            t = min(t, a.link.next_attempt)
        if u.hold_until is not None:
            t = min(t, u.hold_until)
        u.next_t = t

    def _activity(self, u: VUnit) -> None:
        """The agent's turn at the worker's time: its events, one step, its writes (or held back)."""
        a = u.agent
        if a is None:
            return
        link = a.link
        if link.connects != u.connects_seen:  # connected: the server answers the hello with its time
            u.connects_seen = link.connects
            u.hello_pending = True
        a.handle_events()
        before = a.stats.samples
        slot = a._next_slot
        late = u.clock.now() - slot
        if not a.step():
            self.incidents.append(f"{u.spec.sn}: agent asked to stop at {self.now}")
        if a.stats.samples != before:
            if late >= 1.0 and u.samples_seen and not self.jumped:
                u.late_wakes += 1
            if self.jumped and late >= self.interval:
                u.night_slots.add(int(slot))  # dated at the first slot it missed, counted by nobody
            u.samples_seen += 1
        link.housekeeping()
        off = abs(u.clock.offset)
        if off > u.max_offset:
            if off >= 1.0 > u.max_offset:
                log.warning("%s: clock offset %.3f s at its time %.3f, window %.3f", u.spec.sn, u.clock.offset,
                            u.clock.raw(), self.now)
            u.max_offset = off
        self._writes(u)

    def _writes(self, u: VUnit) -> None:
        a = u.agent
        if a is None:
            return
        c = a.link.client
        if not c.want_write() or c.socket() is None:
            return
        if u.hold_until is None:
            u.hold_until = u.clock.raw() + u.rtt_s
        # written now only when due and inside the window the server's clock is in: a unit whose own clock ran
        # ahead of the window (an unresponsive modem, reader and printer in one sample: 5 s of timeouts) writes in
        # the window of its own time, so the acknowledgement's time is its time (the first one sets its offset)
        if u.hold_until <= u.clock.raw() + 1e-9 and u.hold_until < self.window_end:
            u.hold_until = None
            while c.want_write() and c.socket() is not None:
                rc = c.loop_write()
                if rc != 0:
                    self._lost(u)
                    return
            u.written = self._owed(u)  # everything queued is written: all it waits for is owed from now

    def _lost(self, u: VUnit) -> None:
        self._unregister(u)
        u.written = Owed()
        if u.agent is not None:
            u.agent.link.lost()
            u.hold_until = None

    def _read(self, u: VUnit) -> None:
        a = u.agent
        if a is None:
            return
        c = a.link.client
        sock = c.socket()
        if sock is None:
            return
        u.reading = True
        try:
            for _ in range(1000):
                rc = c.loop_read()
                if rc != 0 or c.socket() is None:
                    self._lost(u)
                    return
                s = c.socket()
                if not (hasattr(s, "pending") and s.pending()):
                    break
        finally:
            u.reading = False

    def _connect(self, u: VUnit) -> None:
        a = u.agent
        up = a.link.attempt()
        while up is None:
            up = a.link.attempt()
        u.written = Owed()
        if up:
            sock = a.link.socket()
            # no Nagle: a write held back behind an unacknowledged one would wait for a delayed ACK (real
            # milliseconds at every step of the run; the round trips counted are virtual either way)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            self.sel.register(sock, selectors.EVENT_READ, u)

    def _owed(self, u: VUnit) -> Owed:
        """Every answer the unit's connection waits for now, for what is written and for what is still queued."""
        a = u.agent
        link = a.link
        return Owed(connack=not link.connected and not link._awaiting_time,
                    mids=frozenset(link.client._out_messages), seqs=frozenset(a.inflight),
                    memory=frozenset(a.memory_inflight), hello=link._awaiting_time or u.hello_pending)

    def _waiting(self, u: VUnit) -> bool:
        """Whether an answer that belongs to the present moment is still to come for this unit: to anything it
        has written. A unit holding writes back (a latency) still waits for the answers to what it wrote before
        them; left unread, such an answer (the hello's, carrying the server's time) would be read whenever it
        happened to have arrived in real time, windows later, and set the agent's clock back by as much."""
        a = u.agent
        if a is None:
            return False
        c = a.link.client
        if c.socket() is None:
            return False
        if u.hold_until is not None:
            u.written &= self._owed(u)  # what is answered is no longer owed
            return u.written.any()
        return c.want_write() or self._owed(u).any()

    def advance(self, t: float, changes: dict[str, dict[str, Any]], jumped: bool = False,
                window: float = 1.0) -> dict[str, Any]:
        """Play the window ``[t, t + window)`` of virtual time: apply ``changes`` at ``t``, then every unit runs
        what it has due in the window, each on its own clock and in its own order (a slot, a probe's deadline, the
        outbox's pacing, a reconnection attempt, writes held back by a latency), every answer awaited before its
        next event. Returns the earliest time a unit has something due after the window. ``jumped``: time
        skipped a night to get here (the slots missed meanwhile are not late wake-ups)."""
        self.now = t
        self.jumped = jumped
        end = t + window - 1e-9
        self.window_end = end
        for sn, st in changes.items():
            self.apply(sn, st, t)
        due = [u for u in self.units.values() if u.next_t < end and u.agent is not None]
        turns = 0
        while due:
            turns += 1
            for u in due:
                u.clock.advance_to(max(t, u.next_t))
                if u.hold_until is not None and u.hold_until <= u.clock.raw() + 1e-9:
                    self._writes(u)
                if u.agent is not None and u.agent.link.due():
                    self._connect(u)
                self._activity(u)
            self._settle(due)
            for u in due:
                self._schedule(u)
            due = [u for u in due if u.next_t < end and u.agent is not None]
            if turns > 10_000:
                self.incidents.append(f"{t}: units never done within their window: "
                                      f"{', '.join(u.spec.sn for u in due[:10])}")
                break
        # every answer to what a unit wrote was awaited above (_waiting), its later writes held back or not; what
        # else arrived meanwhile for a unit not waiting (a message nobody asked for: a retained one after a
        # subscription) is read now, on a clock moved to this window, rather than at the unit's next turn
        for _ in range(100):
            ready = {id(key.data): key.data for key, _ in self.sel.select(0)}
            ready.update({id(u): u for u in self.units.values() if u.agent is not None and _ssl_pending(u)})
            if not ready:
                break
            late = list(ready.values())
            for u in late:
                if u.agent is None:
                    continue
                u.clock.advance_to(t)
                self._read(u)
                self._activity(u)
            self._settle(late)
        nxt = min((u.next_t for u in self.units.values()), default=float("inf"))
        return {"next": nxt}

    def _settle(self, touched: list[VUnit]) -> None:
        """Network rounds until no unit waits for an answer that belongs to this moment."""
        waiting = {u.spec.sn: u for u in touched if self._waiting(u)}
        started = time.monotonic()
        while waiting:
            self.rounds += 1
            # TLS may hold decrypted bytes that select() cannot see
            ready = [u for u in waiting.values() if u.agent is not None and _ssl_pending(u)]
            if not ready:
                w0 = time.perf_counter()
                events = self.sel.select(timeout=0.5)
                self.wait_s += time.perf_counter() - w0
                ready = [key.data for key, _ in events]
            for u in ready:
                if u.agent is None:
                    continue
                self._read(u)
                self._activity(u)
                if self._waiting(u):
                    waiting[u.spec.sn] = u
                else:
                    waiting.pop(u.spec.sn, None)
                self._schedule(u)
            for sn, u in list(waiting.items()):
                if not self._waiting(u):
                    del waiting[sn]
            if time.monotonic() - started > SETTLE_TIMEOUT_S:
                for u in waiting.values():
                    u.ack_timeouts += 1
                self.incidents.append(f"{self.now}: no answer within {SETTLE_TIMEOUT_S:g} s for "
                                      f"{', '.join(sorted(waiting)[:10])}")
                break
        for u in touched:
            self._schedule(u)

    # the end ---------------------------------------------------------------------------------------------
    def pending(self, end_ts: int) -> dict[str, int]:
        """Units whose outbox (or memory) still holds a sample dated before ``end_ts``."""
        out: dict[str, int] = {}
        for sn, u in self.units.items():
            a = u.agent
            if a is None:
                out[sn] = -1
                continue
            n = sum(1 for s in a.memory if s.ts < end_ts)
            if a.outbox is not None:
                oldest = a.outbox.oldest_ts()
                if oldest is not None and oldest < end_ts:
                    n += 1
            if n:
                out[sn] = n
        return out

    def figures(self) -> dict[str, Any]:
        return {
            "late_wakes": sum(u.late_wakes for u in self.units.values()),
            "max_offset_s": max((u.max_offset for u in self.units.values()), default=0.0),
            "max_ack_skew_s": max((u.max_ack_skew for u in self.units.values()), default=0.0),
            "ack_timeouts": sum(u.ack_timeouts for u in self.units.values()),
            "redated_samples": sum(u.redated for u in self.units.values()),
            "starts": sum(u.starts for u in self.units.values()),
            "link_cuts": sum(u.cuts for u in self.units.values()),
            "rounds": self.rounds,
            "parts": dict(self.parts or {}),
            "wait_s": round(self.wait_s, 2),
            "cpu_s": round(time.process_time(), 2),
            "incidents": self.incidents[-20:],
            "units_offset_over_1s": sorted(sn for sn, u in self.units.items() if u.max_offset >= 1.0)[:10],
            "units_ack_skew_over_1s": sorted(sn for sn, u in self.units.items() if u.max_ack_skew >= 1.0)[:10],
            "units_late": sorted(sn for sn, u in self.units.items() if u.late_wakes)[:10],
            "units_redated": sorted(sn for sn, u in self.units.items() if u.redated)[:10],
        }

    def trim(self) -> None:
        """Logs the emulators keep for tests grow without bound over a week: empty them."""
        for u in self.units.values():
            u.emulators["modem"].received.clear()
            tr = getattr(u.emulators["printer"], "transcript", None)
            if tr is not None:
                del tr[:]

    def stop(self) -> None:
        for u in self.units.values():
            if u.agent is not None:
                self._stop_agent(u, power_cut=False)
            for d in u.devices:
                d.close()
        self._refuser.close()


def _lift_to_reread(profile: str) -> bool:
    from simulator.emulators.idcard import load_profile

    try:
        return bool(load_profile(profile).quirks.lift_to_reread)
    except Exception:  # an unknown profile: the driver reports it
        return True


def _ssl_pending(u: VUnit) -> bool:
    sock = u.agent.link.socket() if u.agent is not None else None
    return bool(sock is not None and hasattr(sock, "pending") and sock.pending())


def serve(conn: Any, specs: list[UnitSpec], broker_port: int, interval: int, log_file: str,
          nice: int = 0, cpus: frozenset[int] | None = None) -> None:
    """A worker process's main: answer the coordinator's requests on ``conn`` until ``stop``. ``nice`` and
    ``cpus`` (tests/sim/test_virtual_exact.py: no timing luck) lower this worker's priority and pin it."""
    import faulthandler

    if nice:
        os.nice(nice)
    if cpus:
        os.sched_setaffinity(0, cpus)

    logging.basicConfig(filename=log_file, level=logging.WARNING, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    faulthandler.enable(open(log_file, "a"))  # noqa: SIM115 - kept open for the process's life
    try:
        w = Worker(specs, broker_port, interval)
    except Exception:
        conn.send({"error": traceback.format_exc()})
        return
    conn.send({"ready": os.getpid()})
    prof = None
    if os.environ.get("POSFLEET_SIM_PROFILE"):  # a cProfile of this worker's CPU, written when it stops
        import cProfile

        prof = cProfile.Profile(time.process_time)  # CPU time: waiting for the coordinator or the server is not work
        prof.enable()
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        op = msg["op"]
        try:
            if op == "advance":
                conn.send(w.advance(msg["t"], msg.get("changes", {}), msg.get("jumped", False), msg.get("window", 1.0)))
            elif op == "pending":
                conn.send(w.pending(msg["end"]))
            elif op == "figures":
                conn.send(w.figures())
            elif op == "trim":
                w.trim()
                conn.send({})
            elif op == "stop":
                w.stop()
                if prof is not None:
                    prof.disable()
                    prof.dump_stats(f"{os.environ['POSFLEET_SIM_PROFILE']}.{os.getpid()}")
                conn.send(w.figures())
                break
        except Exception:
            conn.send({"error": traceback.format_exc()})
            break
