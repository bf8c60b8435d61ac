"""The fleet simulator's player: ``posfleet sim run SCENARIO.json``.

It plays a scenario (../shared/reference/scenario-format.md) with the real pieces: a Mosquitto broker and the
fleet server (started here, with the scenario's clock and time zone), one real agent per unit (an
``agent.main.Agent`` in an agent-host process, :mod:`simulator.agenthost`, 25 to a process; or a process each)
whose modem, printer and ID card reader are the emulator twins on ptys, and one link-emulator proxy per unit
(:mod:`simulator.link`) between that agent and the broker. Agents and server share an accelerated clock
(``wire.clock.Clock``: same speed, start = the scenario start, same real anchor, and the same schedule: faster
outside every service window, :func:`speed_schedule`).

How each fault is produced (nothing is faked in the agent or the server):

==================== ===================================================================================
power_off            the agent is halted as by a power cut (``Agent.halt()``; SIGKILL for an agent process) and
                     started again at the end with a new boot id
agent_down           the agent is stopped cleanly (``Agent.stop()``; SIGTERM) and started again at the end
                     (same boot id)
network_down         the unit's link proxy drops its connections and refuses new ones
high_latency         the proxy delays both directions so the PUBLISH->PUBACK round trip is ``rtt_ms`` real ms
printer_* faults     the printer emulator's fault switch of the same name
idcard_reader_fault  the reader emulator's fault switch
modem_unresponsive   the modem emulator's fault switch
sim_missing          the modem emulator's ``sim_missing`` switch, and the link is cut
storage_readonly     a read-only bind mount is laid over the unit's data directory (needs root); files the agent
                     already holds open stay writable, as with a bind mount, new opens fail with EROFS
==================== ===================================================================================

Timing: every change is applied at its simulated instant, converted to real time with the shared clock. The
agent samples at slot starts, so a change can land one slot early or late at a fault's start or end; that is
the one-slot tolerance of availability.md. Agent restarts are launched :data:`RESTART_LEAD_S` real seconds
early (the interpreter's start-up), so the first sample falls on the slot where the terminal comes back.

At the end every fault is lifted, stopped agents are started again and every agent's outbox is watched
(read-only, from outside) until no sample of the period is left in it; then the agents stop, the player waits
until the server has counted everything (ingest quiet, no pending recounts, ``complete``), and the server's
``GET /api/v1/availability`` answers for the scenario period (by unit and for the fleet) are the report.

Speed: ``speed`` real seconds of the scenario pass per real second. :func:`max_speed` is the fastest speed
at which the emulation stays faithful on this machine (see docs/simulator.md); a faster speed is played
as asked, with a warning, and shows up as no-data slots in the comparison.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .link import LinkHub, LinkProxy
from .scenario import ALL_UNITS, FAULTS, Scenario, ScenarioError, Unit, load_scenario

log = logging.getLogger(__name__)

#: emulator fault switches, by peripheral
PERIPHERAL_FAULTS: dict[str, frozenset[str]] = {
    "printer": frozenset({"printer_paper_out", "printer_cover_open", "printer_offline"}),
    "idcard": frozenset({"idcard_reader_fault"}),
    "modem": frozenset({"modem_unresponsive", "sim_missing"}),
}
LINK_CUT = frozenset({"network_down", "sim_missing"})
STOPPING = {"power_off": signal.SIGKILL, "agent_down": signal.SIGTERM}
#: scenario institution types the registry does not have, mapped to its nearest word
#: real seconds an agent process needs from exec to its first sample (measured: about 0.5 s on this machine)
RESTART_LEAD_S = 0.5
#: real seconds one agent needs per sample with healthy peripherals (three serial checks, SQLite, publish,
#: probe round trip); the fidelity floor for the slot's real duration (docs/simulator.md)
MIN_SLOT_REAL_S = 0.5
#: real seconds the agent's checks block while a peripheral does not answer (its driver's timeouts from the
#: profiles; measured with agent.peripherals.PeripheralSet.check_all against the emulators: healthy 0.06 s,
#: modem_unresponsive 2.1-3.1 s, idcard_reader_fault 1.1 s, printer_offline 0.56 s; the others 0.06 s)
FAULT_CHECK_REAL_S = {"modem_unresponsive": 3.1, "printer_offline": 0.6, "idcard_reader_fault": 1.2}
#: CPU seconds per simulated sample across agent, emulators, proxy, broker and server, set-up and drain
#: included (measured: 16.6 ms with agent hosts and the pty hub, 36.7 ms before; benchmarks/bench_sim.py,
#: docs/performance-sim.md); used to keep the whole fleet under the machine's cores
CPU_PER_SAMPLE_S = 0.017
#: the most samples a real second the whole fleet may take on two cores, measured (benchmarks/bench_sim.py, 100
#: units x 1 simulated hour, quiet box, 2026-11-23): at speed 15 (25 samples/s) the server equalled the oracle
#: but for 10 of 6,000 slots; at speed 35 (58 samples/s) the agents spent nearly all their time waiting for the
#: emulators' answers and a fifth of the slots were lost (docs/performance-sim.md). Scaled with the cores.
FLEET_SAMPLES_PER_S_2_CORES = 25.0
#: highest speed the player accepts (the clock formula is exact; this is a sanity bound)
SPEED_LIMIT = 100_000.0


class RunError(RuntimeError):
    """The simulation could not be run (setup failed, a process died, the server never finished counting)."""


# --------------------------------------------------------------------------------------------- plan (pure)
@dataclass(frozen=True)
class UnitState:
    """What the emulation of one unit looks like at one instant."""

    running: bool = True
    stop_signal: int = signal.SIGTERM  # how it was stopped, when not running
    link_up: bool = True
    rtt_ms: int = 0
    faults: frozenset[str] = frozenset()  # emulator fault switches
    storage_ro: bool = False
    status: str = "in_service"


def status_at(unit: Unit, t: datetime) -> str:
    status = "in_service"
    for change in unit.status:
        if change.at <= t:
            status = change.status
    return status


def unit_state(scenario: Scenario, unit: Unit, t: datetime, events: Sequence[Any] | None = None) -> UnitState:
    """The emulation state of ``unit`` at ``t`` from the events in effect (start included, end excluded);
    ``events``: the unit's events when the caller has them (``scenario.events_for``)."""
    active = [e for e in (scenario.events_for(unit.sn) if events is None else events) if e.start <= t < e.end]
    faults = {e.fault for e in active}
    stop = next((STOPPING[f] for f in ("power_off", "agent_down") if f in faults), None)
    return UnitState(
        running=stop is None,
        stop_signal=stop if stop is not None else signal.SIGTERM,
        link_up=not (faults & LINK_CUT),
        rtt_ms=max((e.rtt_ms or 0 for e in active if e.fault == "high_latency"), default=0),
        faults=frozenset(f for f in faults if any(f in fs for fs in PERIPHERAL_FAULTS.values())),
        storage_ro="storage_readonly" in faults,
        status=status_at(unit, t),
    )


