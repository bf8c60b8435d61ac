"""Agent footprint at steady state with default settings (issue 2): RSS and CPU.

What runs: a real Mosquitto (generated config), the real fleet server and one real agent
process at REAL speed with every default (sample every 60 s, batch every ~12 min,
keep-alive 660 s), connected directly to the broker. After a warm-up (start, first connect,
inventory, first sample) the agent's own process is watched with psutil: CPU seconds
(user + system) over the window divided by the window = % of one core; RSS read every
second (max and final) and USS at the end. For comparison, the RSS of a bare Python
process that only imports what the agent imports (paho-mqtt, psutil, sqlite3,
cryptography, msgspec).

    .venv/bin/python -m benchmarks.bench_agent                  # 4 min window (~5 min total)
    .venv/bin/python -m benchmarks.bench_agent --duration 1500  # covers two batch cycles
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks._harness import agent_toml, machine_line
from tests.fleet import AgentProc, Broker, Pki, Server, wait_for

TARGET_RSS_MB = 40.0
TARGET_CPU_PCT = 0.5
SN = "HN20260002"

BARE = ("import paho.mqtt.client, psutil, sqlite3, cryptography.x509, msgspec, ssl, resource; "
        "import time; time.sleep(0.5); "
        "print(psutil.Process().memory_info().rss)")


def bare_rss() -> int:
    out = subprocess.run([sys.executable, "-c", BARE], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def run(duration: float, warmup: float, workdir: Path) -> dict[str, Any]:
    pki = Pki(workdir / "pki")
    broker = Broker(pki, workdir / "broker").start()
    server: Server | None = None
    agent: AgentProc | None = None
    try:
        server = Server(pki, broker, workdir / "server").start()
        # defaults everywhere; the harness only points the agent at the broker and its certificate
        cfg = agent_toml(pki, SN, broker.port, workdir / "agent")
        agent = AgentProc(cfg, workdir / "agent.log").start()
        assert agent.proc is not None
        proc = psutil.Process(agent.proc.pid)
        wait_for(lambda: server.get(f"/api/v1/units/{SN}").status_code == 200, 60, "the agent to say hello")
        time.sleep(warmup)
        c0 = proc.cpu_times()
        t0 = time.monotonic()
        rss_max = 0
        rss_series: list[int] = []
        while time.monotonic() - t0 < duration:
            if not agent.alive():
                raise RuntimeError(f"agent died: {(workdir / 'agent.log').read_text()[-2000:]}")
            rss = proc.memory_info().rss
            rss_series.append(rss)
            rss_max = max(rss_max, rss)
            time.sleep(1.0)
        c1 = proc.cpu_times()
        wall = time.monotonic() - t0
        cpu_s = (c1.user - c0.user) + (c1.system - c0.system)
        full = proc.memory_full_info()
        threads = proc.num_threads()
        samples = server.get(f"/api/v1/units/{SN}/samples", limit=1000).json()["items"]
        stats = server.get("/healthz").json()["ingest"]
    finally:
        if agent is not None:
            agent.stop()
        if server is not None:
            server.stop()
        broker.stop()
    return {
        "window_s": wall, "warmup_s": warmup, "cpu_s": cpu_s, "cpu_pct": 100.0 * cpu_s / wall,
        "rss_mb_max": rss_max / 2**20, "rss_mb_end": full.rss / 2**20, "uss_mb_end": full.uss / 2**20,
        "rss_mb_first": rss_series[0] / 2**20 if rss_series else 0.0,
        "threads": threads, "samples_stored": len(samples), "server_messages": stats["messages"],
        "bare_rss_mb": bare_rss() / 2**20,
    }


def report(r: dict[str, Any]) -> None:
    print(machine_line())
    print(f"window: {r['window_s']:.0f} s at real speed after {r['warmup_s']:.0f} s warm-up; "
          f"{r['samples_stored']} samples stored, {r['server_messages']} messages at the server; {r['threads']} threads")
    ok_cpu = r["cpu_pct"] <= TARGET_CPU_PCT
    ok_rss = r["rss_mb_max"] <= TARGET_RSS_MB
    print(f"CPU: {r['cpu_s']:.2f} s over {r['window_s']:.0f} s = {r['cpu_pct']:.3f} % of one core "
          f"(target <= {TARGET_CPU_PCT} %: {'PASS' if ok_cpu else 'FAIL'})")
    print(f"RSS: max {r['rss_mb_max']:.1f} MB, first {r['rss_mb_first']:.1f} MB, end {r['rss_mb_end']:.1f} MB, "
          f"USS {r['uss_mb_end']:.1f} MB (target <= {TARGET_RSS_MB:.0f} MB: {'PASS' if ok_rss else 'FAIL'})")
    print(f"bare Python with paho-mqtt, psutil, sqlite3, cryptography, msgspec imported: {r['bare_rss_mb']:.1f} MB RSS")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=240.0, help="measured window, real seconds (default 240)")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds after the first hello before measuring")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        report(run(a.duration, a.warmup, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
