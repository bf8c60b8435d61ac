"""Server ingest (issue 2): samples per second from the broker into storage, nothing lost.

What runs: a real Mosquitto with the generated config plus a benchmark-only ACL addition,
the real fleet server process (SQLite storage), and a load generator process publishing
realistic telemetry: ``wire.codec.encode(Batch)`` with 10 samples each, spread over N
terminal SNs, QoS 1, over mutual TLS.

The broker ACL lets a terminal publish only under its own SN, so the load generator cannot
use terminal certificates for many SNs. Instead it gets one certificate per connection
(CN ``loadgen-<i>``, issued by the same fleet CA) and the benchmark broker's ACL gets, for
each, ``user loadgen-<i>`` / ``topic write pf/+/t``. Nothing else differs from production.

Phases (one invocation):

1. **paho ceiling** - the server is stopped (its persistent session queues), a bare paho
   subscriber with the server's certificate and its own persistent session on ``pf/+/t``
   is offline too; M batches are published; then the bare subscriber alone drains its
   queue: messages/s that one paho client can take in on this machine.
2. **server backlog drain + restart** - the server starts with the same M batches queued
   for it; its committed rate is read from /healthz; half-way it is killed with SIGKILL and
   started again; at the end the database must hold exactly M x 10 samples.
3. **live** - the server runs while the generator publishes at a fixed rate (default 600
   batches/s = 6,000 samples/s) for D seconds: committed rate, backlog (lag), server CPU
   and RSS.

    .venv/bin/python -m benchmarks.bench_ingest                      # ~2 min
    .venv/bin/python -m benchmarks.bench_ingest --batches 60000 --live-seconds 120 --rate 800
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import signal
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks._harness import machine_line
from tests.fleet import Broker, Pki, Server, wait_for

TARGET = 5000.0  # samples/s
SAMPLES_PER_BATCH = 10
LOADGEN_CONNS = 2


# --------------------------------------------------------------------------- load generator
def make_batch(sn: str, epoch: int, seq0: int, ts0: int, rng: random.Random) -> bytes:
    from wire import codec
    from wire.messages import Batch, Check, FsStat, Sample

    samples = [
        Sample(
            seq=seq0 + i, ts=ts0 + 60 * i, rtt_ms=rng.randint(40, 400), rtt_var_ms=rng.randint(1, 40),
            retrans=rng.randint(0, 3), segs_out=rng.randint(100, 100000), cpu=round(rng.uniform(1, 60), 1),
            load1=round(rng.uniform(0, 2), 2), mem_used_mb=rng.randint(300, 900), mem_avail_mb=rng.randint(500, 1500),
            swap_used_mb=0, fs=[FsStat("/var/lib/posfleet", 7800, rng.randint(1000, 6000), True)],
            uptime_s=rng.randint(1000, 900000),
            checks={"storage": Check(0), "printer": Check(0), "idcard": Check(0), "modem": Check(0)},
            signal_dbm=rng.randint(-110, -60), csq=rng.randint(5, 31),
        )
        for i in range(SAMPLES_PER_BATCH)
    ]
    return codec.encode(Batch(sn=sn, epoch=epoch, samples=samples))


def loadgen(pki_dir: str, port: int, conns: int, batches: int, rate: float, terminals: int, epoch: int,
            published: Any, done: Any, started: Any) -> None:
    """Publish ``batches`` telemetry batches (QoS 1) at ``rate`` per second (0: as fast as possible).

    ``published`` counts batches the broker acknowledged (PUBACK)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from wire import topics

    rng = random.Random(epoch)
    now = int(time.time()) // 60 * 60
    ts0 = now - 86400  # a day ago: well inside the server's "not from the future" rule
    clients = []
    lock = threading.Lock()

    def on_publish(client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with lock:
            published.value += 1

    for i in range(conns):
        d = Path(pki_dir) / "terminals" / f"loadgen-{i}"
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(d / "ca.pem"))
        ctx.load_cert_chain(str(d / "terminal.pem"), str(d / "terminal.key"))
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"loadgen-{i}-{epoch}", protocol=mqtt.MQTTv5)
        c.tls_set_context(ctx)
        c.max_inflight_messages_set(500)
        c.max_queued_messages_set(0)
        c.on_publish = on_publish
        c.connect("localhost", port, keepalive=60)
        c.loop_start()
        clients.append(c)
    # payloads for one round over the terminals are made up front, then re-stamped per round
    per_round = [make_batch(f"HN{n:08d}", epoch, 0, ts0, rng) for n in range(min(terminals, 200))]
    from wire import codec
    from wire.messages import Batch

    t0 = time.monotonic()
    started.value = time.time()
    infos = []
    for k in range(batches):
        n = k % terminals
        rnd = k // terminals
        template = codec.decode(per_round[n % len(per_round)], Batch)
        template.sn = f"HN{n:08d}"
        for j, s in enumerate(template.samples):
            s.seq = rnd * SAMPLES_PER_BATCH + j + 1
            s.ts = ts0 + 60 * (rnd * SAMPLES_PER_BATCH + j) % 86400
        payload = codec.encode(template)
        infos.append(clients[k % conns].publish(topics.topic(template.sn, topics.TELEMETRY), payload, qos=1))
        if rate:
            ahead = (k + 1) / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        while k - published.value > 2000:  # do not let paho's queue grow without bound
            time.sleep(0.005)
    for info in infos:
        info.wait_for_publish(60)
    for c in clients:
        c.disconnect()
        c.loop_stop()
    done.value = 1