def boundaries(scenario: Scenario) -> list[datetime]:
    """Every instant inside the period at which some unit's emulation state may change, in order."""
    times = {scenario.start}
    for e in scenario.events:
        times.update(t for t in (e.start, e.end) if scenario.start < t < scenario.end)
    for u in scenario.units:
        times.update(c.at for c in u.status if scenario.start < c.at < scenario.end)
    return sorted(times)


def timeline(scenario: Scenario) -> list[tuple[datetime, dict[str, UnitState]]]:
    """For each boundary, the state of every unit whose state changes there (all units at the start).

    Only the units with an edge at a boundary (an event of theirs or of every unit starting or ending, a status
    change) are looked at there: 1,000 units with 1,000 events took minutes when every unit was at every boundary."""
    units = {u.sn: u for u in scenario.units}
    events = {sn: scenario.events_for(sn) for sn in units}
    touched: dict[datetime, set[str]] = {}
    everyone = set(units)
    for e in scenario.events:
        for t in (e.start, e.end):
            touched.setdefault(t, set()).update(everyone if e.unit == ALL_UNITS else {e.unit} & everyone)
    for u in scenario.units:
        for c in u.status:
            touched.setdefault(c.at, set()).add(u.sn)
    order = {sn: i for i, sn in enumerate(units)}
    out: list[tuple[datetime, dict[str, UnitState]]] = []
    last: dict[str, UnitState] = {}
    for t in boundaries(scenario):
        changed: dict[str, UnitState] = {}
        for sn in (units if t == scenario.start else sorted(touched.get(t, ()), key=order.__getitem__)):
            st = unit_state(scenario, units[sn], t, events[sn])
            if last.get(sn) != st:
                changed[sn] = st
                last[sn] = st
        if changed:
            out.append((t, changed))
    return out


def max_speed(scenario: Scenario, cores: int | None = None, latency_threshold_ms: int = 400) -> float:
    """The fastest clock at which this scenario's emulation stays faithful on this machine.

    Bounds: (1) a slot lasts at least :data:`MIN_SLOT_REAL_S` real seconds plus the worst blocking check
    of any peripheral fault in the scenario (the agent samples in its own loop, and a sample that overruns
    its slot makes the next slot no data); (2) a round trip that must count as ok (``rtt_ms`` at or below
    the threshold) comes back within the agent's probe wait, ``0.8 x interval / speed``; (3) the whole fleet's
    CPU, :data:`CPU_PER_SAMPLE_S` per sample, fits in 70 % of the cores; (4) the fleet takes at most
    :data:`FLEET_SAMPLES_PER_S_2_CORES` samples a real second per two cores, the rate measured to stay faithful.
    """
    interval = scenario.sample_interval_s
    cores = cores or os.cpu_count() or 1
    faults = {e.fault for e in scenario.events}
    slot_real = MIN_SLOT_REAL_S + max((FAULT_CHECK_REAL_S.get(f, 0.0) for f in faults), default=0.0)
    bounds = [interval / slot_real]
    ok_rtts = [e.rtt_ms for e in scenario.events if e.fault == "high_latency" and (e.rtt_ms or 0) <= latency_threshold_ms]
    if ok_rtts:
        bounds.append(0.8 * interval / ((max(ok_rtts) + 100) / 1000.0))
    bounds.append(0.7 * cores * interval / (CPU_PER_SAMPLE_S * len(scenario.units)))
    bounds.append(FLEET_SAMPLES_PER_S_2_CORES * cores / 2 * interval / len(scenario.units))
    return max(1.0, math.floor(min(bounds)))


#: slots of day speed kept before service opens and after it closes, so the first and last counted slots are
#: sampled (and their probes timed) at the day speed
NIGHT_MARGIN_SLOTS = 2
#: the clock's default speed outside service hours: an hour a second
NIGHT_SPEED = 3600.0
#: a gap between service windows shorter than this many slots is played at the day speed
NIGHT_MIN_SLOTS = 30


def speed_schedule(scenario: Scenario, day_speed: float, night_speed: float | None) -> list[tuple[float, float]]:
    """The clock's piecewise speed (wire/clock.py): ``night_speed`` where no unit's slots are counted.

    Outside every institution's service hours (and the scenario default's) no slot counts, so the clock may
    run through those hours as fast as it likes: an agent that cannot keep up misses slots nobody counts.
    Service windows are widened by :data:`NIGHT_MARGIN_SLOTS` on both sides; the first and last
    margin of the scenario stay at the day speed too (agents connecting, outboxes draining). Returns
    ``[(simulated epoch s, speed), ...]`` changes, empty when there is no night to speed through.
    """
    if not night_speed or night_speed <= day_speed:
        return []
    iv = scenario.sample_interval_s
    margin = NIGHT_MARGIN_SLOTS * iv
    s, e = int(scenario.start.timestamp()), int(scenario.end.timestamp())
    hours = [scenario.service_hours] + [i.service_hours for i in scenario.institutions if i.service_hours]
    wins = sorted((a - margin, b + margin) for h in hours for a, b in h.window_seconds(s, e))
    busy: list[list[int]] = [[s - margin, s + margin]]
    for a, b in wins + [(e - margin, e + margin)]:
        if a <= busy[-1][1]:
            busy[-1][1] = max(busy[-1][1], b)
        else:
            busy.append([a, b])
    out: list[tuple[float, float]] = []
    for (_, night_from), (night_to, _) in zip(busy, busy[1:], strict=False):
        if night_to - night_from >= NIGHT_MIN_SLOTS * iv:
            out += [(float(night_from), float(night_speed)), (float(night_to), float(day_speed))]
    return out


