"""Virtual-time simulator benchmark (issue 16): wall time, exactness and CPU per sample of ``posfleet sim run``.

Targets (docs/performance-sim.md): 100 units x 7 days (service 08:00-18:00, a sample a minute, faults of every
kind) in <= 10 minutes on this 2-core machine, exact against the oracle; 1,000 units x 1 day in <= 10 minutes.

It builds the fleet with :func:`simulator.randomscen.fleet_week` (seeded), plays it with the virtual-time player
(:class:`simulator.vplayer.VirtualPlayer`, one worker per core unless ``--workers``), and prints:

* wall time (whole run, and the playing part), samples stored, the player's self-checks;
* exactness: every unit's minute drill-down against the oracle (``simulator.run.compare_slots``), the mismatches
  not explained by the one named agent behaviour (``simulator.vplayer.unexplained``) must be 0;
* CPU seconds per process (workers, server, Mosquitto, the coordinator) over the run, per stored sample;
* with ``--profile``: the workers' CPU by part (drivers + emulators, the rest of the agent's sample, outbox,
  MQTT/TLS, the worker's own loop) from a cProfile of each worker, as fractions applied to the measured CPU;
* resident memory of the workers at the end of play, per unit; the load average (the box may be shared).

    .venv/bin/python -m benchmarks.bench_sim_virtual --units 100 --days 7
    .venv/bin/python -m benchmarks.bench_sim_virtual --units 1000 --days 1
    .venv/bin/python -m benchmarks.bench_sim_virtual --units 100 --days 1 --profile
    .venv/bin/python -m benchmarks.bench_sim_virtual --scenario simulator/scenarios/all-faults-day.json

``--scenario FILE`` plays that scenario instead of the seeded fleet (the example scenarios are too long for the
test suite, which plays small variants of them), with the same comparison and figures.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pstats
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks._harness import machine_line
from simulator.oracle import count_scenario
from simulator.randomscen import fleet_week
from simulator.run import Options, compare_slots, load
from simulator.vplayer import VirtualPlayer, unexplained

#: cProfile functions (file suffix, name) whose cumulative time is attributed to a part; checked in this order,
#: each part's time is what its functions took minus the parts nested inside listed before it
PARTS = {
    "drivers + emulators": [("agent/peripherals.py", "check_all")],
    "outbox (SQLite)": [("agent/outbox.py", "add"), ("agent/outbox.py", "pending"), ("agent/outbox.py", "delete"),
                        ("agent/outbox.py", "oldest_ts")],
    "storage check": [("agent/collectors.py", "collect")],
    "MQTT/TLS (paho)": [("paho/mqtt/client.py", "loop_read"), ("paho/mqtt/client.py", "loop_write"),
                        ("paho/mqtt/client.py", "publish")],
}


class _Measured(VirtualPlayer):
    """The player, with the processes' CPU and memory read at the end of play (before anything stops)."""

    def _play_virtual(self) -> None:
        super()._play_virtual()
        procs = {"server": self.server.proc.pid, "broker": self.broker.proc.pid}
        procs.update({f"worker-{i}": p.pid for i, p in enumerate(self._procs)})
        self.measured: dict[str, Any] = {}
        for name, pid in procs.items():
            try:
                p = psutil.Process(pid)
                cpu = p.cpu_times()
                self.measured[name] = {"cpu_s": cpu.user + cpu.system, "rss_mb": p.memory_info().rss / 2**20}
            except psutil.Error:
                pass
        me = psutil.Process().cpu_times()
        self.measured["coordinator"] = {"cpu_s": me.user + me.system, "rss_mb": psutil.Process().memory_info().rss / 2**20}


