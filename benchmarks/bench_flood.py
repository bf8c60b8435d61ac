"""One unit floods, the fleet reports (catalogue R5, issue 12): does a healthy unit's data still get in on time?

What runs: a real Mosquitto with the generated config, the real fleet server (default budgets, SQLite), and
two load processes:

* **the fleet**: ``--units`` terminals (default 3,000), each sending one batch of one sample a minute, spread
  evenly (50 batches/s at 3,000), through a load-generator identity allowed to publish on ``pf/+/t`` and read
  ``pf/+/a`` (benchmark-only ACL lines, as in bench_ingest). The latency of each sample is the time from its
  publish to the server's acknowledgement on ``pf/<sn>/a``, i.e. committed and acknowledged end to end.
* **the flooder**: one terminal with its own certificate publishing valid batches of 10 samples as fast as it
  can (up to ``--flood-rate``, default 1,000 messages/s) for ``--flood-seconds``.

Phases: ``--baseline-seconds`` of fleet traffic alone, then the flood with the fleet going on. Printed: the fleet's
latency p50/p99/max in each phase, how many of its samples were acknowledged, the flooder's messages offered and
stored, the time from the flood's start to its security alert, and the server's CPU and peak RSS in each phase.

    .venv/bin/python -m benchmarks.bench_flood                     # ~2.5 min
    .venv/bin/python -m benchmarks.bench_flood --units 5000 --flood-seconds 600   # the catalogue's R5 (10 min)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import machine_line
from benchmarks.bench_ingest import ProcWatch, add_loadgen_acl
from benchmarks.bench_scale import _client
from tests.fleet import Broker, Pki, Server, wait_for

FLOODER = "HN0FLOOD01"


def fleet(pki_dir: str, port: int, units: int, seconds: float, out: Any, stop: Any) -> None:
    """Each unit one one-sample batch a minute, spread evenly; records (publish time, ack time) per sample."""
    from wire import codec
    from wire.messages import Ack, Batch, Check, Sample

    sent: dict[tuple[str, int], float] = {}
    lat: list[tuple[float, float]] = []  # (publish wall time, latency s)
    lock = threading.Lock()

    def on_message(client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        now = time.monotonic()
        sn = msg.topic.split("/")[1]
        ack = codec.decode(msg.payload, Ack)
        with lock:
            for a, b in ack.ranges:
                for q in range(a, b + 1):
                    t = sent.pop((sn, q), None)
                    if t is not None:
                        lat.append((t, now - t))

    c = _client(pki_dir, "loadgen-0", port, "loadgen-0", inflight=1000)
    c.on_message = on_message
    c.connect("localhost", port, keepalive=60)
    c.subscribe("pf/+/a", qos=0)
    c.loop_start()
    time.sleep(1.0)
    per_s = units / 60.0
    t0 = time.monotonic()
    k = 0
    now0 = int(time.time())
    while time.monotonic() - t0 < seconds and not stop.value:
        n, rnd = k % units, k // units
        sn = f"HN{n:08d}"
        ts = now0 - 3600 + 60 * rnd
        payload = codec.encode(Batch(sn=sn, epoch=1, samples=[Sample(seq=rnd + 1, ts=ts, rtt_ms=80, cpu=5.0, checks={
            "storage": Check(0), "printer": Check(0), "idcard": Check(0), "modem": Check(0)})]))
        with lock:
            sent[(sn, rnd + 1)] = time.monotonic()
        c.publish(f"pf/{sn}/t", payload, qos=1)
        k += 1
        ahead = k / per_s - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    time.sleep(5.0)  # the last acknowledgements
    c.disconnect()
    c.loop_stop()
    with lock:
        out.put({"lat": [(t - t0, d) for t, d in lat], "unacked": len(sent), "published": k})


def flooder(pki_dir: str, port: int, rate: float, seconds: float, out: Any) -> None:
    from wire import codec
    from wire.messages import Batch, Check, Sample

    c = _client(pki_dir, FLOODER, port, FLOODER, inflight=1000)
    c.connect("localhost", port, keepalive=60)
    c.loop_start()
    t0 = time.monotonic()
    k = 0
    now0 = int(time.time())
    while time.monotonic() - t0 < seconds:
        payload = codec.encode(Batch(sn=FLOODER, epoch=2, samples=[
            Sample(seq=k * 10 + j + 1, ts=now0 - 86400 + (k * 10 + j) % 86000, checks={"storage": Check(0)})
            for j in range(10)]))
        info = c.publish(f"pf/{FLOODER}/t", payload, qos=1)
        k += 1
        if info.rc:
            time.sleep(0.01)
        ahead = k / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    c.disconnect()
    c.loop_stop()
    out.put({"offered": k, "seconds": time.monotonic() - t0})


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def run(units: int, baseline_s: float, flood_s: float, flood_rate: float, workdir: Path) -> dict[str, Any]:
    pki = Pki(workdir / "pki")
    broker = Broker(pki, workdir / "broker")
    pki.terminal(FLOODER)
    add_loadgen_acl(pki, 1)
    with (pki.dir / "acl").open("a") as f:
        f.write("topic read pf/+/a\n")  # the load generator reads the fleet's acknowledgements (benchmark only)
    broker.start()
    server = Server(pki, broker, workdir / "server").start()
    ctx = mp.get_context("spawn")
    q_fleet, q_flood = ctx.Queue(), ctx.Queue()
    stop = ctx.Value("i", 0)
    r: dict[str, Any] = {"units": units, "baseline_s": baseline_s, "flood_s": flood_s, "flood_rate": flood_rate}
    try:
        assert server.proc is not None
        fl = ctx.Process(target=fleet, args=(str(pki.dir), broker.port, units, baseline_s + flood_s + 5, q_fleet, stop))
        fl.start()
        watch = ProcWatch(server.proc.pid)
        time.sleep(baseline_s)
        r["base_cpu"], r["base_rss"] = watch.stop()
        watch = ProcWatch(server.proc.pid)
        flood_t0 = time.time()
        fp = ctx.Process(target=flooder, args=(str(pki.dir), broker.port, flood_rate, flood_s, q_flood))
        fp.start()
        flagged = None
        while fp.is_alive():
            if flagged is None:
                items = server.get("/api/v1/alerts", kind="security").json().get("items", [])
                if any(a["sn"] == FLOODER for a in items):
                    flagged = time.time() - flood_t0
            time.sleep(1.0)
        r["flood_cpu"], r["flood_rss"] = watch.stop()
        r["flagged_after_s"] = flagged
        r.update(q_flood.get(timeout=30))
        fl.join(baseline_s + flood_s + 60)
        res = q_fleet.get(timeout=30)
        base = [d for t, d in res["lat"] if t < baseline_s]
        during = [d for t, d in res["lat"] if baseline_s + 2 <= t < baseline_s + flood_s]
        r.update(base_n=len(base), base_p50=_pct(base, 0.5), base_p99=_pct(base, 0.99), base_max=max(base, default=0),
                 flood_n=len(during), flood_p50=_pct(during, 0.5), flood_p99=_pct(during, 0.99),
                 flood_max=max(during, default=0), fleet_published=res["published"], fleet_unacked=res["unacked"])
        stats = wait_for(lambda: (s := server.get("/api/v1/ingest/stats").json())["messages"] >= r["offered"] and s,
                         120, "the flood worked through")
        r["over_budget"] = stats["rejected_messages"].get("over_budget", 0)
        r["flood_stored_msgs"] = r["offered"] - r["over_budget"]
    finally:
        stop.value = 1
        server.stop()
        broker.stop()
    return r


def report(r: dict[str, Any]) -> None:
    print(machine_line())
    print(f"fleet: {r['units']} units, one one-sample batch each a minute ({r['units'] / 60:.0f} batches/s); "
          f"flooder: valid 10-sample batches at up to {r['flood_rate']:.0f}/s for {r['flood_s']:.0f} s; default budgets")
    print(f"baseline ({r['baseline_s']:.0f} s): fleet latency publish->acknowledged p50 {r['base_p50'] * 1000:.0f} ms, "
          f"p99 {r['base_p99'] * 1000:.0f} ms, max {r['base_max'] * 1000:.0f} ms over {r['base_n']} samples; "
          f"server CPU {r['base_cpu']:.0f} %, peak RSS {r['base_rss']:.0f} MB")
    flagged = "never" if r["flagged_after_s"] is None else f"{r['flagged_after_s']:.0f} s"
    print(f"flood: offered {r['offered']} messages ({r['offered'] / r['seconds']:.0f}/s); dropped over budget "
          f"{r['over_budget']}, stored {r['flood_stored_msgs']}; flagged (security alert) after {flagged} "
          f"(target <= 300 s: {'PASS' if r['flagged_after_s'] is not None and r['flagged_after_s'] <= 300 else 'FAIL'})")
    ok = r["flood_p99"] <= 2.0 and r["fleet_unacked"] == 0
    print(f"during the flood: fleet latency p50 {r['flood_p50'] * 1000:.0f} ms, p99 {r['flood_p99'] * 1000:.0f} ms, "
          f"max {r['flood_max'] * 1000:.0f} ms over {r['flood_n']} samples; {r['fleet_unacked']} of "
          f"{r['fleet_published']} fleet samples never acknowledged; server CPU {r['flood_cpu']:.0f} %, peak RSS "
          f"{r['flood_rss']:.0f} MB ({(r['flood_rss'] / r['base_rss'] - 1) * 100:+.0f} % vs baseline) "
          f"(target p99 <= 2 s, 0 lost: {'PASS' if ok else 'FAIL'})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=3000)
    p.add_argument("--baseline-seconds", type=float, default=30.0)
    p.add_argument("--flood-seconds", type=float, default=90.0)
    p.add_argument("--flood-rate", type=float, default=1000.0)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        report(run(a.units, a.baseline_seconds, a.flood_seconds, a.flood_rate, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
