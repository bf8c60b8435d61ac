"""Bytes per month on the cellular link for ONE terminal at default settings (issue 2).

What runs: a real Mosquitto with the generated config, the real fleet server and one real
agent process, all with the same accelerated clock, the agent connecting through
:class:`benchmarks._harness.CountingProxy` (it counts TLS bytes each way and the TCP segments
of the agent-side socket from TCP_INFO, MSS clamped to a cellular 1400). IP level =
bytes + 52 B per segment. The proxy cuts the connection twice per simulated day.

Measured separately through the same proxy with the agent's own TLS context: a full
handshake, a resumed one (and whether mosquitto resumes at all), the MQTT session set-up
of the agent's Link, and one keep-alive ping exchange.

Keep-alive pings are computed, not counted: paho's keep-alive timer runs on real seconds,
which the accelerated clock does not speed up. paho-mqtt 2.2.0 sends a PINGREQ every
``keepalive`` seconds of connection *whatever else is sent*: its ``_packet_write`` returns
before stamping ``_last_msg_out`` (eclipse-paho/paho.mqtt.python#813, open), so only pings
reset the timer. ``--check-keepalive`` shows it on the wire at real speed. So the pings are
floor(connected time / keepalive) per connection, each costing the measured ping exchange.
Also printed: what they would be if traffic reset the timer as the MQTT spec intends
(floor(gap / keepalive) per quiet gap between batches).

    .venv/bin/python -m benchmarks.bench_bytes                  # 1 simulated day at 720x (~3 min)
    .venv/bin/python -m benchmarks.bench_bytes --days 3 --speed 720
    .venv/bin/python -m benchmarks.bench_bytes --link 'keepalive_s = 900'   # try another setting
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import IP_TCP_OVERHEAD, Conn, CountingProxy, agent_toml, machine_line
from tests.fleet import AgentProc, Broker, Pki, Server, wait_for

TARGET_MB = 5.0
DAY = 86400.0
SN = "HN20260001"


def _wait_closed(proxy: CountingProxy, n: int, timeout: float = 5.0) -> list[Conn]:
    def done() -> list[Conn] | None:
        conns = proxy.snapshot()
        return conns if len(conns) >= n and all(c.closed for c in conns[:n]) else None

    return wait_for(done, timeout, "the measured connection to close")


def measure_handshakes(pki: Pki, proxy: CountingProxy) -> dict[str, Any]:
    """A full and a resumed TLS handshake with the agent's own context, through the proxy."""
    from agent.link import tls_context

    tdir = pki.terminal("HSPROBE01")
    ctx = tls_context(tdir / "ca.pem", tdir / "terminal.pem", tdir / "terminal.key")
    out: dict[str, Any] = {}
    base = len(proxy.snapshot())
    for i, kind in enumerate(("full", "resumed")):
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        tls.settimeout(0.3)
        try:
            tls.recv(1)  # lets TLS 1.3 session tickets arrive (they follow the handshake)
        except TimeoutError:
            pass
        reused = tls.session_reused
        version = tls.version()
        ctx.saved_session = tls.session  # type: ignore[attr-defined]
        tls.close()
        c = _wait_closed(proxy, base + i + 1)[base + i]
        out[kind] = {
            "up_bytes": c.up_bytes, "down_bytes": c.down_bytes, "up_segs": c.up_segs, "down_segs": c.down_segs,
            "ip_bytes": c.ip_bytes, "session_reused": reused, "tls_version": version, "mss": c.mss,
        }
    return out


def measure_session_and_ping(pki: Pki, proxy: CountingProxy, hs: dict[str, Any], keepalive: int = 2,
                             idle: float = 7.0) -> dict[str, Any]:
    """The agent's Link (real class): MQTT set-up after the handshake, then idle pings."""
    from agent.link import Link, tls_context

    tdir = pki.terminal("PINGPROBE01")
    ctx = tls_context(tdir / "ca.pem", tdir / "terminal.pem", tdir / "terminal.key")
    base = len(proxy.snapshot())
    link = Link("PINGPROBE01", "127.0.0.1", proxy.port, ctx, keepalive=keepalive, reconnect_min=0.2, reconnect_max=1)
    link.start()
    try:
        if not link.wait_connected(10):
            raise RuntimeError(f"probe link did not connect: {link.last_error}")
        time.sleep(0.5)
        c = proxy.snapshot()[base]
        setup = {"up_bytes": c.up_bytes, "down_bytes": c.down_bytes, "up_segs": c.up_segs, "down_segs": c.down_segs}
        n0 = len(c.up.records)
        time.sleep(idle)
        c = proxy.snapshot()[base]
        pings = len(c.up.records) - n0
        delta = {
            "up_bytes": c.up_bytes - setup["up_bytes"], "down_bytes": c.down_bytes - setup["down_bytes"],
            "up_segs": c.up_segs - setup["up_segs"], "down_segs": c.down_segs - setup["down_segs"],
        }
    finally:
        link.stop()
    full = hs["full"]
    session = {k: setup[k] - full[k] for k in setup}  # minus the (full) handshake of this connection
    session["ip_bytes"] = session["up_bytes"] + session["down_bytes"] + IP_TCP_OVERHEAD * (session["up_segs"] + session["down_segs"])
    ping_ip = (delta["up_bytes"] + delta["down_bytes"] + IP_TCP_OVERHEAD * (delta["up_segs"] + delta["down_segs"])) / max(1, pings)
    return {"session_setup": session, "pings_seen": pings, "ping_ip_bytes": ping_ip,
            "ping_detail": {k: v / max(1, pings) for k, v in delta.items()}}


