"""Agent footprint over one simulated day with commands (issue 13, "Benchmarks"): RSS in every state.

What runs: a real Mosquitto (generated config), the real fleet server with a command-signing key
(``[commands]`` as tests/commands/conftest.py sets it up) and ONE real agent process (``posfleet agent
run``) with every default setting except the harness's reconnect backoff, its peripherals emulated on ptys
in this process (modem ``quectel-ec20``, printer ``generic-58mm``, ID reader ``generic-sam``), all on the
same accelerated clock (``[clock] speed``, default 360: 24 simulated hours in 240 real seconds; a 60 s
sampling slot lasts 0.17 real s, a healthy check about 0.06 s, see "stored samples" in the output for
whether the agent kept up).

During the day the benchmark sends, through the server's API (``POST /api/v1/commands``), at simulated:

* 02, 06, 10, 14, 18, 22 h: ``test_page`` (the printer prints a test page with its QR code);
* 04 h: ``idcard_selftest`` (read-only); 16 h: ``modem_diag`` (read-only);
* 08 h: ``set_config`` ``link.keepalive_s`` 660 -> 600 (the agent rewrites its file and restarts in place);
* 12 h: ``software_update`` of a component ``demo`` (signed package uploaded to ``/api/v1/packages``);
* 20 h: ``software_update`` of the agent itself (``stage_agent_release``): it installs the release and
  execs into it, same PID, so the sampling follows it.

The agent's RSS (and USS, psutil ``memory_full_info``) is read every ``--sample-every`` real seconds and
labelled with the state it was taken in (idle before any command, during each command, after each kind).
CPU: the agent's CPU seconds over the run divided by the run's wall time. That is at the accelerated clock
(360 x the sampling work per real second), NOT the real-speed figure: that one is ``bench_agent``'s
(docs/performance.md, section 2), quoted in the output.

    .venv/bin/python -m benchmarks.bench_agent_day              # speed 360: ~5 min in all
    .venv/bin/python -m benchmarks.bench_agent_day --speed 180  # slower clock, ~9 min
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import statistics
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks._harness import machine_line
from server.commands.keys import load_key, make_key
from server.commands.packages import build_package, sign_package, stage_agent_release
from simulator.emulators import idcard, modem, printer
from tests.commands.conftest import Fleet
from tests.fleet import Broker, Pki
from wire import __version__ as AGENT_VERSION
from wire.clock import Clock

TARGET_RSS_MB = 40.0
SN = "HN20261301"
REAL_SPEED_CPU = "0.050 % of one core (bench_agent, 240 s at real speed, 2026-11-23; 0.22-0.27 % before the idle-loop change)"
FINAL = ("succeeded", "failed", "rejected", "expired")

# (simulated hour, label, command body)
PLAN: list[tuple[float, str, dict[str, Any]]] = [
    (2, "test_page", {"type": "test_page"}),
    (4, "idcard_selftest", {"type": "idcard_selftest"}),
    (6, "test_page", {"type": "test_page"}),
    (8, "set_config", {"type": "set_config", "params": {"changes": {"link.keepalive_s": 600}, "rollback_minutes": 60}}),
    (10, "test_page", {"type": "test_page"}),
    (12, "update_component", {"type": "software_update"}),
    (14, "test_page", {"type": "test_page"}),
    (16, "modem_diag", {"type": "modem_diag"}),
    (18, "test_page", {"type": "test_page"}),
    (20, "update_agent", {"type": "software_update"}),
    (22, "test_page", {"type": "test_page"}),
]


class Sampler(threading.Thread):
    """Reads the agent's RSS/USS every ``every`` real seconds, labelled with the current state."""

    def __init__(self, pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.every = every
        self.state = "idle (start)"
        self.rows: list[tuple[float, str, int, int]] = []  # (real t, state, rss, uss)
        self.errors = 0
        self._halt = threading.Event()

    def read(self) -> None:
        try:
            m = self.proc.memory_full_info()
            self.rows.append((time.monotonic(), self.state, m.rss, getattr(m, "uss", 0)))
        except psutil.Error:
            self.errors += 1

    def run(self) -> None:
        while not self._halt.wait(self.every):
            self.read()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.read()


def _upload(fleet: Fleet, archive: Path, sig: bytes) -> str:
    assert fleet.server is not None
    r = httpx.post(f"{fleet.server.url}/api/v1/packages", content=archive.read_bytes(), timeout=60, headers={
        "Authorization": f"Bearer {fleet.server.token('admin')}",
        "X-Signature": base64.b64encode(sig).decode(),
        "X-Endorsement": base64.b64encode(fleet.keys["update_endorsement"].read_bytes()).decode()})
    if r.status_code != 201:
        raise RuntimeError(f"package upload: {r.status_code} {r.text}")
    return str(r.json()["id"])


def _packages(fleet: Fleet, tmp: Path, agent_version: str) -> dict[str, str]:
    key = load_key(fleet.keys["update_key"], fleet.keys["update_endorsement"], "update")
    out: dict[str, str] = {}
    src = tmp / "src-demo"
    src.mkdir(parents=True)
    (src / "VERSION").write_text("1.0.0")
    hc = src / "healthcheck"
    hc.write_text("#!/bin/sh\necho healthy\nexit 0\n")
    hc.chmod(0o755)
    arc = build_package(src, "demo", "1.0.0", [], ["./healthcheck"], tmp / "demo-1.0.0.tar.gz")
    out["update_component"] = _upload(fleet, arc, sign_package(arc, key)[1])
    asrc = stage_agent_release(tmp / "src-agent", agent_version)
    arc = build_package(asrc, "agent", agent_version, [], ["./healthcheck"], tmp / f"agent-{agent_version}.tar.gz")
    out["update_agent"] = _upload(fleet, arc, sign_package(arc, key)[1])
    return out


def run(speed: float, hours: float, every: float, workdir: Path, peripherals: bool = True) -> dict[str, Any]:
    pki = Pki(workdir / "pki")
    broker = Broker(pki, workdir / "broker").start()
    keydir = workdir / "keys"
    keydir.mkdir()
    ck, ce, _ = make_key(pki.ca, keydir / "command", "command", 30)
    uk, ue, _ = make_key(pki.ca, keydir / "update", "update", 30)
    keys = {"command_key": ck, "command_endorsement": ce, "update_key": uk, "update_endorsement": ue}
    fleet = Fleet(pki, broker, keys, workdir / "fleet")
    devs = [modem.serve("quectel-ec20"), printer.serve("generic-58mm"), idcard.serve("generic-sam")] if peripherals else []
    # one clock for server and agent; it starts now (the keys' endorsements are valid from now on)
    anchor = time.time() + 20.0  # the server and the agent are up before the simulated day begins
    start = dt.datetime.fromtimestamp(anchor).astimezone().replace(microsecond=0)
    anchor = start.timestamp()
    clock = {"speed": speed, "start": start.isoformat(), "anchor": anchor}
    sim = Clock(speed, anchor, anchor)
    parts = AGENT_VERSION.split(".")
    new_version = ".".join(parts[:-1] + [str(int(parts[-1]) + 1)]) if parts[-1].isdigit() else AGENT_VERSION + ".1"
    result: dict[str, Any] = {"peripherals": peripherals, "speed": speed, "hours": hours, "commands": [], "agent_from": AGENT_VERSION,
                              "agent_to": new_version}
    sampler: Sampler | None = None
    try:
        fleet.start_server(clock=clock, dispatch_interval_s=0.5, resend_after_s=3.0)
        assert fleet.server is not None
        fleet.make_agent(SN, link="", sampling_interval=60, clock=clock, peripherals={
            "modem": (devs[0].path, "quectel-ec20"), "printer": (devs[1].path, "generic-58mm"),
            "idcard": (devs[2].path, "generic-sam")} if devs else None)
        agent = fleet.start_agent(SN)
        assert agent.proc is not None
        pid = agent.proc.pid
        fleet.wait_online(SN, timeout=60)
        pkgs = _packages(fleet, workdir / "pkgs", new_version)
        while time.time() < anchor:
            time.sleep(0.2)
        proc = psutil.Process(pid)
        c0, t0 = proc.cpu_times(), time.monotonic()
        sampler = Sampler(pid, every)
        sampler.start()
        end_sim = anchor + hours * 3600
        done_kinds: list[str] = []
        for hour, label, body in PLAN:
            if hour >= hours:
                break
            while sim.now() < anchor + hour * 3600:
                if not fleet.agents[SN].alive():
                    raise RuntimeError("agent died: " + (fleet.agent_dir(SN) / "agent.log").read_text()[-3000:])
                time.sleep(0.2)
            body = dict(body, sn=SN, expires_s=6 * 3600)
            if label in pkgs:
                body["params"] = {"package": pkgs[label], "health_timeout_s": 120, "pace_bytes_per_s": 100 * 2**20}
            sampler.state = f"during {label}"
            sent_real, sent_sim = time.monotonic(), sim.now()
            r = fleet.send(**body)
            entry: dict[str, Any] = {"label": label, "sim_h": (sent_sim - anchor) / 3600}
            if r.status_code != 201:
                entry.update(state="not sent", output=f"{r.status_code} {r.text[:300]}")
            else:
                cid = r.json()["command"]["id"]
                try:
                    c = fleet.wait_state(cid, timeout=180)
                    entry.update(state=c["state"], output=str(c.get("output") or "")[:200])
                except Exception as e:  # noqa: BLE001 - reported, the day goes on
                    entry.update(state="no final state", output=str(e)[:200])
            entry["real_s"] = time.monotonic() - sent_real
            entry["pid_same"] = fleet.agents[SN].alive() and fleet.agents[SN].proc.pid == pid  # type: ignore[union-attr]
            result["commands"].append(entry)
            done_kinds.append(label)
            sampler.state = f"after {label}"
        while sim.now() < end_sim:
            if not fleet.agents[SN].alive():
                raise RuntimeError("agent died: " + (fleet.agent_dir(SN) / "agent.log").read_text()[-3000:])
            time.sleep(0.5)
        sampler.state = "end"
        sampler.stop()
        c1 = proc.cpu_times()
        wall = time.monotonic() - t0
        result["cpu_s"] = (c1.user - c0.user) + (c1.system - c0.system)
        result["wall_s"] = wall
        result["threads"] = proc.num_threads()
        result["rows"] = sampler.rows
        result["sampler_errors"] = sampler.errors
        items = fleet.server.get(f"/api/v1/units/{SN}/samples", limit=5000).json()["items"]
        result["samples_in_day"] = sum(1 for s in items if anchor <= _ts(s["ts"]) < end_sim)
        u = fleet.server.get(f"/api/v1/units/{SN}").json()
        result["agent_version_end"] = u.get("agent_version")
        cfg = tomllib.loads(fleet.configs[SN].read_text())
        result["keepalive_end"] = cfg["link"].get("keepalive_s")
        log = (fleet.agent_dir(SN) / "agent.log").read_text()
        result["tracebacks"] = log.count("Traceback")
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        try:
            fleet.stop()
        except AssertionError as e:
            result["server_traceback"] = str(e)[-1500:]
        broker.stop()
        for d in devs:
            d.stop()
    return result


def _ts(v: Any) -> float:
    if isinstance(v, (int, float)):
        return float(v)
    return dt.datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()


def report(r: dict[str, Any]) -> bool:
    print(machine_line())
    print(f"peripherals: {'emulated modem quectel-ec20, printer generic-58mm, ID reader generic-sam' if r['peripherals'] else 'none configured (--no-peripherals)'}")
    print(f"clock: speed {r['speed']:g}, {r['hours']:g} simulated h in {r['wall_s']:.0f} real s; "
          f"samples stored for the day: {r['samples_in_day']} of {int(r['hours'] * 60)} slots (interval 60 s); "
          f"{r['threads']} threads at the end; {r['tracebacks']} tracebacks in the agent log")
    print("commands (simulated hour, type, final state, real seconds to final, same PID after, output):")
    for c in r["commands"]:
        print(f"  {c['sim_h']:5.2f} h  {c['label']:<17} {c['state']:<10} {c['real_s']:5.1f} s  "
              f"pid {'same' if c['pid_same'] else 'CHANGED/dead'}  {c['output']!r}")
    print(f"agent version at the server at the end: {r['agent_version_end']} (was {r['agent_from']}, update to "
          f"{r['agent_to']}); link.keepalive_s in the agent's file at the end: {r['keepalive_end']}")
    rows = r["rows"]
    by: dict[str, list[tuple[int, int]]] = {}
    order: list[str] = []
    for _t, st, rss, uss in rows:
        if st not in by:
            order.append(st)
        by.setdefault(st, []).append((rss, uss))
    print(f"RSS / USS by state ({len(rows)} readings, every few real seconds; MB = 2^20 bytes):")
    for st in order:
        v = by[st]
        print(f"  {st:<26} n={len(v):3d}  RSS max {max(x for x, _ in v) / 2**20:5.1f}  "
              f"median {statistics.median(x for x, _ in v) / 2**20:5.1f}  USS max {max(u for _, u in v) / 2**20:5.1f}")
    peak = max(rows, key=lambda x: x[2])
    first, last = rows[0], rows[-1]
    ok = peak[2] / 2**20 <= TARGET_RSS_MB
    print(f"RSS: first {first[2] / 2**20:.1f} MB, peak {peak[2] / 2**20:.1f} MB ({peak[1]}), end {last[2] / 2**20:.1f} MB; "
          f"USS peak {max(x[3] for x in rows) / 2**20:.1f} MB, end {last[3] / 2**20:.1f} MB "
          f"(target <= {TARGET_RSS_MB:.0f} MB in every state: {'PASS' if ok else 'FAIL'})")
    print(f"CPU over the accelerated run: {r['cpu_s']:.1f} s in {r['wall_s']:.0f} s = "
          f"{100 * r['cpu_s'] / r['wall_s']:.2f} % of one core at speed {r['speed']:g} "
          f"({r['cpu_s'] / r['hours']:.2f} CPU s per simulated hour, commands included). "
          f"NOT the real-speed figure; real speed: {REAL_SPEED_CPU}")
    if r.get("server_traceback"):
        print("server log had a traceback:", r["server_traceback"])
    not_ok = [c for c in r["commands"] if c["state"] != "succeeded"]
    if not_ok:
        print("NOT DRIVEN AS PLANNED: " + "; ".join(f"{c['label']} at {c['sim_h']:.1f} h: {c['state']}" for c in not_ok))
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--speed", type=float, default=360.0, help="clock speed (default 360: a day in 240 s)")
    p.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    p.add_argument("--sample-every", type=float, default=2.0, help="real seconds between RSS readings (default 2)")
    p.add_argument("--no-peripherals", action="store_true", help="configure no peripherals (commands that need one fail)")
    p.add_argument("--workdir", type=Path, help="keep the logs here (default: a temporary folder, removed)")
    a = p.parse_args(argv)
    if a.workdir:
        a.workdir.mkdir(parents=True, exist_ok=False)
        return 0 if report(run(a.speed, a.hours, a.sample_every, a.workdir.resolve(), not a.no_peripherals)) else 1
    with tempfile.TemporaryDirectory(prefix="bench-agent-day-") as tmp:
        ok = report(run(a.speed, a.hours, a.sample_every, Path(tmp), not a.no_peripherals))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
