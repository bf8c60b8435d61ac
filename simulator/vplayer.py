"""The virtual-time player: ``posfleet sim run`` by default (docs/simulator.md, decision 025).

The real broker and the real fleet server run as in the real-time player (:class:`simulator.run.Player`, whose
set-up, registration and report this reuses); the agents run in worker processes (:mod:`simulator.vworker`),
one per core, each with a share of the units. The player owns the fleet's virtual time: it writes it into a
small shared file the server reads (``[clock] file``, ``wire.clock.FileClock``) and moves it from one event to
the next, each time only once every worker has settled everything in flight (a barrier per step). Nothing in a
run depends on how fast the machine is: the same scenario gives the same answer slot by slot, whatever else
the machine does.

Fault edges are applied half a slot before their boundary (the sample of the boundary's slot sees the new state,
the one before does not); status changes are posted dated at their instant. Nights (where no institution's
service hours count, :func:`simulator.run.speed_schedule`) are jumped: the changes inside are merged and applied
at the night's end, where each agent takes one sample (dated at the first slot it missed, counted by nobody) and
samples on from there.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import time
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .run import (
    Options,
    Player,
    Result,
    RunError,
    UnitRig,
    UnitState,
    _ident,
    collapse_nights,
    oracle_check,
    report_period,
    speed_schedule,
    timeline,
    unit_files,
)
from .scenario import Scenario

log = logging.getLogger(__name__)

#: virtual seconds before the scenario's start at which the agents are started (they connect, say hello and
#: have the server's time before the first slot)
LEAD_SLOTS = 2
#: the speed the server's pollers scale their real waits by (the roll-up loop wakes every 0.5-1 s real)
SERVER_SPEED = 3600.0
KINDS = ("modem", "printer", "idcard")
#: virtual seconds played per step: every unit runs what it has due in the window on its own clock; the server
#: reads the window's middle, so an acknowledgement's time is within half of it from its unit's clock
WINDOW_S = 1.0
#: virtual seconds the outboxes may take to drain after the end before the run reports it
DRAIN_VIRTUAL_S = 6 * 3600


def _state_dict(st: UnitState) -> dict[str, Any]:
    d = asdict(st)
    d["faults"] = sorted(st.faults)
    d["stop_signal"] = int(st.stop_signal)
    return d


class VirtualPlayer(Player):
    """Plays one scenario in virtual time with ``workers`` worker processes (default: one per core)."""

    def __init__(self, scenario: Scenario, raw: Any, options: Options | None = None, workers: int | None = None,
                 worker_nice: int = 0, worker_cpus: frozenset[int] | None = None) -> None:
        opt = options or Options()
        if opt.server_url or opt.broker_url:
            raise ValueError("--server/--broker: a running server keeps its own clock; play it in real time "
                             "(--real-time --speed 1)")
        super().__init__(scenario, raw, replace(opt, speed=1.0, night_speed=None))
        self.opt = opt
        self.workers_n = max(1, workers or os.cpu_count() or 1)
        self.workers_n = min(self.workers_n, len(scenario.units))
        self.worker_nice, self.worker_cpus = worker_nice, worker_cpus  # the workers' priority and cores
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        self._owner: dict[str, int] = {}
        self._clockfile: Any = None
        iv = scenario.sample_interval_s
        sched = speed_schedule(scenario, 1.0, 2.0)
        self.nights = [(sched[i][0], sched[i + 1][0]) for i in range(0, len(sched) - 1, 2)]
        self._sched = sched
        self.iv = iv
        self.advances = 0
        self.jumps = 0

    # the shared clock --------------------------------------------------------------------------------
    def sim_now(self) -> float:
        return self._clockfile.get() if self._clockfile is not None else self.sc.start.timestamp() - LEAD_SLOTS * self.iv

    def _set_time(self, t: float) -> None:
        self._clockfile.set(t)

    # set-up ---------------------------------------------------------------------------------------------
    def _vrig(self, root: Path, pki: Any, broker_port: int) -> list[Any]:
        from .vworker import UnitSpec

        specs = []
        for u in self.sc.units:
            udir = root / "units" / u.sn
            udir.mkdir(parents=True, exist_ok=True)
            # reconnect_max_s 20: a link restored half a slot before its boundary is up again for that slot's
            # sample (the first retry is uniform in [5, 10] s, later ones at most 20 s apart). Batches as in the
            # field (every 10 minutes, at once on a change of state): the server counts a slot from the sample,
            # whenever it arrives, and a tenth of the messages costs a tenth of the commits and acknowledgements.
            # The agent's clock is given by the worker (a VirtualClock); NTP's flag is the host's: not trusted
            data, cfg, boot = unit_files(udir, pki, u, broker_port, {k: f"emu://{u.sn}-{k}" for k in KINDS}, self.iv,
                                         "reconnect_min_s = 5\nreconnect_max_s = 20\n", "trust_ntp = false\n")
            self.rigs[u.sn] = UnitRig(u, data, cfg, boot, udir / "agent.log", None, {})  # type: ignore[arg-type]
            specs.append(UnitSpec(u.sn, str(cfg), str(boot), u.modem, u.printer, u.idcard, _ident(u.sn)))
        return specs

    def _start_workers(self, root: Path, specs: list[Any], broker_port: int) -> None:
        from .vworker import serve

        ctx = multiprocessing.get_context("fork")
        shares: list[list[Any]] = [[] for _ in range(self.workers_n)]
        for i, spec in enumerate(specs):
            shares[i % self.workers_n].append(spec)
            self._owner[spec.sn] = i % self.workers_n
        for i, share in enumerate(shares):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=serve, args=(child, share, broker_port, self.iv, str(root / f"worker-{i}.log"),
                                                self.worker_nice, self.worker_cpus),
                            name=f"sim-worker-{i}", daemon=True)
            p.start()
            child.close()
            self._procs.append(p)
            self._conns.append(parent)
        for i, _c in enumerate(self._conns):
            msg = self._recv(i)
            if "ready" not in msg:
                raise RunError(f"worker {i} did not start: {msg}")

    def _recv(self, i: int) -> Any:
        c = self._conns[i]
        while not c.poll(5.0):
            if not self._procs[i].is_alive():
                raise RunError(f"worker {i} exited with code {self._procs[i].exitcode} (its log: worker-{i}.log)")
        msg = c.recv()
        if isinstance(msg, dict) and "error" in msg:
            raise RunError(f"worker {i} failed:\n{msg['error']}")
        return msg

    def _all(self, op: str, per_worker: list[dict[str, Any]] | None = None, **kw: Any) -> list[Any]:
        for i, c in enumerate(self._conns):
            c.send({"op": op, **kw, **(per_worker[i] if per_worker else {})})
        return [self._recv(i) for i in range(len(self._conns))]

    # playing --------------------------------------------------------------------------------------------
    def _advance(self, t: float, changes: dict[str, UnitState], jumped: bool = False) -> float:
        """Every worker to time ``t`` with the units' new states; the earliest next event."""
        for sn, st in changes.items():
            rig = self.rigs[sn]
            if rig.state.storage_ro != st.storage_ro:
                self._readonly(rig, st.storage_ro)
            if rig.state.status != st.status and self._status_at.get(sn):
                self._api("POST", f"/api/v1/registry/units/{sn}/status",
                          json={"status": st.status, "at": self._status_at[sn].isoformat(), "note": "scenario"})
            rig.state = st
        self._set_time(t + WINDOW_S / 2)
        per = [{"changes": {}} for _ in self._conns]
        for sn, st in changes.items():
            per[self._owner[sn]]["changes"][sn] = _state_dict(st)
        self.advances += 1
        answers = self._all("advance", per, t=t, jumped=jumped, window=WINDOW_S)
        return min(a["next"] for a in answers)

    def _night_end(self, t: float) -> float | None:
        for a, b in self.nights:
            if a < t < b:
                return b
        return None

    def _plan(self) -> list[tuple[float, dict[str, UnitState], datetime]]:
        """(when to apply, changes, the boundary) after the start; half a slot early except at a night's end."""
        night_ends = {b for _a, b in self.nights}
        out = []
        for t, changes in collapse_nights(timeline(self.sc), self._sched):
            if t == self.sc.start:
                continue
            ts = t.timestamp()
            at = ts if ts in night_ends else ts - self.iv / 2
            out.append((at, changes, t))
        return out

    def _play_virtual(self) -> None:
        start = self.sc.start.timestamp()
        end = self.sc.end.timestamp()
        t = start - LEAD_SLOTS * self.iv
        first = dict(timeline(self.sc)[0][1])
        for sn, st in first.items():
            self.rigs[sn].state = UnitState(running=False, status=st.status)
        self._status_at: dict[str, datetime] = {}
        nxt = self._advance(t, first)
        plan = self._plan()
        i = 0
        trimmed = t
        while True:
            change_at = plan[i][0] if i < len(plan) else float("inf")
            t = min(math.floor(nxt / WINDOW_S) * WINDOW_S, change_at)
            if t >= end and change_at >= end:
                break
            jumped = False
            b = self._night_end(t)
            if b is not None and change_at >= b:
                t = min(b, change_at)
                jumped = True
                self.jumps += 1
            changes: dict[str, UnitState] = {}
            while i < len(plan) and plan[i][0] <= t:
                for sn, st in plan[i][1].items():
                    changes[sn] = st
                    self._status_at[sn] = plan[i][2]
                i += 1
            nxt = self._advance(t, changes, jumped)
            if t - trimmed > 3600:
                self._all("trim")
                trimmed = t
                self._say(f"at {datetime.fromtimestamp(t, self.sc.tz).isoformat()}")
        # the end: every fault lifted, every agent back, until no sample of the period is left in an outbox
        clear = {sn: UnitState(status=r.state.status) for sn, r in self.rigs.items()}
        nxt = self._advance(end, clear)
        deadline = end + DRAIN_VIRTUAL_S
        checked = end
        while True:
            if nxt - checked >= self.iv or nxt > deadline:
                left: dict[str, int] = {}
                for part in self._all("pending", end=int(end)):
                    left.update(part)
                if not left:
                    break
                if nxt > deadline:
                    self.incidents.append(f"outboxes not drained {DRAIN_VIRTUAL_S} virtual s after the end: {left}")
                    break
                checked = nxt
            nxt = self._advance(math.floor(nxt / WINDOW_S) * WINDOW_S, {})

    def _counted_virtual(self, a: datetime, b: datetime) -> dict[str, Any]:
        # every hour a sample fell in is over (the agents sampled on while their outboxes drained after the
        # end): the server closes them all, and nothing is left pending
        last = max(b.timestamp(), self.sim_now())
        self._set_time(last - last % 3600 + 3600 + self.iv)
        return self._await_counted(a, b, 0.0, 0.5)

    def close(self) -> None:
        for i, c in enumerate(self._conns):
            try:
                c.send({"op": "stop"})
                if c.poll(30):
                    c.recv()
            except (OSError, EOFError):
                pass
            self._procs[i].join(10)
            if self._procs[i].is_alive():
                os.kill(self._procs[i].pid, signal.SIGKILL)
                self._procs[i].join(5)
        self._conns, self._procs = [], []
        super().close()

    def run(self) -> Result:
        from wire.clock import FileClockWriter

        t0 = time.time()
        root = self._workdir()
        self._say(f"playing {self.sc.name!r} in virtual time: {len(self.sc.units)} units, {len(self.sc.events)} "
                  f"events, {(self.sc.end - self.sc.start).total_seconds() / 86400:g} days, {self.workers_n} "
                  f"worker(s), in {root}")
        self._clockfile = FileClockWriter(str(root / "clock"), self.sc.start.timestamp() - LEAD_SLOTS * self.iv)
        pki, _bhost, bport = self._pki_and_broker(root)
        self._start_server(pki, root, {"speed": SERVER_SPEED, "start": "", "anchor": 0,
                                       "file": str(root / "clock")})
        self._register()
        specs = self._vrig(root, pki, bport)
        self._start_workers(root, specs, bport)
        t_play = time.time()
        self._play_virtual()
        played_s = time.time() - t_play
        stops = self._all("stop")
        self._conns_stopped = True
        for _i, p in enumerate(self._procs):
            p.join(30)
        self._conns, self._procs = [], []
        figures = {
            "late_wakes": sum(f["late_wakes"] for f in stops),
            "max_offset_s": round(max(f["max_offset_s"] for f in stops), 3),
            "max_ack_skew_s": round(max(f["max_ack_skew_s"] for f in stops), 3),
            "ack_timeouts": sum(f["ack_timeouts"] for f in stops),
            "redated_samples": sum(f["redated_samples"] for f in stops),
            "agent_starts": sum(f["starts"] for f in stops),
            "link_cuts": sum(f["link_cuts"] for f in stops),
            "network_rounds": sum(f["rounds"] for f in stops),
            "workers_wait_s": round(sum(f["wait_s"] for f in stops), 1),
            "workers_cpu_s": round(sum(f["cpu_s"] for f in stops), 1),
            "advances": self.advances, "night_jumps": self.jumps,
        }
        parts: dict[str, float] = {}
        for f in stops:
            for k, v in f.get("parts", {}).items():
                parts[k] = parts.get(k, 0.0) + v
        if parts:
            figures["workers_cpu_s_by_part"] = {k: round(v, 2) for k, v in parts.items()}
        for f in stops:
            self.incidents.extend(f["incidents"])
        if figures["max_offset_s"] >= 1.0:
            self.incidents.append(f"an agent's clock offset reached {figures['max_offset_s']} s (units "
                                  f"{[u for f in stops for u in f['units_offset_over_1s']]})")
        if figures["max_ack_skew_s"] >= 1.0:
            # an acknowledgement read windows after the server sent it: time moved on while an answer was in
            # flight, whether or not its stale time moved the agent's clock
            self.incidents.append(f"an acknowledgement's server time was {figures['max_ack_skew_s']} s off its "
                                  f"agent's clock when read (units "
                                  f"{[u for f in stops for u in f['units_ack_skew_over_1s']]})")
        if figures["late_wakes"]:
            self.incidents.append(f"{figures['late_wakes']} sample(s) taken 1 s or more after their slot (units "
                                  f"{[u for f in stops for u in f['units_late']]})")
        if figures["ack_timeouts"]:
            self.incidents.append(f"{figures['ack_timeouts']} acknowledgement timeout(s)")
        if figures["redated_samples"]:
            self.incidents.append(f"{figures['redated_samples']} sample(s) re-dated after they were taken (units "
                                  f"{[u for f in stops for u in f['units_redated']]})")
        a, b = report_period(self.sc)
        answers = self._counted_virtual(a, b)
        # the answer read twice: the second read must equal the first (nothing was still being counted)
        time.sleep(1.0)
        again = self._api("GET", "/api/v1/availability",
                          params={"from": a.isoformat(), "to": b.isoformat(), "group_by": "unit", "limit": 100000})
        same = _figures(again) == _figures(answers["unit"])
        if not same:
            self.incidents.append("the availability answer read twice at the end differed")
        check, off = oracle_check(self.sc, answers["unit"].get("items", []))
        self.incidents.extend(off)
        wall = time.time() - t0
        report = {
            "scenario": self.sc.name,
            "period": self._period(a, b),
            "run": {"mode": "virtual", "workers": self.workers_n, "wall_s": round(wall, 1),
                    "play_s": round(played_s, 1), "units": len(self.sc.units),
                    "samples_stored": answers["samples_stored"], **figures, "answer_read_twice_equal": same,
                    "incidents": self.incidents},
            "availability": {"unit": answers["unit"], "fleet": answers["fleet"]},
            "oracle_check": check,
        }
        self._say(f"done in {wall:.0f} s ({played_s:.0f} s playing); {answers['samples_stored']} samples counted")
        return Result(report, 0.0, wall, answers["samples_stored"], root, list(self.incidents),
                      self.server.url, self.server.token("admin"))