def collapse_nights(plan: list[tuple[datetime, dict[str, UnitState]]], schedule: list[tuple[float, float]],
                    ) -> list[tuple[datetime, dict[str, UnitState]]]:
    """The plan with every change inside a night of ``schedule`` moved to that night's end.

    At night speed a minute lasts milliseconds: a player applying each change (a proxy cut, an agent stopped,
    a status posted) at its instant falls behind, and the lag carries into the counted day. Nothing at night
    is counted, so only the state each unit has when the night ends matters: the changes are merged (the
    latest state per unit) and applied once, at the night's end. ``schedule`` is :func:`speed_schedule`'s,
    night and day changes in turn.
    """
    nights = [(schedule[i][0], schedule[i + 1][0]) for i in range(0, len(schedule) - 1, 2)]
    out: list[tuple[datetime, dict[str, UnitState]]] = []
    held: dict[float, dict[str, UnitState]] = {}  # night end -> merged changes
    tz = plan[0][0].tzinfo if plan else None

    def flush(upto: float) -> None:
        for end in sorted(e for e in held if e < upto):
            out.append((datetime.fromtimestamp(end, tz), held.pop(end)))

    for t, changes in plan:
        ts = t.timestamp()
        night = next((b for a, b in nights if a < ts < b), None)
        if night is not None:
            held.setdefault(night, {}).update(changes)
            continue
        flush(ts)
        if ts in held:
            changes = {**held.pop(ts), **changes}
        out.append((t, changes))
    flush(float("inf"))
    return out


def scenario_problems(scenario: Scenario) -> list[tuple[str, str]]:
    """What this player cannot play although the scenario is valid (field path, why)."""
    problems: list[tuple[str, str]] = []
    iv = scenario.sample_interval_s
    if not 5 <= iv <= 3600 or (60 % iv and iv % 60):
        problems.append(("sample_interval_s", f"{iv}: the agent samples every 5..3600 s, a divisor or multiple of 60"))
    if any(e.fault == "storage_readonly" for e in scenario.events) and os.geteuid() != 0:
        first = next(e for e in scenario.events if e.fault == "storage_readonly")
        problems.append((f"events[{first.index}].fault",
                         "storage_readonly needs root: the player mounts the unit's data directory read-only"))
    return problems


def report_period(scenario: Scenario) -> tuple[datetime, datetime]:
    """The whole hours that enclose the scenario period (the availability API counts whole hours)."""
    tz = scenario.tz
    a = scenario.start.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    b = scenario.end.astimezone(tz)
    if b.minute or b.second:
        b = b.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return a, b


def _ident(sn: str) -> dict[str, str]:
    """A distinct, stable made-up modem identity per unit (ICCID, IMSI, IMEI with its check digit) from its SN."""
    from simulator.emulators.modem import imei_for

    d = int(hashlib.sha256(sn.encode()).hexdigest(), 16)
    return {"iccid": f"898600{d % 10**14:014d}", "imsi": f"46000{d % 10**10:010d}", "imei": imei_for(sn)}


@dataclass(frozen=True)
class Mismatch:
    sn: str
    slot: str  # ISO start of the slot
    oracle: tuple[str, str]  # (device, network)
    server: tuple[str, str]
    tolerated: bool
    why: str


def compare_slots(scenario: Scenario, sn: str, server_slots: list[Mapping[str, Any]], oracle_count: Any,
                  slot_s: int = 60) -> list[Mismatch]:
    """Every counted slot where the server and the oracle disagree, each marked tolerated or not.

    availability.md: "at a fault's start or end one slot of difference is tolerated for timing; nowhere
    else". A differing slot is tolerated when it is the slot just before or just at an edge (start or end)
    of one of the unit's events, and that edge has not already absorbed another differing slot.
    """
    want = {s.start.isoformat(): (s.device, s.network) for s in oracle_count.slots() if s.counted}
    got = {s["start"]: (s["device"], s["network"]) for s in server_slots if s.get("counted")}
    edges = sorted({int(t.timestamp()) for e in scenario.events_for(sn) for t in (e.start, e.end)})
    used: set[int] = set()
    out: list[Mismatch] = []
    none = ("not_counted", "not_counted")
    for key in sorted(set(want) | set(got), key=lambda k: datetime.fromisoformat(k)):
        a, b = want.get(key, none), got.get(key, none)
        if a == b:
            continue
        ts = int(datetime.fromisoformat(key).timestamp())
        edge = next((e for e in edges if e - slot_s <= ts <= e and e not in used), None)
        if edge is not None:
            used.add(edge)
            why = f"one slot at the fault edge {datetime.fromtimestamp(edge, scenario.tz).isoformat()}"
        else:
            why = "not at a fault's start or end"
        out.append(Mismatch(sn, key, a, b, edge is not None, why))
    return out



def oracle_check(scenario: Scenario, unit_items: Sequence[Mapping[str, Any]], *, speed: float | None = None,
                 latency_threshold_ms: int = 400) -> tuple[dict[str, Any], list[str]]:
    """The server's per-unit figures against the oracle's: ``(summary, incidents)``.

    availability.md allows one slot of difference at each fault's start or end and none elsewhere, so a unit
    may differ in each of intact, network-ok and no-data slots by at most the number of its event edges (and
    not at all in service slots, which no timing touches). A unit beyond that was not played faithfully:
    on a machine that could not keep up, peripherals answer after the drivers' deadlines (spurious faults)
    and agents miss slots (no data). The run's figures are then not the scenario's, and the incident says so,
    with the advice to play it slower. ``unit_items``: the ``items`` of ``GET /api/v1/availability``
    grouped by unit.
    """
    from .oracle import oracle

    want = {g["unit"]: g for g in oracle(scenario, group_by="unit", latency_threshold_ms=latency_threshold_ms)["groups"]}
    got = {i["sn"]: i for i in unit_items}
    keys = ("service_slots", "intact_slots", "network_ok_slots", "no_data_slots")
    off: list[dict[str, Any]] = []
    totals = dict.fromkeys(keys, 0)
    for sn, w in sorted(want.items()):
        g = got.get(sn)
        edges = {t for e in scenario.events_for(sn) for t in (e.start, e.end)} | {c.at for c in
                                                                                    scenario.unit(sn).status}
        slack = len(edges)
        diff = {k: (g or {}).get(k, 0) - w[k] for k in keys}
        for k in keys:
            totals[k] += diff[k]
        if g is None or diff["service_slots"] != 0 or any(abs(diff[k]) > slack for k in keys[1:]):
            off.append({"sn": sn, "slack": slack, **{k: [(g or {}).get(k), w[k]] for k in keys}})
    summary = {"units": len(want), "units_outside_tolerance": len(off), "fleet_difference": totals,
               "units_off": off[:20]}
    incidents: list[str] = []
    if off:
        at = f" at speed {speed:g}" if speed else ""
        incidents.append(
            f"{len(off)} of {len(want)} units differ from the oracle by more than their fault edges allow (fleet: "
            + ", ".join(f"{k.replace('_slots', '')} {v:+d}" for k, v in totals.items() if k != "service_slots")
            + f"): this run{at} was not faithful (a machine that cannot keep up makes peripherals answer late and "
            f"agents miss slots); play it slower (--speed) on a quieter machine. First: "
            + "; ".join(f"{u['sn']} intact {u['intact_slots'][0]} vs {u['intact_slots'][1]}, no data "
                        f"{u['no_data_slots'][0]} vs {u['no_data_slots'][1]} (slack {u['slack']})" for u in off[:3]))
    return summary, incidents


