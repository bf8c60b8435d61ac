"""The least CPU a simulated sample can cost here, measured part by part (issue 7's targets).

``bench_sim`` measures whole runs; this measures the parts of one sample that the simulator cannot leave out
while it runs the real agent against emulated peripherals, with nothing else in the way: no broker, no
server, no TLS, no link proxy, no other agents contending for the GIL, one unit at a time.

1. **Peripheral checks**: the agent's real :class:`agent.peripherals.PeripheralSet` (the real modem, printer
   and ID card reader drivers) against the simulator's emulators on pseudo-terminals, in one process. CPU is
   read per thread (psutil): the caller's thread is the agent's side, the pty hub's thread the emulators'.
   Every modem profile, healthy peripherals (the cheapest case: no fault, no timeout).
2. **The rest of the agent's sample**: the real :class:`agent.main.Agent` (no peripherals, link not started)
   taking a sample, storing it in its SQLite outbox (fsync as configured) and encoding it for the wire.

Their sum is a floor for the per-sample CPU of a run: a real run adds the broker, the server's ingest and
roll-ups, TLS, the link emulator, the agents' idle loops and set-up. It is compared with what each target
allows: ``600 s x cores / counted samples``.

    .venv/bin/python -m benchmarks.bench_sim_floor            # 300 checks per modem profile
    .venv/bin/python -m benchmarks.bench_sim_floor --n 1000 --json /tmp/floor.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import psutil

from benchmarks._harness import machine_line

MODEMS = ("quectel-ec20", "quectel-ec25", "simcom-sim7600", "huawei-me909s", "fibocom-l610")
PRINTERS = ("generic-58mm", "generic-80mm")
#: counted samples of each target with the default service hours (10 of 24 hours, one sample a minute)
TARGETS = {"week-100": 100 * 7 * 10 * 60, "day-1000": 1000 * 1 * 10 * 60}
TARGET_WALL_S = 600.0


def _thread_cpu(tid: int) -> float:
    for t in psutil.Process().threads():
        if t.id == tid:
            return t.user_time + t.system_time
    return 0.0


def peripherals(modem: str, printer: str, n: int) -> dict[str, Any]:
    """CPU per ``check_all`` (agent side, emulator side) for one unit's three peripherals."""
    from agent.config import PeripheralConfig, PeripheralsConfig
    from agent.peripherals import PeripheralSet
    from simulator.emulators.idcard import IdCardEmulator
    from simulator.emulators.modem import ModemEmulator
    from simulator.emulators.printer import PrinterEmulator
    from simulator.emulators.pty import PtyDevice, hub

    devs = [PtyDevice(ModemEmulator(modem)).start(), PtyDevice(PrinterEmulator(printer)).start(),
            PtyDevice(IdCardEmulator("generic-sam")).start()]
    for d in devs:
        d.lazy_tick = True  # as the fleet player sets them: ticked while something is pending, else once a second
    ps = PeripheralSet(PeripheralsConfig(
        modem=PeripheralConfig(port=devs[0].path, profile=modem),
        printer=PeripheralConfig(port=devs[1].path, profile=printer),
        idcard=PeripheralConfig(port=devs[2].path, profile="generic-sam")))
    try:
        for _ in range(5):  # open the ports, initialise the modem, first identity
            ps.check_all()
        h = hub()
        hub_tid = h._thread.native_id if h._thread is not None else 0  # type: ignore[union-attr]
        me = threading.get_native_id()
        a0, e0 = _thread_cpu(me), _thread_cpu(hub_tid)
        states: dict[str, int] = {}
        for _ in range(n):
            for kind, c in ps.check_all().items():
                states[kind] = states.get(kind, 0) + (c.state == 0)
        a1, e1 = _thread_cpu(me), _thread_cpu(hub_tid)
        kinds = {}
        for kind, port in ps.ports.items():  # each peripheral's share (agent and emulator sides together)
            k0 = _thread_cpu(me) + _thread_cpu(hub_tid)
            for _ in range(n):
                ps._check(port)
            kinds[kind] = 1000 * (_thread_cpu(me) + _thread_cpu(hub_tid) - k0) / n
    finally:
        ps.close()
        for d in devs:
            d.stop()
    if any(v != n for v in states.values()):
        raise SystemExit(f"{modem}/{printer}: not every check was ok ({states} of {n}): the figure would be wrong")
    return {"modem": modem, "printer": printer, "agent_ms": 1000 * (a1 - a0) / n, "emulators_ms": 1000 * (e1 - e0) / n,
            "by_kind_ms": kinds}