def unexplained(scenario: Scenario, mismatches: list[Any], latency_threshold_ms: int = 400) -> list[Any]:
    """The slot mismatches (``simulator.run.compare_slots``) of a virtual-time run that are not one of the two agent
    behaviours the oracle does not model (docs/simulator.md): the slot at which a ``high_latency`` fault above the
    threshold ends carries the round trip of the batch the agent sent after the previous slot's sample, still
    under the latency (network not ok where the oracle says ok); and the slot at which a ``storage_readonly`` fault
    ends, for an agent that could not open its outbox, still reports the outbox's error (not intact where the
    oracle says intact). Both are at a fault's edge. A virtual-time run must have no other difference."""
    out = []
    for m in mismatches:
        ts = datetime.fromisoformat(m.slot)
        events = scenario.events_for(m.sn)
        named = (m.oracle[0] == m.server[0] and m.oracle[1] == "ok" and m.server[1] == "not_ok"
                 and any(e.fault == "high_latency" and (e.rtt_ms or 0) > latency_threshold_ms and e.end == ts
                         for e in events))
        # the second: an agent started while its disk was read-only (its outbox could not be opened) reports the
        # outbox's error once more in the first sample after the disk takes writes again (the error is cleared by
        # the first write that works, which comes after that sample's checks)
        named = named or (m.oracle == ("intact", m.server[1]) and m.server[0] == "not_intact"
                          and any(e.fault == "storage_readonly" and e.end == ts for e in events))
        if not named:
            out.append(m)
    return out


def _figures(answer: dict[str, Any]) -> Any:
    return [{k: v for k, v in i.items()} for i in answer.get("items", [])], answer.get("complete")


__all__ = ["VirtualPlayer", "unexplained"]