# --------------------------------------------------------------------------------------------- the run
@dataclass
class Options:
    speed: float | None = None  # None: max_speed()
    night_speed: float | None = NIGHT_SPEED  # the clock's speed outside service hours (speed_schedule); None: as by day
    workdir: Path | None = None
    broker_url: str = ""  # mqtts://host:port of a running broker (needs ca_dir)
    ca_dir: Path | None = None  # the fleet CA of that broker (passphrase in POSFLEET_CA_PASSPHRASE)
    server_url: str = ""  # http://host:port of a running server (token in POSFLEET_TOKEN)
    storage_url: str = ""  # the started server's [storage] url ("": a SQLite file in the work folder)
    drain_timeout_s: float = 120.0
    count_timeout_s: float = 120.0
    keep_workdir: bool = False
    tmpfs: bool = True  # without a workdir: the temporary one on /dev/shm (when there is room)
    #: agents per agent-host process (simulator.agenthost: real Agent instances sharing an interpreter);
    #: 0: one ``posfleet agent run`` process per unit
    units_per_host: int = 25
    progress: Callable[[str], None] | None = None


@dataclass
class UnitRig:
    unit: Unit
    data_dir: Path
    config: Path
    boot_id_file: Path
    log: Path
    proxy: LinkProxy
    devices: dict[str, Any]  # kind -> PtyDevice
    proc: Any = None  # subprocess.Popen, or an agenthost.HostedAgent
    host_index: int = -1  # which agent host runs it (-1: its own process)
    state: UnitState = field(default_factory=UnitState)
    ro_mounted: bool = False
    starts: int = 0
    unexpected_exits: int = 0


@dataclass
class Result:
    report: dict[str, Any]
    speed: float
    wall_s: float
    samples_stored: int
    workdir: Path
    incidents: list[str]
    server_url: str = ""
    token: str = ""


def unit_files(udir: Path, pki: Any, u: Unit, port: int, ports: Mapping[str, str], interval: int, link: str,
               clock: str) -> tuple[Path, Path, Path]:
    """One unit's data directory, boot id file and agent configuration, for either player (``link`` and
    ``clock``: extra TOML lines of those tables; ``ports``: modem/printer/idcard -> the port its driver opens).
    Returns (data, config, boot)."""
    tdir = pki.terminal(u.sn)
    boot = udir / "boot_id"
    boot.write_text(uuid.uuid4().hex + "\n")
    data = udir / "data"
    data.mkdir(exist_ok=True)
    cfg = udir / "agent.toml"
    per = "".join(
        f"[peripherals.{kind}]\nport = {_toml_value(ports[kind])}\nprofile = {_toml_value(prof)}\n"
        for kind, prof in (("modem", u.modem), ("printer", u.printer), ("idcard", u.idcard)))
    cfg.write_text(f"""sn = {_toml_value(u.sn)}
data_dir = {_toml_value(str(data))}
boot_id_file = {_toml_value(str(boot))}
[link]
host = "127.0.0.1"
port = {port}
ca_file = {_toml_value(f"{tdir}/ca.pem")}
cert_file = {_toml_value(f"{tdir}/terminal.pem")}
key_file = {_toml_value(f"{tdir}/terminal.key")}
probe_every_sample = true
{link}[sampling]
interval_s = {interval}
[clock]
{clock}[commands]
enabled = false
{per}""")
    return data, cfg, boot


