"""Fleet simulator benchmark (issue 7): how long `posfleet sim run` takes, and why.

Targets: a 7-day scenario with 100 units in <= 10 minutes, and a 1-day scenario with 1,000 units in
<= 10 minutes, on this machine.

What it does: builds a synthetic scenario (N units in a few institutions, a seeded mix of every fault kind
but the slow-to-emulate modem_unresponsive, five minutes to an hour each), plays it with the real player
(:class:`simulator.run.Player`: Mosquitto, the fleet server, one agent process per unit, emulators and link
proxies) and measures:

* wall time, and the samples the server stored;
* CPU seconds of every process involved (the player with its emulators and proxies: ``RUSAGE_SELF``; the
  agents, Mosquitto and the server: ``RUSAGE_CHILDREN``, all reaped by the end), per simulated sample;
* the agents' resident memory (psutil, sampled every 2 s, the largest seen per agent).

From those it extrapolates the two targets: the CPU they need (samples x CPU per sample) divided by the
cores is the least wall time any speed could reach; the fidelity bound (``simulator.run.max_speed``) gives
another; memory is units x agent RSS. A run of the full targets is possible with ``--units/--hours`` but is
not attempted by default, because the extrapolation shows it cannot fit (see docs/performance-sim.md).

    .venv/bin/python -m benchmarks.bench_sim                          # 20 units, 3 h simulated, max speed
    .venv/bin/python -m benchmarks.bench_sim --units 50 --hours 2 --speed 40
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from benchmarks._harness import machine_line
from simulator.oracle import oracle
from simulator.run import NIGHT_SPEED, Options, Player, load, max_speed

TARGETS = {"week-100": (100, 7 * 24), "day-1000": (1000, 24)}
TARGET_WALL_S = 600.0
FAULTS = ("network_down", "high_latency", "printer_paper_out", "printer_cover_open", "printer_offline",
          "idcard_reader_fault", "sim_missing", "power_off", "agent_down", "storage_readonly")
MODEMS = ("quectel-ec20", "quectel-ec25", "simcom-sim7600", "huawei-me909s", "fibocom-l610")


def make_scenario(units: int, hours: float, seed: int = 7, faults_per_unit_day: float = 4.0,
                  start: str = "2026-11-02T08:00:00+08:00", service_hours: str = "00:00-23:59") -> dict[str, Any]:
    """A synthetic fleet: ``units`` terminals, ``hours`` long, seeded random faults of every cheap kind."""
    rng = random.Random(seed)
    t0 = datetime.fromisoformat(start)
    end = t0 + timedelta(hours=hours)
    insts = [{"code": f"469030-{i:03d}", "name": f"村卫生室{i}", "county": ("琼中", "文昌", "万宁")[i % 3],
              "type": "village_clinic"} for i in range(max(1, units // 10))]
    us = [{"sn": f"HN9{i:07d}", "institution": insts[i % len(insts)]["code"], "model": "generic-pos",
           "modem": MODEMS[i % len(MODEMS)], "printer": ("generic-58mm", "generic-80mm")[i % 2],
           "idcard": "generic-sam"} for i in range(units)]
    events = []
    n = max(1, round(units * faults_per_unit_day * hours / 24))
    minutes = int(hours * 60)
    for _ in range(n):
        fault = rng.choice(FAULTS)
        a = rng.randrange(0, max(1, minutes - 5))
        b = min(minutes, a + rng.randrange(5, 61))
        e = {"unit": rng.choice(us)["sn"], "fault": fault, "start": (t0 + timedelta(minutes=a)).isoformat(),
             "end": (t0 + timedelta(minutes=b)).isoformat()}
        if fault == "high_latency":
            e["rtt_ms"] = rng.choice((650, 900, 1500))
        events.append(e)
    return {"name": f"bench {units} units {hours:g} h", "timezone": "Asia/Shanghai", "start": t0.isoformat(),
            "end": end.isoformat(), "sample_interval_s": 60, "service_hours": service_hours,
            "institutions": insts, "units": us, "events": events}


class _RssWatch(threading.Thread):
    """The agents' resident memory: every 2 s, the sum over the distinct agent processes (one per unit, or
    the agent hosts), the largest sum seen."""

    def __init__(self, player: Player) -> None:
        super().__init__(daemon=True)
        self.player = player
        self.peak_total = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(2.0):
            pids = {rig.proc.pid for rig in list(self.player.rigs.values()) if rig.proc is not None}
            total = 0
            for pid in pids:
                try:
                    total += psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
            self.peak_total = max(self.peak_total, total)


def _cpu() -> tuple[float, float]:
    """(this process: player, emulators, proxies; reaped children: agents, broker, server) CPU seconds."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime


def measure(units: int, hours: float, speed: float | None, workdir: Path | None, *, service_hours: str = "00:00-23:59",
            night_speed: float | None = None, units_per_host: int = 25, start: str = "2026-11-02T08:00:00+08:00",
            ) -> dict[str, Any]:
    raw = make_scenario(units, hours, service_hours=service_hours, start=start)
    sc, raw = load(raw)
    cpu0, t0 = _cpu(), time.time()
    opts = Options(speed=speed, workdir=workdir, drain_timeout_s=600, count_timeout_s=600, night_speed=night_speed,
                   units_per_host=units_per_host)
    player = Player(sc, raw, opts)
    watch = _RssWatch(player)
    watch.start()
    try:
        result = player.run()
    finally:
        watch.stop.set()
        player.close()
    wall, cpu1 = time.time() - t0, _cpu()
    player_cpu, children_cpu = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    cpu = player_cpu + children_cpu
    fleet = result.report["availability"]["fleet"]["fleet"]
    want = oracle(sc, group_by="fleet")["fleet"]  # what the server's figures must be, within the edge slack
    keys = ("service_slots", "intact_slots", "network_ok_slots", "no_data_slots")
    return {
        "units": units, "hours": hours, "speed": result.speed, "night_speed": night_speed if player.schedule else None,
        "service_hours": service_hours, "units_per_host": units_per_host, "wall_s": round(wall, 1),
        "samples": result.samples_stored, "cpu_s": round(cpu, 1),
        "cpu_ms_per_sample": round(1000 * cpu / max(1, result.samples_stored), 2),
        "player_cpu_s": round(player_cpu, 1), "agents_broker_server_cpu_s": round(children_cpu, 1),
        "agent_rss_mb_per_unit": round(watch.peak_total / units / 2**20, 1),
        "incidents": result.incidents, "fleet_no_data_slots": fleet["no_data_slots"],
        "fleet_service_slots": fleet["service_slots"],
        "server_vs_oracle": {k: [fleet[k], want[k]] for k in keys}, "load_average": [round(x, 1) for x in os.getloadavg()],
    }


def extrapolate(m: dict[str, Any], night_speed: float = NIGHT_SPEED) -> dict[str, Any]:
    """The two targets with the default service hours 08:00-18:00: the counted ten hours a day cost CPU per
    sample; the fourteen hours of night pass at ``night_speed`` (their real duration, whatever the CPU)."""
    cores = os.cpu_count() or 1
    out = {}
    for name, (units, hours) in TARGETS.items():
        days = hours / 24
        service_s = days * 10 * 3600
        night_real = days * 14 * 3600 / night_speed
        samples = round(units * service_s / 60)
        cpu = samples * m["cpu_ms_per_sample"] / 1000
        sc, _ = load(make_scenario(units, hours, service_hours="08:00-18:00"))
        fastest = max_speed(sc)
        floor = cpu / cores + night_real
        at_speed = service_s / fastest + night_real
        out[name] = {
            "service_samples": samples,
            "cpu_s_needed": round(cpu),
            "wall_s_floor_cpu": round(floor),  # every core busy all day, nothing else running; nights as played
            "max_faithful_speed": fastest,
            "wall_s_at_that_speed": round(at_speed),
            "agents_rss_gb": round(units * (m["agent_rss_mb_per_unit"] or 0) / 1024, 1),
            "meets_10_min": max(floor, at_speed) <= TARGET_WALL_S,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=20)
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--speed", type=float, default=None, help="default: the player's max faithful speed")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--service-hours", default="00:00-23:59",
                    help="the scenario's service hours (default: all day, every sample counted)")
    ap.add_argument("--night-speed", type=float, default=NIGHT_SPEED, help="clock speed outside service hours")
    ap.add_argument("--units-per-host", type=int, default=25, help="agents per agent-host process (0: a process each)")
    ap.add_argument("--start", default="2026-11-02T08:00:00+08:00", help="the scenario's start")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    print(machine_line(), flush=True)
    m = measure(args.units, args.hours, args.speed, args.workdir, service_hours=args.service_hours,
                night_speed=args.night_speed or None, units_per_host=args.units_per_host, start=args.start)
    night = f", night {m['night_speed']:g}" if m["night_speed"] else ""
    print(f"measured: {m['units']} units x {m['hours']:g} h (service {m['service_hours']}) at speed {m['speed']:g}"
          f"{night}, {m['units_per_host']} units per host: {m['wall_s']} s wall, "
          f"{m['samples']} samples, {m['cpu_s']} CPU s (player+emulators+proxies {m['player_cpu_s']}, agents+broker+"
          f"server {m['agents_broker_server_cpu_s']}) = {m['cpu_ms_per_sample']} ms CPU per simulated sample; "
          f"agents' RSS ~{m['agent_rss_mb_per_unit']} MB per unit; load average {m['load_average']}; no-data slots {m['fleet_no_data_slots']}/"
          f"{m['fleet_service_slots']}; incidents {len(m['incidents'])}")
    print("server vs oracle (fleet): " + ", ".join(f"{k} {a} vs {b}" for k, (a, b) in m["server_vs_oracle"].items()))
    for inc in m["incidents"][:10]:
        print(f"  incident: {inc}")
    ext = extrapolate(m)
    for name, e in ext.items():
        print(f"{name} (service 08:00-18:00): {e['service_samples']} counted samples -> {e['cpu_s_needed']} CPU s, >= {e['wall_s_floor_cpu']} s wall on "
              f"{os.cpu_count()} cores; fidelity allows speed {e['max_faithful_speed']:g} -> "
              f"{e['wall_s_at_that_speed']} s; agents' memory {e['agents_rss_gb']} GB; "
              f"target 10 min: {'met' if e['meets_10_min'] else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_line(), "measured": m, "extrapolated": ext}, indent=2,
                                        ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