class LoadGen:
    def __init__(self, pki: Pki, port: int, batches: int, rate: float, terminals: int, epoch: int) -> None:
        ctx = mp.get_context("spawn")
        self.published = ctx.Value("q", 0)
        self.done = ctx.Value("i", 0)
        self.started = ctx.Value("d", 0.0)
        self.proc = ctx.Process(target=loadgen, args=(str(pki.dir), port, LOADGEN_CONNS, batches, rate, terminals,
                                                      epoch, self.published, self.done, self.started),
                               daemon=True)

    def start(self) -> LoadGen:
        self.proc.start()
        return self

    def wait(self, timeout: float) -> None:
        self.proc.join(timeout)
        if self.proc.is_alive() or not self.done.value:
            self.proc.kill()
            raise RuntimeError("load generator did not finish")


# --------------------------------------------------------------------------- bare subscriber
class BareSubscriber:
    """A plain paho v5 subscriber (a server identity of its own, ``posfleet-server-bench``: the broker names
    sessions after the certificate, so the server's own would share the server's session; decision 011)."""

    def __init__(self, pki: Pki, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.pki, self.port = pki, port
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.dir / "ca.pem"))
        ctx.load_cert_chain(str(pki.dir / "server-client-bench.pem"), str(pki.dir / "server-client-bench.key"))
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="posfleet-server-bench", protocol=mqtt.MQTTv5)
        self.client.tls_set_context(ctx)
        self.client.max_inflight_messages_set(2000)
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        now = time.monotonic()
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now

    def connect(self, subscribe: bool, expiry: int = 3600) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry
        props.ReceiveMaximum = 2000
        self.client.connect("localhost", self.port, keepalive=60, clean_start=not subscribe and expiry == 0,
                            properties=props)
        self.client.loop_start()
        if subscribe:
            self.client.subscribe("pf/+/t", qos=1)
            if not self.subscribed.wait(10):
                raise RuntimeError("bare subscriber: no SUBACK")

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --------------------------------------------------------------------------- helpers
def db_count(server: Server) -> int:
    """Samples in the server's database (its SQLite file, or PostgreSQL with --storage postgresql)."""
    from tests.backend import db_count as count

    return count(server.storage_url, "SELECT count(*) FROM samples")


def stored(server: Server) -> int:
    try:
        return int(server.get("/healthz").json()["ingest"]["samples_stored"])
    except Exception:  # noqa: BLE001 - a server being killed answers nothing; the caller polls again
        return -1


def add_loadgen_acl(pki: Pki, conns: int) -> None:
    for i in range(conns):  # first: issuing a certificate rewrites the ACL from the CA's index (decision 011)
        pki.terminal(f"loadgen-{i}")
    acl = pki.dir / "acl"
    extra = "".join(f"\n# benchmark load generator (bench_ingest only)\nuser loadgen-{i}\ntopic write pf/+/t\n"
                    for i in range(conns))
    acl.write_text(acl.read_text() + extra)