class Player:
    """Plays one scenario; :meth:`run` returns the :class:`Result` (the server's report and run figures)."""

    def __init__(self, scenario: Scenario, raw: Mapping[str, Any], options: Options | None = None) -> None:
        self.sc = scenario
        self.raw = raw
        self.opt = options or Options()
        problems = scenario_problems(scenario)
        if problems:
            raise ScenarioError(problems)
        self.speed = float(self.opt.speed) if self.opt.speed else max_speed(scenario)
        if not 0 < self.speed <= SPEED_LIMIT:
            raise ValueError(f"speed: {self.speed} is not in (0, {SPEED_LIMIT:g}]")
        fastest = max_speed(scenario)
        if self.speed > fastest:
            log.warning("speed %g is above %g, the fastest faithful speed for this scenario on this machine: "
                        "expect no-data slots and late fault edges", self.speed, fastest)
        self.incidents: list[str] = []
        self.rigs: dict[str, UnitRig] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stack = contextlib.ExitStack()
        self.anchor = 0.0
        self.server: Any = None
        self.broker: Any = None
        self.hub: LinkHub | None = None
        self._http: Any = None
        if self.opt.server_url:
            if not self.opt.broker_url:
                raise ValueError("--server: the agents must reach that server's broker: give it with --broker and --ca-dir")
            if self.speed != 1.0:
                raise ValueError(f"--server: a running server keeps its own clock; the scenario can only be played in "
                                 f"real time (--speed 1), not at {self.speed:g}")
            if not os.environ.get("POSFLEET_TOKEN"):
                raise ValueError("--server: an admin token of that server is needed in POSFLEET_TOKEN")
        night = None if self.opt.server_url else self.opt.night_speed  # the running server's clock is real time
        self.schedule = speed_schedule(scenario, self.speed, night)
        self._clk: Any = None
        self._clk_anchor = 0.0
        self.hosts: list[Any] = []  # agenthost.HostProcess, by index

    # clock ------------------------------------------------------------------------------------
    def _clock(self) -> Any:
        from wire.clock import Clock

        if self._clk is None or self._clk_anchor != self.anchor:
            self._clk = Clock(self.speed, self.sc.start.timestamp(), self.anchor, self.schedule)
            self._clk_anchor = self.anchor
        return self._clk

    def real_at(self, t: datetime) -> float:
        return self.anchor + self._clock().real_at_sim(t.timestamp())

    def sim_now(self) -> float:
        return self._clock().sim_at_real(time.time() - self.anchor)

    def _play_seconds(self) -> float:
        from wire.clock import Clock

        c = Clock(self.speed, self.sc.start.timestamp(), 0.0, self.schedule)
        return c.real_at_sim(self.sc.end.timestamp())

    def speed_at(self, t: datetime) -> float:
        """The clock's speed at simulated instant ``t`` (the day speed unless the schedule says otherwise)."""
        v = self.speed
        for at, speed in self.schedule:
            if at <= t.timestamp():
                v = speed
        return v

    def _say(self, text: str) -> None:
        log.info("%s", text)
        if self.opt.progress:
            self.opt.progress(text)

    # setup ------------------------------------------------------------------------------------
    def _workdir(self) -> Path:
        if self.opt.workdir:
            self.opt.workdir.mkdir(parents=True, exist_ok=True)
            return self.opt.workdir
        # a temporary run lives in memory when it can: the agents' outboxes and storage probes and the
        # server's database fsync on every sample, which on a disk costs wall time the run does not have
        shm = Path("/dev/shm")
        mem = self.opt.tmpfs and shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2**30
        self._tmp = tempfile.TemporaryDirectory(prefix="posfleet-sim-", dir=str(shm) if mem else None)
        return Path(self._tmp.name)

    def _setup_lead(self) -> float:
        """Real seconds from now until the scenario starts: server start, registration, agents up."""
        cores = os.cpu_count() or 1
        # an agent process needs about a second of CPU to start; an Agent in a host less, but 100 of them still
        # took more than 0.15 s each to connect on a loaded machine (41 late at 0.15 s a unit)
        per_unit = 0.4 if self.opt.units_per_host > 0 else 1.0
        return 10.0 + len(self.sc.units) * per_unit / cores

    def _pki_and_broker(self, root: Path) -> tuple[Any, str, int]:
        from . import local

        if self.opt.broker_url:
            from urllib.parse import urlsplit

            from pki.ca import FleetCA

            u = urlsplit(self.opt.broker_url)
            if u.scheme != "mqtts" or not u.hostname:
                raise ValueError(f"--broker: expected mqtts://host:port, got {self.opt.broker_url!r}")
            if self.opt.ca_dir is None:
                raise ValueError("--broker: the fleet CA directory that signs its terminals is needed (--ca-dir)")
            pki = _ExistingPki(self.opt.ca_dir, FleetCA(self.opt.ca_dir, os.environ.get("POSFLEET_CA_PASSPHRASE", "")),
                               root / "terminals")
            return pki, u.hostname, u.port or 8883
        pki = local.Pki(root / "pki")
        self.broker = local.Broker(pki, root / "broker").start()
        self._stack.callback(self.broker.stop)
        return pki, "127.0.0.1", self.broker.port

    def _start_server(self, pki: Any, root: Path, clock: dict[str, Any]) -> None:
        from . import local

        if self.opt.server_url:
            self.server = RemoteServer(self.opt.server_url, os.environ.get("POSFLEET_TOKEN", ""))
            self._check_remote_server()
            return
        hours = self.raw.get("service_hours", "08:00-18:00")
        extra = ("[availability]\nrecount_debounce_s = 0.5\n"
                 f"service_hours = {_toml_value(hours)}\n"
                 "[alerts]\nenabled = false\n")
        self.server = local.Server(pki, self.broker, root / "server", clock=clock, extra=extra,
                                   storage=self.opt.storage_url or None)
        # the fleet's time zone is a top-level key: it must come before the first table
        self.server.config.write_text(f"timezone = {_toml_value(self.sc.timezone)}\n" + self.server.config.read_text())
        self.server.start()
        self._stack.callback(self.server.stop)

    def _check_remote_server(self) -> None:
        """A running server counts with its own clock and zone: both must be the scenario's (real time, speed 1)."""
        try:
            ctx = self._api("GET", "/dashboard/api/context")
        except (RunError, OSError, ValueError) as err:
            raise RunError(f"--server: cannot read the server's clock (GET /dashboard/api/context): {err}") from err
        now = ctx.get("now", 0.0)  # ISO 8601 since the API's conventions (issue 14); epoch seconds before
        skew = (datetime.fromisoformat(now).timestamp() if isinstance(now, str) else float(now)) - time.time()
        if float(ctx.get("clock_speed", 0.0)) != 1.0 or abs(skew) > 5.0:
            raise RunError(f"--server: that server's clock runs at speed {ctx.get('clock_speed')} and is {skew:+.0f} s "
                           "from real time; the simulator can share only a real-time clock with a running server")
        if ctx.get("timezone") != self.sc.timezone:
            raise RunError(f"--server: that server counts in {ctx.get('timezone')}, the scenario in {self.sc.timezone}")

    def _api(self, method: str, path: str, **kw: Any) -> Any:
        r = self.server.request(method, path, **kw)
        for _ in range(60):  # the API's per-token rate limit (registering 1,000 units): wait as it says
            if r.status_code != 429:
                break
            time.sleep(min(5.0, float(r.headers.get("Retry-After") or 1.0)))
            r = self.server.request(method, path, **kw)
        if r.status_code >= 400:
            raise RunError(f"{method} {path}: HTTP {r.status_code}: {r.text[:500]}")
        return r.json()

    def _register(self) -> None:
        """Institutions and units through the admin API, with the status each unit has at the start."""
        raw_inst = {i["code"]: i for i in self.raw.get("institutions", [])}
        for inst in self.sc.institutions:
            body: dict[str, Any] = {"name": inst.name, "county": inst.county}
            if inst.type:
                body["type"] = inst.type
            hours = raw_inst.get(inst.code, {}).get("service_hours")
            if hours is None and self.opt.server_url:  # that server's default hours need not be the scenario's
                hours = self.raw.get("service_hours", "08:00-18:00")
            if hours is not None:
                body["hours"] = hours
            self._api("PUT", f"/api/v1/institutions/{inst.code}", json=body)
        late = self.sim_now() >= self.sc.start.timestamp() - 60
        if len(self.sc.units) > 20 and not late:
            # one CSV import instead of a PUT a unit: the API allows a token 20 requests a second
            import csv
            import io

            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["sn", "model", "institution", "status"])
            w.writerows([u.sn, u.model, u.institution, status_at(u, self.sc.start)] for u in self.sc.units)
            ans = self._api("POST", "/api/v1/registry/units/import", content=buf.getvalue().encode(),
                            headers={"Content-Type": "text/csv"})
            if ans.get("errors") or ans.get("imported") != len(self.sc.units):
                raise RunError(f"registering the units (CSV import): {ans.get('errors')[:3] if ans.get('errors') else ans}")
            return
        for u in self.sc.units:
            st = status_at(u, self.sc.start)
            self._api("PUT", f"/api/v1/registry/units/{u.sn}",
                      json={"model": u.model, "institution": u.institution, "status": st})
            if late:  # registered after the period began: date the initial status back to its start
                self._api("POST", f"/api/v1/registry/units/{u.sn}/status",
                          json={"status": st, "at": self.sc.start.isoformat(), "note": "scenario start"})

    def _rig(self, root: Path, pki: Any, broker_host: str, broker_port: int, clock: dict[str, Any]) -> None:
        from .emulators import idcard, modem, printer

        assert self.hub is not None
        iv = self.sc.sample_interval_s
        slot_real = iv / self.speed
        reconnect_max = max(0.1, min(2.0, 0.3 * slot_real))
        for u in self.sc.units:
            udir = root / "units" / u.sn
            udir.mkdir(parents=True, exist_ok=True)
            devices = {
                "modem": modem.serve(u.modem, **_ident(u.sn)),
                "printer": printer.serve(u.printer),
                "idcard": idcard.serve(u.idcard),
            }
            for dev in devices.values():
                dev.lazy_tick = True  # _apply() pokes it whenever a fault switch flips
                self._stack.callback(dev.stop)
            proxy = self.hub.proxy(broker_host, broker_port, name=f"link-{u.sn}")
            link = f"reconnect_min_s = 0.05\nreconnect_max_s = {reconnect_max:.3f}\nbatch_interval_s = 0\n"
            clock_toml = (f"speed = {self.speed}\nstart = {_toml_value(clock['start'])}\nanchor = {clock['anchor']}\n"
                          f"schedule = {[[t, v] for t, v in self.schedule]}\n")
            data, cfg, boot = unit_files(udir, pki, u, proxy.port, {k: d.path for k, d in devices.items()}, iv, link,
                                         clock_toml)
            host = len(self.rigs) // self.opt.units_per_host if self.opt.units_per_host > 0 else -1
            self.rigs[u.sn] = UnitRig(u, data, cfg, boot, udir / "agent.log", proxy, devices, host_index=host)

    # agents -------------------------------------------------------------------------------------
    def _launch(self, rig: UnitRig, new_boot: bool = False) -> None:
        from .local import ENV

        if new_boot:
            rig.boot_id_file.write_text(uuid.uuid4().hex + "\n")
        if rig.host_index >= 0:
            from .agenthost import HostProcess

            while len(self.hosts) <= rig.host_index:
                self.hosts.append(None)
            host = self.hosts[rig.host_index]
            if host is None or not host.alive():
                if host is not None:
                    self.incidents.append(f"agent host {host.pid} exited with code {host.proc.returncode}; "
                                          f"started again")
                    host.close()
                log_path = rig.data_dir.parent.parent / f"agenthost-{rig.host_index}.log"
                host = self.hosts[rig.host_index] = HostProcess(log_path, env=ENV)
            rig.proc = host.start(rig.unit.sn, rig.config)
            rig.starts += 1
            return
        with open(rig.log, "ab") as out:
            rig.proc = subprocess.Popen(
                [sys.executable, "-m", "posfleet", "agent", "run", "--config", str(rig.config)],
                stdout=out, stderr=subprocess.STDOUT, env=ENV)
        rig.starts += 1

    def _signal(self, rig: UnitRig, sig: int) -> None:
        if rig.proc is not None and rig.proc.poll() is None:
            rig.proc.send_signal(sig)

    def _reap(self, rig: UnitRig, timeout: float = 10.0) -> None:
        if rig.proc is None:
            return
        try:
            rig.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rig.proc.kill()
            try:
                rig.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.incidents.append(f"{rig.unit.sn}: agent did not halt within {timeout:g} s either")
            self.incidents.append(f"{rig.unit.sn}: agent did not stop within {timeout:g} s of SIGTERM; killed")

    def _watch(self) -> None:
        """An agent that exits by itself is a finding: record it and start it again."""
        for rig in self.rigs.values():
            if rig.state.running and rig.proc is not None and rig.proc.poll() is not None:
                rig.unexpected_exits += 1
                tail = rig.log.read_text(errors="replace")[-400:] if rig.log.exists() else ""
                self.incidents.append(f"{rig.unit.sn}: agent exited by itself with code {rig.proc.returncode}: {tail!r}")
                self._launch(rig)
            dev = rig.devices.get("modem")
            if dev is not None:
                dev.emulator.received.clear()  # a per-command log kept for tests; unbounded over a week

    # applying states ------------------------------------------------------------------------------
    def _apply(self, rig: UnitRig, new: UnitState, when: datetime, relaunch: bool = True) -> None:
        old = rig.state
        if old.running and not new.running:
            self._signal(rig, new.stop_signal)
        for kind, switches in PERIPHERAL_FAULTS.items():
            dev = rig.devices[kind]
            want = new.faults & switches
            have = old.faults & switches
            if want != have:
                dev.emulator.faults.difference_update(have - want)
                dev.emulator.faults.update(want)
                dev.poke()
        if old.link_up != new.link_up:
            (rig.proxy.restore if new.link_up else rig.proxy.cut)()
        if old.rtt_ms != new.rtt_ms:
            rig.proxy.set_rtt(new.rtt_ms)
        if old.storage_ro != new.storage_ro:
            self._readonly(rig, new.storage_ro)
        if old.status != new.status:
            self._api("POST", f"/api/v1/registry/units/{rig.unit.sn}/status",
                      json={"status": new.status, "at": when.isoformat(), "note": "scenario"})
        if not old.running and new.running and relaunch:
            self._reap(rig)
            self._launch(rig, new_boot=old.stop_signal == signal.SIGKILL)
        rig.state = new

    def _readonly(self, rig: UnitRig, on: bool) -> None:
        """Lay a read-only bind mount of the data directory over itself (or lift it).

        The read-only mount is made on a staging path first and then bound over the data directory in one
        step: remounting a bind in place fails with EBUSY as soon as the agent opens a file through it."""
        d = str(rig.data_dir)
        stage = rig.data_dir.parent / "ro-stage"
        if on:
            stage.mkdir(exist_ok=True)
            steps = (["mount", "--bind", d, str(stage)], ["mount", "-o", "remount,bind,ro", str(stage)],
                     ["mount", "--bind", str(stage), d])
            try:
                for cmd in steps:
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    if r.returncode != 0:
                        raise RunError(f"{rig.unit.sn}: storage_readonly: {' '.join(cmd)} failed: {r.stderr.strip()}")
                    if cmd[-1] == d:
                        rig.ro_mounted = True
            finally:
                subprocess.run(["umount", "-l", str(stage)], capture_output=True)
        elif rig.ro_mounted:
            r = subprocess.run(["umount", "-l", d], capture_output=True, text=True)
            if r.returncode != 0:
                raise RunError(f"{rig.unit.sn}: storage_readonly: umount {d} failed: {r.stderr.strip()}")
            rig.ro_mounted = False

    def _sleep_until(self, real: float) -> None:
        while True:
            left = real - time.time()
            if left <= 0:
                return
            time.sleep(min(left, 1.0))
            self._watch()

    def _play(self) -> None:
        plan = collapse_nights(timeline(self.sc), self.schedule)
        # agents that come back are launched a little early; split each step into "stop/switch" and "start"
        starts: list[tuple[float, datetime, str, UnitState]] = []
        steps = 0
        for t, changes in plan:
            if t == self.sc.start:
                continue  # applied before the agents were launched
            due = self.real_at(t)
            to_start = {sn: st for sn, st in changes.items() if st.running and not self.rigs[sn].state.running}
            early = max(0.0, due - RESTART_LEAD_S)
            for sn, st in to_start.items():
                starts.append((early, t, sn, st))
            self._sleep_until(min([due] + [s[0] for s in starts]))
            self._run_starts(starts, time.time())
            self._sleep_until(due)
            self._run_starts(starts, time.time())
            lag = time.time() - due
            if lag > self.sc.sample_interval_s / self.speed_at(t):
                self.incidents.append(f"{t.isoformat()}: changes applied {lag:.2f} s late (more than a slot)")
            for sn, st in changes.items():
                self._apply(self.rigs[sn], st, t)  # an agent launched early is already running: no relaunch
            steps += 1
            if steps % 50 == 0:
                self._say(f"at {t.isoformat()} ({steps}/{len(plan)} changes)")
        self._sleep_until(self.real_at(self.sc.end))
        self._run_starts(starts, float("inf"))

    def _run_starts(self, starts: list[tuple[float, datetime, str, UnitState]], now: float) -> None:
        for item in [s for s in starts if s[0] <= now]:
            starts.remove(item)
            _early, _t, sn, st = item
            rig = self.rigs[sn]
            if rig.state.running:
                continue
            self._reap(rig)
            self._launch(rig, new_boot=rig.state.stop_signal == signal.SIGKILL)
            rig.state = replace(rig.state, running=True)

    # the end -----------------------------------------------------------------------------------------
    def _pending(self, rig: UnitRig, end_ts: int) -> int:
        db = rig.data_dir / "outbox.sqlite"
        if not db.exists():
            return 0
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                return int(con.execute("SELECT count(*) FROM outbox WHERE kind = 's' AND ts < ?",
                                       (end_ts,)).fetchone()[0])
            finally:
                con.close()
        except sqlite3.Error as err:
            log.debug("%s: outbox not readable yet: %s", rig.unit.sn, err)
            return -1

    def _finish(self) -> None:
        """Lift every fault, bring every agent back, wait until every sample of the period has left them."""
        clear = UnitState()
        for rig in self.rigs.values():
            self._apply(rig, replace(clear, status=rig.state.status), self.sc.end)
        end_ts = int(self.sc.end.timestamp())
        deadline = time.monotonic() + self.opt.drain_timeout_s
        while True:
            left = {sn: self._pending(r, end_ts) for sn, r in self.rigs.items()}
            left = {sn: n for sn, n in left.items() if n}
            if not left:
                break
            if time.monotonic() > deadline:
                self.incidents.append(f"outboxes not drained after {self.opt.drain_timeout_s:g} s: {left}")
                break
            time.sleep(0.5)
            self._watch()
        for rig in self.rigs.values():
            rig.state = UnitState(running=False)
            self._signal(rig, signal.SIGTERM)
        for rig in self.rigs.values():
            self._reap(rig)

    def _counted(self, a: datetime, b: datetime) -> dict[str, Any]:
        """Wait until the server has stored and counted everything; return its answers."""
        # the server calls an hour complete once its clock has passed it: in real time (--server) that can be
        # most of an hour after the scenario's end
        to_end = max(0.0, self.real_at(b) - time.time())
        if to_end > 1.0:
            self._say(f"waiting {to_end:.0f} s for the server's clock to pass {b.isoformat()}, the report's end")
        return self._await_counted(a, b, to_end, 1.0)

    def _await_counted(self, a: datetime, b: datetime, wait_s: float, poll: float) -> dict[str, Any]:
        """Poll until ingest is quiet, nothing is pending or being recounted and the answer for ``[a, b)`` says
        complete (at most ``wait_s`` plus the count timeout); the unit and fleet answers."""
        deadline = time.monotonic() + wait_s + self.opt.count_timeout_s
        last_stored = -1
        while True:
            stored = self.server.get("/healthz").json()["ingest"]["samples_stored"]
            status = self._api("GET", "/api/v1/availability/status")
            unit = self._api("GET", "/api/v1/availability",
                             params={"from": a.isoformat(), "to": b.isoformat(), "group_by": "unit", "limit": 100000})
            quiet = stored == last_stored or bool(self.opt.server_url)  # a running server may ingest other fleets
            if quiet and not status.get("pending_unit_hours") and unit.get("complete"):
                fleet = self._api("GET", "/api/v1/availability",
                                  params={"from": a.isoformat(), "to": b.isoformat(), "group_by": "fleet"})
                return {"unit": unit, "fleet": fleet, "samples_stored": stored}
            if time.monotonic() > deadline:
                raise RunError(f"the server did not finish counting within {self.opt.count_timeout_s:g} s "
                               f"(stored {stored}, status {status}, complete {unit.get('complete')})")
            last_stored = stored
            time.sleep(poll)

    def _period(self, a: datetime, b: datetime) -> dict[str, str]:
        """The report's ``period``: the whole hours reported, the time zone and the scenario's own period."""
        return {"from": a.isoformat(), "to": b.isoformat(), "timezone": self.sc.timezone,
                "scenario_from": self.sc.start.isoformat(), "scenario_to": self.sc.end.isoformat()}

    def slots(self, sn: str) -> list[dict[str, Any]]:
        """The server's minute drill-down for one unit over the scenario period (after :meth:`run`)."""
        out: list[dict[str, Any]] = []
        a, b = self.sc.start.astimezone(self.sc.tz), self.sc.end.astimezone(self.sc.tz)
        day = a.date()
        while day <= b.date():
            ans = self._api("GET", f"/api/v1/units/{sn}/slots", params={"date": day.isoformat()})
            for s in ans["slots"]:
                ts = datetime.fromisoformat(s["start"])
                if a <= ts < b:
                    out.append(s)
            day += timedelta(days=1)
        return out

    # the whole run ------------------------------------------------------------------------------------
    def __enter__(self) -> Player:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for host in self.hosts:  # a power cut for every agent it runs, as SIGKILL is for a process
            if host is not None and host.alive():
                host.proc.kill()
                host.proc.wait()
        for host in self.hosts:
            if host is not None:
                host.close()
        self.hosts = []
        for rig in self.rigs.values():
            if rig.host_index < 0:
                self._signal(rig, signal.SIGKILL)
                if rig.proc is not None:
                    rig.proc.wait()
            if rig.ro_mounted:
                subprocess.run(["umount", "-l", str(rig.data_dir)], capture_output=True)
                rig.ro_mounted = False
        if self.hub is not None:
            self.hub.stop()
            self.hub = None
        self._stack.close()
        if self._tmp is not None and not self.opt.keep_workdir:
            self._tmp.cleanup()
            self._tmp = None

    def run(self) -> Result:
        t0 = time.time()
        root = self._workdir()
        self._say(f"playing {self.sc.name!r}: {len(self.sc.units)} units, {len(self.sc.events)} events, "
                  f"{(self.sc.end - self.sc.start).total_seconds() / 86400:g} days at speed {self.speed:g}"
                  + (f" ({self.opt.night_speed:g} outside service hours)" if self.schedule else "")
                  + f" (about {self._play_seconds():.0f} s), in {root}")
        if self.opt.server_url:  # real time: the scenario starts when the clock on the wall says so
            self.anchor = self.sc.start.timestamp()
            if self.anchor < time.time() + self._setup_lead():
                raise RunError(f"--server: the scenario starts at {self.sc.start.isoformat()}; with a running server "
                               f"it is played in real time and must start at least {self._setup_lead():.0f} s from now")
        else:
            self.anchor = time.time() + self._setup_lead()
        clock = {"speed": self.speed, "start": self.sc.start.isoformat(), "anchor": self.anchor,
                 "schedule": self.schedule}
        pki, bhost, bport = self._pki_and_broker(root)
        self._start_server(pki, root, clock)
        self._register()
        self.hub = LinkHub().start()
        self._rig(root, pki, bhost, bport, clock)
        first = dict(timeline(self.sc)[0][1])  # the state at the start, for every unit
        for sn, rig in self.rigs.items():
            st = first[sn]
            rig.state = UnitState(running=False, status=st.status)  # registered with this status already
            self._apply(rig, replace(st, running=False), self.sc.start, relaunch=False)
            if st.running:
                self._launch(rig)
            rig.state = st
        while time.time() < self.anchor and any(r.state.running and not r.proxy.connections for r in self.rigs.values()):
            time.sleep(0.1)
        waiting = sorted(sn for sn, r in self.rigs.items() if r.state.running and not r.proxy.connections)
        if waiting:
            self.incidents.append(f"{len(waiting)} agent(s) not connected when the scenario started "
                                  f"(their first slots are lost): {', '.join(waiting[:10])}")
        late = time.time() - self.anchor
        self._say(f"{len(self.rigs)} agents launched; scenario starts in {max(0.0, -late):.1f} s")
        self._play()
        self._say("scenario over: lifting faults and draining every agent's outbox")
        self._finish()
        a, b = report_period(self.sc)
        answers = self._counted(a, b)
        check, off = oracle_check(self.sc, answers["unit"].get("items", []), speed=self.speed)
        self.incidents.extend(off)
        wall = time.time() - t0
        report = {
            "scenario": self.sc.name,
            "period": self._period(a, b),
            "run": {"speed": self.speed, "night_speed": self.opt.night_speed if self.schedule else None,
                    "wall_s": round(wall, 1), "units": len(self.sc.units),
                    "samples_stored": answers["samples_stored"],
                    "agent_starts": sum(r.starts for r in self.rigs.values()),
                    "link_cuts": sum(r.proxy.cuts for r in self.rigs.values()),
                    "incidents": self.incidents},
            "availability": {"unit": answers["unit"], "fleet": answers["fleet"]},
            "oracle_check": check,
        }
        self._say(f"done in {wall:.0f} s; {answers['samples_stored']} samples counted")
        return Result(report, self.speed, wall, answers["samples_stored"], root, list(self.incidents),
                      self.server.url, self.server.token("admin"))