def pings_for_gaps(gaps_s: list[float], keepalive_s: float) -> int:
    """PINGREQs a client that resets its keep-alive timer on every packet sends in these quiet gaps."""
    return sum(int(g // keepalive_s) for g in gaps_s if g > 0)


def pings_paho(connected_s: list[float], keepalive_s: float) -> int:
    """PINGREQs paho-mqtt 2.2.0 sends: one every keep-alive of each connection, traffic or not."""
    return sum(int(d // keepalive_s) for d in connected_s if d > 0)


def _batches(db: Path) -> list[float]:
    con = sqlite3.connect(db, timeout=10)
    try:
        rows = con.execute("SELECT DISTINCT received_at FROM samples WHERE sn = ? ORDER BY received_at", (SN,)).fetchall()
        return [float(r[0]) for r in rows]
    finally:
        con.close()


def _count(db: Path, sql: str) -> int:
    con = sqlite3.connect(db, timeout=10)
    try:
        return int(con.execute(sql, (SN,)).fetchone()[0] or 0)
    finally:
        con.close()


def _kb(n: float) -> str:
    return f"{n / 1000:,.1f} KB"


def run(days: float, speed: float, link: str, keepalive: int, workdir: Path) -> dict[str, Any]:
    pki = Pki(workdir / "pki")
    broker = Broker(pki, workdir / "broker").start()
    proxy = CountingProxy(broker.port).start()
    server: Server | None = None
    agent: AgentProc | None = None
    try:
        hs = measure_handshakes(pki, proxy)
        sp = measure_session_and_ping(pki, proxy, hs)
        probe_conns = len(proxy.snapshot())

        anchor = time.time() + 2.0
        clock = {"speed": speed, "start": "2026-03-02T00:00:00+08:00", "anchor": anchor}
        server = Server(pki, broker, workdir / "server", clock=clock).start()
        # Defaults except the reconnect backoff: it is real seconds, and 5-10 s real would be an hour of
        # simulated time at 720x (its length does not change the bytes, only how the backlog is batched).
        cfg = agent_toml(pki, SN, proxy.port, workdir / "agent", clock=clock,
                         link="reconnect_min_s = 0.2\nreconnect_max_s = 1.0\n" + link)
        agent = AgentProc(cfg, workdir / "agent.log").start()
        t0 = time.monotonic()
        real_day = DAY / speed
        total_real = days * real_day
        cuts = sorted(d * real_day + f * real_day for d in range(math.ceil(days)) for f in (0.25, 0.75)
                      if d * real_day + f * real_day < total_real)
        for cut in cuts:
            time.sleep(max(0.0, t0 + cut - time.monotonic()))
            proxy.drop()
            print(f"  cut the link at simulated day {cut / real_day:.2f}", flush=True)
        time.sleep(max(0.0, t0 + total_real - time.monotonic()))
        conns = proxy.snapshot()[probe_conns:]
        t_end = time.monotonic()
        elapsed_days = (time.monotonic() - t0) * speed / DAY
        if not agent.alive():
            raise RuntimeError(f"agent died: {(workdir / 'agent.log').read_text()[-2000:]}")
        stored = _count(server.db, "SELECT count(*) FROM samples WHERE sn = ?")
        batch_times = _batches(server.db)
    finally:
        _stop_all(agent, server, proxy, broker)

    kinds = [c.tls() for c in conns]
    taken = int(elapsed_days * DAY // 60)
    up_b = sum(c.up_bytes for c in conns)
    down_b = sum(c.down_bytes for c in conns)
    up_s = sum(c.up_segs for c in conns)
    down_s = sum(c.down_segs for c in conns)
    # per connection: TLS+TCP handshake (its kind as the proxy saw it) and the MQTT session set-up
    hs_up_b = hs_down_b = hs_up_s = hs_down_s = 0
    for _ver, resumed in kinds:
        h = hs["resumed" if resumed else "full"]
        hs_up_b += h["up_bytes"]
        hs_down_b += h["down_bytes"]
        hs_up_s += h["up_segs"]
        hs_down_s += h["down_segs"]
    ss = sp["session_setup"]
    n = len(conns)
    tele_ip = (up_b - hs_up_b - n * ss["up_bytes"]) + IP_TCP_OVERHEAD * (up_s - hs_up_s - n * ss["up_segs"])
    acks_ip = (down_b - hs_down_b - n * ss["down_bytes"]) + IP_TCP_OVERHEAD * (down_s - hs_down_s - n * ss["down_segs"])
    gaps = [(b - a) * speed for a, b in zip(batch_times, batch_times[1:], strict=False)]
    # The agent's link counts its publishes as traffic for paho's keep-alive timer (working around
    # paho #813; tests/e2e/test_keepalive.py shows no PINGREQ while batches flow), so pings follow the
    # MQTT rule: one per keep-alive interval of silence between batches. `pings_spec` below keeps the
    # figure paho 2.2.0's own rule would give, for comparison.
    pings = pings_for_gaps(gaps, keepalive)
    pings_spec = pings_paho([((c.closed or t_end) - c.opened) * speed for c in conns], keepalive)

    # a month: 30 x the per-day telemetry and acks, 60 connects (two reconnects a day), the pings
    per_day = 1.0 / elapsed_days
    resumed_ok = any(r for _v, r in kinds[1:]) if len(kinds) > 1 else bool(hs["resumed"]["session_reused"])
    hs_each = hs["resumed" if resumed_ok else "full"]["ip_bytes"]
    month = {
        "handshakes (60 x TLS+TCP, " + ("resumed" if resumed_ok else "full") + ")": 60 * hs_each,
        "MQTT session set-up (60 x CONNECT, SUBSCRIBE, online state)": 60 * ss["ip_bytes"],
        "telemetry uplink (PUBLISH batches + TCP)": 30 * tele_ip * per_day,
        "acknowledgements downlink (PUBACK, server Ack + TCP)": 30 * acks_ip * per_day,
        f"keep-alive pings ({pings * per_day:.0f}/day, computed from the gaps between batches)":
            30 * pings * per_day * sp["ping_ip_bytes"],
    }
    total = sum(month.values())
    ping_spec_month = 30 * pings_spec * per_day * sp["ping_ip_bytes"]
    return {
        "days": elapsed_days, "speed": speed, "connections": n, "tls": kinds,
        "samples_taken": taken, "samples_stored": stored, "batches": len(batch_times),
        "batch_gap_median_s": sorted(gaps)[len(gaps) // 2] if gaps else None,
        "handshake": hs, "session_and_ping": sp, "month": month, "total_month": total,
        "total_month_all_full": total - 60 * hs_each + 60 * hs["full"]["ip_bytes"],
        "pings_spec_per_day": pings_spec * per_day,
        "total_month_spec_pings": total - 30 * pings * per_day * sp["ping_ip_bytes"] + ping_spec_month,
        "measured_ip_bytes": up_b + down_b + IP_TCP_OVERHEAD * (up_s + down_s),
    }


def _stop_all(agent: AgentProc | None, server: Server | None, proxy: CountingProxy, broker: Broker) -> None:
    """Stop what a run started, agent first (it says goodbye through the proxy), broker last."""
    if agent is not None:
        agent.stop()
    if server is not None:
        server.stop()
    proxy.stop()
    broker.stop()


def check_keepalive(workdir: Path, seconds: float = 75.0, debug: bool = False) -> dict[str, Any]:
    """Real speed, scaled down: interval 5 s, batch_interval 5 s (period 15 s), keepalive 10 s.

    The proxy counts the PINGREQs (client records of 24 bytes: 2 B MQTT + TLS 1.3 overhead 22 B)
    on the agent's connection. paho 2.2.0 pings every 10 s despite a batch every 15 s; a client
    that honoured traffic would ping once per 15 s gap."""
    pki = Pki(workdir / "pki")
    broker = Broker(pki, workdir / "broker").start()
    proxy = CountingProxy(broker.port).start()
    server: Server | None = None
    agent: AgentProc | None = None
    try:
        server = Server(pki, broker, workdir / "server").start()
        cfg = agent_toml(pki, SN, proxy.port, workdir / "agent",
                         link="keepalive_s = 10\nbatch_interval_s = 5\n")
        cfg.write_text(cfg.read_text() + "[sampling]\ninterval_s = 5\n")
        agent = AgentProc(cfg, workdir / "agent.log").start()
        time.sleep(seconds)
        conns = proxy.snapshot()
        t_stop = time.time()
        batch_times = _batches(server.db)
    finally:
        _stop_all(agent, server, proxy, broker)
    ping_times = [t for c in conns for (ctype, n), t in zip(c.up.records, c.up.times, strict=True)
                  if ctype == 23 and n == 24]
    counted = len(ping_times)
    if debug:
        t0 = min(ping_times + batch_times)
        print("pings at", [round(t - t0, 1) for t in ping_times])
        print("batches at", [round(t - t0, 1) for t in batch_times])
    gaps = [b - a for a, b in zip(batch_times, batch_times[1:], strict=False)]
    # the last 24-byte record is the DISCONNECT (also 2 bytes of MQTT) sent when the agent stops
    return {"pings_counted": counted - 1, "pings_predicted": pings_paho([t_stop - c.opened_wall for c in conns], 10),
            "pings_if_spec": pings_for_gaps(gaps, 10), "batches": len(batch_times)}


def report(r: dict[str, Any]) -> None:
    hs = r["handshake"]
    sp = r["session_and_ping"]
    print(machine_line())
    print(f"run: {r['days']:.2f} simulated days at {r['speed']:g}x, {r['connections']} connections "
          f"(TLS {', '.join(v + (' resumed' if res else ' full') for v, res in r['tls'])})")
    print(f"samples: {r['samples_stored']} stored of ~{r['samples_taken']} taken (the rest wait for the next batch); "
          f"{r['batches']} batches, median gap {r['batch_gap_median_s'] or 0:.0f} s simulated")
    for kind in ("full", "resumed"):
        h = hs[kind]
        print(f"TLS {kind:7s} handshake (TCP open+close incl.): {h['ip_bytes']:6d} B at IP level "
              f"({h['up_bytes']} B up / {h['down_bytes']} B down, {h['up_segs']}+{h['down_segs']} segments, "
              f"TLS {h['tls_version']}, session reused: {h['session_reused']}, MSS {h['mss']})")
    print(f"MQTT session set-up: {sp['session_setup']['ip_bytes']} B; keep-alive ping exchange: "
          f"{sp['ping_ip_bytes']:.0f} B ({sp['pings_seen']} pings seen)")
    print("per month (30 days):")
    for k, v in r["month"].items():
        print(f"  {k:62s} {_kb(v):>12s}")
    total = r["total_month"]
    print(f"  {'TOTAL':62s} {_kb(total):>12s}  ({total / 1e6:.2f} MB vs target {TARGET_MB} MB: "
          f"{'PASS' if total <= TARGET_MB * 1e6 else 'FAIL'})")
    print(f"  if every connect were a full handshake: {r['total_month_all_full'] / 1e6:.2f} MB")
    print(f"  without the agent's workaround for paho #813 (a ping every keep-alive interval): "
          f"{r['pings_spec_per_day']:.0f} pings/day, total {r['total_month_spec_pings'] / 1e6:.2f} MB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=float, default=1.0, help="simulated days to run (default 1)")
    p.add_argument("--speed", type=float, default=720.0, help="clock acceleration (default 720: a day in 2 min)")
    p.add_argument("--link", default="", help="extra agent TOML lines for [link], e.g. 'keepalive_s = 900'")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", action="store_true", help="print the result as JSON too")
    p.add_argument("--check-keepalive", action="store_true",
                   help="instead: check the ping rule at real speed with scaled-down timers (~90 s)")
    a = p.parse_args(argv)
    if a.check_keepalive:
        with tempfile.TemporaryDirectory(prefix="bench-ka-") as tmp:
            k = check_keepalive(Path(tmp))
        print(machine_line())
        print(f"real speed, interval 5 s, batch_interval 5 s, keepalive 10 s: {k['batches']} batches; "
              f"PINGREQs counted on the wire {k['pings_counted']}; one per keep-alive of connection (paho 2.2.0): "
              f"{k['pings_predicted']}; if batches reset the timer: {k['pings_if_spec']}")
        return 0
    keepalive = 660
    for line in a.link.splitlines():
        if line.strip().startswith("keepalive_s"):
            keepalive = int(line.split("=")[1])
    tmp = tempfile.mkdtemp(prefix="bench-bytes-")
    r = run(a.days, a.speed, a.link, keepalive, Path(tmp))
    report(r)
    if a.json:
        print(json.dumps(r, default=str))
    if not a.keep:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