class ProcWatch:
    """CPU % of one core and peak RSS of a process (and its children) over a window."""

    def __init__(self, pid: int) -> None:
        self.p = psutil.Process(pid)
        self.rss_max = 0
        self._stop = threading.Event()
        self.cpu0 = self._cpu()
        self.t0 = time.monotonic()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _procs(self) -> list[psutil.Process]:
        try:
            return [self.p, *self.p.children(recursive=True)]
        except psutil.Error:
            return []

    def _cpu(self) -> float:
        total = 0.0
        for q in self._procs():
            try:
                t = q.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            rss = 0
            for q in self._procs():
                try:
                    rss += q.memory_info().rss
                except psutil.Error:
                    pass
            self.rss_max = max(self.rss_max, rss)

    def stop(self) -> tuple[float, float]:
        """(CPU % of one core, peak RSS MB)."""
        cpu = self._cpu() - self.cpu0
        wall = time.monotonic() - self.t0
        self._stop.set()
        self._t.join(2)
        return 100.0 * cpu / wall, self.rss_max / 2**20


# --------------------------------------------------------------------------- phases
def run(batches: int, terminals: int, rate: float, live_seconds: float, workdir: Path,
        storage_url: str | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"batches": batches, "terminals": terminals, "rate": rate, "live_seconds": live_seconds,
                         "storage": (storage_url or "sqlite").split(":")[0]}
    pki = Pki(workdir / "pki")
    broker = Broker(pki, workdir / "broker")
    pki.ca.issue_server_client(name="posfleet-server-bench")  # rewrites the ACL: before the loadgen lines
    add_loadgen_acl(pki, LOADGEN_CONNS)
    broker.start()
    server = Server(pki, broker, workdir / "server", storage=storage_url)
    sub = BareSubscriber(pki, broker.port)
    try:
        server.start()  # creates its persistent shared-subscription session at the broker
        server.stop()
        sub.connect(subscribe=True)
        sub.disconnect()

        # phase 1: the same backlog queued for both; the bare subscriber drains alone
        print(f"  publishing {batches} batches ({batches * SAMPLES_PER_BATCH} samples) while nobody listens", flush=True)
        t = time.monotonic()
        lg = LoadGen(pki, broker.port, batches, 0, terminals, epoch=1).start()
        lg.wait(600)
        r["publish_rate_msgs"] = batches / (time.monotonic() - t)
        sub.connect(subscribe=False)
        wait_for(lambda: sub.count >= batches, 300, "the bare subscriber to drain", interval=0.1)
        sub.disconnect()
        r["paho_ceiling_msgs"] = (sub.count - 1) / max(1e-9, sub.last - sub.first)
        sub.connect(subscribe=False, expiry=0)  # clean start: drop its session so it costs nothing later
        sub.disconnect()
        print(f"  paho subscriber drained {sub.count} messages at {r['paho_ceiling_msgs']:,.0f}/s", flush=True)

        # phase 2: the server drains the same backlog; SIGKILL half-way; nothing lost
        total = batches * SAMPLES_PER_BATCH
        server.start()
        assert server.proc is not None
        watch = ProcWatch(server.proc.pid)
        t_first = t_kill = 0.0
        n_first = n_kill = 0
        while True:
            n = stored(server)
            if n > 0 and not t_first:
                t_first, n_first = time.monotonic(), n
            if n >= total // 2:
                t_kill, n_kill = time.monotonic(), n
                break
            time.sleep(0.1)
        r["drain_cpu_pct"], r["drain_rss_mb"] = watch.stop()
        r["drain_rate"] = (n_kill - n_first) / max(1e-9, t_kill - t_first)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        in_db_at_kill = db_count(server)
        print(f"  server committed {r['drain_rate']:,.0f} samples/s from the backlog; SIGKILL at {in_db_at_kill} stored",
              flush=True)
        t_restart = time.monotonic()
        server.start()
        wait_for(lambda: db_count(server) >= total, 300, "the restarted server to store everything", interval=0.5)
        time.sleep(2.0)  # anything redelivered twice has had time to arrive
        r["restart_catch_up_s"] = time.monotonic() - t_restart
        r["stored_after_restart"] = db_count(server)
        r["expected"] = total
        r["duplicates_after_restart"] = server.get("/healthz").json()["ingest"]["duplicates"]

        # phase 3: live at a fixed rate
        base = stored(server)
        watch = ProcWatch(server.proc.pid)
        lg = LoadGen(pki, broker.port, int(rate * live_seconds), rate, terminals, epoch=2).start()
        t0 = time.monotonic()
        series: list[tuple[float, int, int]] = []
        while lg.proc.is_alive():
            n = stored(server)
            if n >= 0:
                series.append((time.monotonic() - t0, lg.published.value * SAMPLES_PER_BATCH, n - base))
            time.sleep(0.5)
        lg.wait(60)
        t_pub_end = time.monotonic() - t0
        t_pub = time.time() - lg.started.value  # from the generator's first publish
        want = int(rate * live_seconds) * SAMPLES_PER_BATCH
        wait_for(lambda: stored(server) - base >= want, 300, "the live load to be stored", interval=0.2)
        t_all = time.monotonic() - t0
        r["live_cpu_pct"], r["live_rss_mb"] = watch.stop()
        t_lead = t_pub_end - t_pub  # process start-up before the first publish
        r["live_published_rate"] = want / t_pub
        r["live_committed_rate"] = want / (t_all - t_lead)
        r["live_max_lag_samples"] = max((p - s for _t, p, s in series), default=0)
        r["live_drain_after_publish_s"] = t_all - t_pub_end
        r["live_stored"] = stored(server) - base
        r["live_expected"] = want
        r["total_in_db"] = db_count(server)
    finally:
        server.stop()
        broker.stop()
    return r