def agent_sample(n: int, workdir: Path) -> dict[str, Any]:
    """CPU per sample of the real Agent without peripherals: take it, store it (SQLite outbox), encode it."""
    from agent.config import parse
    from agent.main import Agent
    from simulator.local import Pki
    from wire import codec
    from wire.messages import Batch

    t = Pki(workdir / "pki").terminal("HN00990001")
    cfg = parse(f"""
sn = "HN00990001"
data_dir = "{workdir / 'data'}"
[link]
ca_file = "{t}/ca.pem"
cert_file = "{t}/terminal.pem"
key_file = "{t}/terminal.key"
[commands]
enabled = false
""")
    agent = Agent(cfg)
    me = threading.get_native_id()
    ts = 1_800_000_000
    for i in range(5):
        agent._finish_sample(agent.take_sample(ts + 60 * i), probe_lost=False)
    c0 = _thread_cpu(me)
    batch: list[Any] = []
    for i in range(n):
        s = agent.take_sample(ts + 60 * (i + 5))
        agent._finish_sample(s, probe_lost=False)
        batch.append(s)
        if len(batch) == 10:  # the agent sends about ten samples a batch (batch_interval_s 600)
            codec.encode(Batch(sn=agent.sn, epoch=0, samples=batch))
            batch = []
    c1 = _thread_cpu(me)
    if agent.outbox is not None:
        stored = agent.outbox.count()
        agent.outbox.close()
        if stored < n:
            raise SystemExit(f"the outbox holds {stored} of {n} samples: the figure would be wrong")
    return {"agent_sample_ms": 1000 * (c1 - c0) / n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="checks (and samples) measured per case")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    print(machine_line(), flush=True)
    rows = [peripherals(m, PRINTERS[i % 2], args.n) for i, m in enumerate(MODEMS)]
    for r in rows:
        print(f"peripheral checks {r['modem']:>15} + {r['printer']} + generic-sam: agent {r['agent_ms']:.2f} ms, "
              f"emulators {r['emulators_ms']:.2f} ms CPU per sample (alone, both sides: "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["by_kind_ms"].items()) + " ms)", flush=True)
    per = sum(r["agent_ms"] + r["emulators_ms"] for r in rows) / len(rows)
    with tempfile.TemporaryDirectory(prefix="pf-floor-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        rest = agent_sample(args.n, Path(d))["agent_sample_ms"]
    print(f"agent sample without peripherals (collect, SQLite outbox, encode): {rest:.2f} ms CPU per sample")
    floor = per + rest
    cores = os.cpu_count() or 1
    print(f"floor: {per:.2f} + {rest:.2f} = {floor:.2f} ms CPU per counted sample, before broker, server, TLS, "
          f"link emulator and idle loops")
    out: dict[str, Any] = {"machine": machine_line(), "peripherals": rows, "peripherals_mean_ms": per,
                           "agent_sample_ms": rest, "floor_ms": floor, "targets": {}}
    for name, samples in TARGETS.items():
        budget = 1000 * TARGET_WALL_S * cores / samples
        least = samples * floor / 1000 / cores
        out["targets"][name] = {"counted_samples": samples, "budget_ms": budget, "least_wall_s": least}
        print(f"{name}: {samples} counted samples; 10 min on {cores} cores allows {budget:.2f} ms each; at the floor "
              f"alone the counted hours need >= {least:.0f} s: {'fits' if least <= TARGET_WALL_S else 'does NOT fit'}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