def _parts(profiles: list[str]) -> dict[str, float]:
    """Fractions of the workers' profiled time by part."""
    total = 0.0
    got = dict.fromkeys(PARTS, 0.0)
    for path in profiles:
        st = pstats.Stats(path).stats  # type: ignore[attr-defined]
        total += sum(v[2] for v in st.values())  # tottime of everything
        for part, funcs in PARTS.items():
            for (file, _line, name), v in st.items():
                if name in {f for s, f in funcs if file.endswith(s)}:
                    got[part] += v[3]  # cumtime
    out = {k: v / total for k, v in got.items()} if total else {}
    out["agent loop, worker, rest"] = max(0.0, 1.0 - sum(out.values()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=100)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--faults-per-unit-day", type=float, default=1.0)
    ap.add_argument("--no-storage-readonly", action="store_true", help="leave storage_readonly out (it needs root)")
    ap.add_argument("--no-compare", action="store_true", help="skip the slot-by-slot comparison with the oracle")
    ap.add_argument("--profile", action="store_true", help="cProfile the workers (slower; a profiler's cost on every "
                    "call skews the parts: --parts is the figure to quote)")
    ap.add_argument("--parts", action="store_true", help="the workers' CPU by part of a sample (process_time around "
                    "each part)")
    ap.add_argument("--scenario", type=Path, default=None,
                    help="play this scenario file instead of the seeded fleet (--units, --days, --seed ignored)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    if a.scenario is not None:
        scenario, raw = load(a.scenario)
        a.units = len(scenario.units)
        a.days = round((scenario.end - scenario.start).total_seconds() / 86400, 2)
    else:
        ro = os.geteuid() == 0 and not a.no_storage_readonly
        raw = fleet_week(a.units, a.days, a.seed, storage_readonly=ro, faults_per_unit_day=a.faults_per_unit_day)
        scenario, raw = load(raw)
    prof_dir = tempfile.mkdtemp(prefix="bench-sim-prof-")
    if a.profile:
        os.environ["POSFLEET_SIM_PROFILE"] = f"{prof_dir}/worker"
    if a.parts:
        os.environ["POSFLEET_SIM_PARTS"] = "1"
    print(machine_line())
    shape = (f"{a.scenario}: {scenario.start.isoformat()} to {scenario.end.isoformat()}" if a.scenario is not None
             else "service 08:00-18:00")
    print(f"scenario: {a.units} units x {a.days} days, {len(scenario.events)} faults "
          f"({', '.join(sorted({e.fault for e in scenario.events}))}), {shape}, {scenario.sample_interval_s} s slots")
    t0 = time.time()
    with _Measured(scenario, raw, Options(progress=lambda s: print(f"  {s}", flush=True)), workers=a.workers) as p:
        result = p.run()
        wall = time.time() - t0
        run = result.report["run"]
        slots_checked = mismatches = bad = 0
        if not a.no_compare:
            counts = count_scenario(scenario)
            for u in scenario.units:
                ms = compare_slots(scenario, u.sn, p.slots(u.sn), counts[u.sn])
                mismatches += len(ms)
                off = unexplained(scenario, ms)
                bad += len(off)
                for m in off[:3]:
                    print(f"  unexplained: {m}; the unit's events: "
                          + "; ".join(f"{e.fault} {e.start:%H:%M}-{e.end:%H:%M}" + (f" {e.rtt_ms} ms" if e.rtt_ms else "")
                                      for e in scenario.events_for(u.sn) if e.start.date() == datetime.fromisoformat(m.slot).date()))
                slots_checked += sum(1 for s in counts[u.sn].slots() if s.counted)
        measured = p.measured
    load_avg = os.getloadavg()
    n = max(1, run["samples_stored"])
    workers_cpu = sum(v["cpu_s"] for k, v in measured.items() if k.startswith("worker"))
    cpu = {k: round(v["cpu_s"], 1) for k, v in measured.items()}
    out: dict[str, Any] = {
        "units": a.units, "days": a.days, "workers": run["workers"], "wall_s": round(wall, 1),
        "play_s": run["play_s"], "samples_stored": run["samples_stored"],
        "self_checks": {k: run[k] for k in ("late_wakes", "max_offset_s", "max_ack_skew_s", "ack_timeouts",
                                            "redated_samples", "answer_read_twice_equal")},
        "incidents": run["incidents"][:5],
        "oracle": {"slots_checked": slots_checked, "mismatches": mismatches, "unexplained": bad},
        "cpu_s": cpu, "cpu_ms_per_sample": {k: round(1000 * v / n, 3) for k, v in cpu.items()},
        "cpu_ms_per_sample_all": round(1000 * sum(cpu.values()) / n, 3),
        "workers_rss_mb_per_unit": round(sum(v["rss_mb"] for k, v in measured.items() if k.startswith("worker"))
                                         / a.units, 2),
        "load_avg_at_end": [round(x, 2) for x in load_avg],
    }
    if "workers_cpu_s_by_part" in run:
        by = dict(run["workers_cpu_s_by_part"])
        agent = by.pop("agent (all)", 0.0)
        rw, pub = by.pop("paho read/write", 0.0), by.pop("paho publish", 0.0)
        parts = {k: by.get(k, 0.0) for k in ("drivers + emulators", "storage check", "outbox (SQLite)")}
        parts["MQTT/TLS (paho publish, read, write)"] = pub + rw
        parts["rest of the agent (sample, events, pump, clock)"] = max(0.0, agent - sum(by.values()) - pub)
        parts["worker (windows, settling, messages)"] = max(0.0, workers_cpu - agent - rw)
        out["workers_cpu_ms_per_sample_by_part"] = {k: round(1000 * v / n, 3) for k, v in parts.items()}
    if a.profile:
        fr = _parts(glob.glob(f"{prof_dir}/worker.*"))
        out["workers_cpu_ms_per_sample_by_part"] = {k: round(1000 * workers_cpu * f / n, 3) for k, f in fr.items()}
    print(json.dumps(out, ensure_ascii=False, indent=1))
    verdict = "PASS" if wall <= 600 and bad == 0 and not a.no_compare else "FAIL" if wall > 600 or bad else "n/a"
    print(f"{a.units} units x {a.days} days: {wall:.0f} s wall ({run['play_s']:.0f} s playing), "
          f"{1000 * sum(cpu.values()) / n:.2f} ms CPU per sample in all processes, oracle: {bad} unexplained of "
          f"{slots_checked} slots; target 600 s: {verdict}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