def drain_with(n_servers: int, batches: int, terminals: int, workdir: Path, storage_url: str) -> dict[str, Any]:
    """Issue 15: the same queued backlog drained by ``n_servers`` server processes on one PostgreSQL (a shared
    subscription in one secret group, each its own identity): samples/s committed by all, and server CPU a
    sample (PostgreSQL's own processes not counted)."""
    import secrets

    pki = Pki(workdir / "pki")
    broker = Broker(pki, workdir / "broker")
    names = [f"posfleet-server-b{i}" for i in range(n_servers)]
    for name in names:
        pki.ca.issue_server_client(name=name)
    add_loadgen_acl(pki, LOADGEN_CONNS)
    broker.start()
    group = secrets.token_hex(16)
    servers = []
    for i, name in enumerate(names):
        s = Server(pki, broker, workdir / f"server{i}", storage=storage_url)
        short = name.removeprefix("posfleet-server-")
        s.config.write_text(s.config.read_text()
                            .replace("[storage]", f'share_group = "{group}"\nsession_expiry_s = 600\n[storage]')
                            .replace(str(pki.dir / "server-client.pem"), str(pki.dir / f"server-client-{short}.pem"))
                            .replace(str(pki.dir / "server-client.key"), str(pki.dir / f"server-client-{short}.key")))
        servers.append(s)
    r: dict[str, Any] = {"servers": n_servers, "batches": batches}
    try:
        for s in servers:  # each leaves its session (and its share of the group) at the broker
            s.start()
            s.stop()
        LoadGen(pki, broker.port, batches, 0, terminals, epoch=1).start().wait(600)
        for s in servers:
            s.start()
        watches = [ProcWatch(s.proc.pid) for s in servers if s.proc is not None]
        total = batches * SAMPLES_PER_BATCH
        t_first = 0.0
        n_first = 0
        while True:
            n = sum(max(0, stored(s)) for s in servers)
            if n > 0 and not t_first:
                t_first, n_first = time.monotonic(), n
            if n >= total * 0.9:
                break
            time.sleep(0.1)
        dt = time.monotonic() - t_first
        cpu = [w.stop() for w in watches]
        r["rate"] = (n - n_first) / max(1e-9, dt)
        r["cpu_pct"] = sum(c for c, _ in cpu)
        r["cpu_us_per_sample"] = r["cpu_pct"] / 100 * dt / max(1, n - n_first) * 1e6
        r["shares"] = [stored(s) for s in servers]
    finally:
        for s in servers:
            s.stop()
        broker.stop()
    return r