class RemoteServer:
    """A fleet server that is already running (``--server URL``), with the calls the player makes."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._token = token

    def token(self, role: str = "admin") -> str:
        return self._token

    def get(self, path: str, role: str = "admin", **params: Any) -> Any:
        import httpx

        return httpx.get(f"{self.url}{path}", params=params, headers={"Authorization": f"Bearer {self._token}"},
                         timeout=10)

    def request(self, method: str, path: str, role: str = "admin", **kw: Any) -> Any:
        import httpx

        return httpx.request(method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self._token}"},
                             timeout=10, **kw)

    def stop(self) -> None:
        pass


class _ExistingPki:
    """Terminal certificates signed by an existing fleet CA (for ``--broker``)."""

    def __init__(self, ca_dir: Path, ca: Any, out: Path) -> None:
        self.dir = ca_dir
        self.ca = ca
        self.out = out
        self._done: dict[str, Path] = {}

    def terminal(self, sn: str) -> Path:
        import shutil

        from agent.enroll import make_key_and_csr

        if sn not in self._done:
            d = self.out / sn
            _key, csr = make_key_and_csr(sn, d)
            (d / "terminal.pem").write_bytes(self.ca.sign_csr(csr.read_bytes()))
            shutil.copy(self.dir / "ca.pem", d / "ca.pem")
            self._done[sn] = d
        return self._done[sn]


def _toml_value(v: Any) -> str:
    """A TOML literal for a string or a table of strings (json strings are valid TOML basic strings)."""
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {json.dumps(str(x))}" for k, x in v.items()) + " }"
    return json.dumps(v, ensure_ascii=False)


def load(source: str | Path | Mapping[str, Any]) -> tuple[Scenario, dict[str, Any]]:
    """The validated scenario and its decoded JSON (the player needs the raw service hours)."""
    scenario = load_scenario(source)
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        raw = json.loads(Path(source).read_text(encoding="utf-8"))
    return scenario, raw


def run_scenario(source: str | Path | Mapping[str, Any], options: Options | None = None) -> dict[str, Any]:
    """Play a scenario and return the report (the server's availability answers and run figures)."""
    scenario, raw = load(source)
    with Player(scenario, raw, options) as player:
        return player.run().report


__all__ = ["FAULTS", "Mismatch", "Options", "Player", "Result", "RunError", "UnitState", "boundaries", "compare_slots", "load", "max_speed", "oracle_check",
           "report_period", "run_scenario", "scenario_problems", "timeline", "unit_state", "collapse_nights",
           "speed_schedule"]