def report(r: dict[str, Any]) -> None:
    print(machine_line())
    print(f"storage: {r['storage']} (load average now {os.getloadavg()[0]:.2f}: the 2 cores are shared)")
    print(f"load: {r['batches']} batches x {SAMPLES_PER_BATCH} samples over {r['terminals']} terminal SNs, "
          f"{LOADGEN_CONNS} load-generator connections, QoS 1, mutual TLS; publisher reached "
          f"{r['publish_rate_msgs']:,.0f} batches/s")
    print(f"paho subscriber ceiling (bare client, drain of a queued backlog): {r['paho_ceiling_msgs']:,.0f} messages/s "
          f"= {r['paho_ceiling_msgs'] * SAMPLES_PER_BATCH:,.0f} samples/s at {SAMPLES_PER_BATCH} per batch")
    ok = r["drain_rate"] >= TARGET
    print(f"server backlog drain: {r['drain_rate']:,.0f} samples/s committed "
          f"({r['drain_rate'] / SAMPLES_PER_BATCH:,.0f} messages/s), server CPU {r['drain_cpu_pct']:.0f} % of one core, "
          f"peak RSS {r['drain_rss_mb']:.0f} MB (target >= {TARGET:,.0f} samples/s: {'PASS' if ok else 'FAIL'})")
    lost = r["expected"] - r["stored_after_restart"]
    print(f"SIGKILL half-way + restart: {r['stored_after_restart']} stored of {r['expected']} published "
          f"({'none lost' if lost == 0 else f'{lost} LOST'}), {r['duplicates_after_restart']} redelivered duplicates "
          f"ignored, caught up {r['restart_catch_up_s']:.1f} s after the restart")
    ok_live = r["live_committed_rate"] >= min(TARGET, r["live_published_rate"]) * 0.95
    print(f"live at {r['rate'] * SAMPLES_PER_BATCH:,.0f} samples/s offered for {r['live_seconds']:.0f} s: published "
          f"{r['live_published_rate']:,.0f}/s, committed {r['live_committed_rate']:,.0f}/s end to end, max lag "
          f"{r['live_max_lag_samples']:,} samples, drained {r['live_drain_after_publish_s']:.1f} s after the last "
          f"publish; server CPU {r['live_cpu_pct']:.0f} %, peak RSS {r['live_rss_mb']:.0f} MB; "
          f"{r['live_stored']} of {r['live_expected']} stored ({'PASS' if ok_live else 'FAIL'})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=20000, help="backlog size in batches for phases 1-2 (default 20000)")
    p.add_argument("--terminals", type=int, default=3000, help="distinct terminal SNs (default 3000)")
    p.add_argument("--rate", type=float, default=600.0, help="live phase: batches per second (default 600)")
    p.add_argument("--live-seconds", type=float, default=30.0, help="live phase length (default 30)")
    p.add_argument("--storage", choices=("sqlite", "postgresql"), default="sqlite",
                   help="the server's backend (postgresql: a cluster of the benchmark's own, fsync on)")
    p.add_argument("--compare-processes", action="store_true",
                   help="PostgreSQL: drain the backlog with one server process, then with two (issue 15)")
    a = p.parse_args(argv)
    if a.compare_processes:
        from simulator.postgres import Postgres

        print(machine_line())
        for n in (1, 2):
            with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp, \
                    Postgres(settings={"shared_buffers": "512MB"}) as pg:
                r = drain_with(n, a.batches, a.terminals, Path(tmp), pg.create("bench"))
            print(f"{n} server process(es) on PostgreSQL: {r['rate']:,.0f} samples/s committed, server CPU "
                  f"{r['cpu_pct']:.0f} % of one core, {r['cpu_us_per_sample']:.0f} us of server CPU a sample, "
                  f"shares {r['shares']} (load average {os.getloadavg()[0]:.2f})", flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        if a.storage == "postgresql":
            from simulator.postgres import Postgres

            with Postgres(settings={"shared_buffers": "512MB"}) as pg:
                report(run(a.batches, a.terminals, a.rate, a.live_seconds, Path(tmp), pg.create("bench")))
        else:
            report(run(a.batches, a.terminals, a.rate, a.live_seconds, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
