"""Fleet scale (issue 7): the server with 50,000 and 200,000 terminals reporting as the real agent does.

    .venv/bin/python -m benchmarks.bench_scale                          # 50k and 200k, 5 min each, ~12 min
    .venv/bin/python -m benchmarks.bench_scale --sizes 200000 --seconds 120 --wave 200000   # the full outage wave

What runs (one broker and one server per fleet size, fresh each time): a real Mosquitto with the generated config,
the real fleet server process on SQLite, and one load-generator process.

* **Registry.** The units are written straight into the server's SQLite schema by
  ``bench_server_api.generate`` (institutions, counties, registry, live state, ``--days`` of hourly roll-ups) so
  every publishing SN is a registered, in-service unit that roll-ups and fleet figures cover. It registers
  N x 20/19 units because it makes every 20th a spare that does not report: N terminals publish.
* **Load.** N terminals, each on its own phase inside the agent's ``batch_interval_s`` (600 s): terminal at position
  p of a shuffled order publishes at p x 600 / N + k x 600, a batch of 10 one-minute samples covering the 10
  minutes before (seq continuing per terminal), QoS 1 on ``pf/<sn>/t``: N / 600 messages/s. Values vary per
  sample (RTT, jitter, CPU, memory, signal, cell, SIM data counter); some terminals have faults: printer out of
  paper, ID-card reader not answering, modem fault, slow network, link down for part of the batch. The broker
  ACL lets a terminal write only under its own SN, so the generator uses bench_ingest's per-connection
  ``loadgen-<i>`` certificates (``topic write pf/+/t``, benchmark broker only), many SNs per connection.
* **Lag.** A further benchmark-only certificate ``loadgen-acks`` may read ``pf/+/a``: the server publishes the
  ``Ack`` for a terminal's batch only after the database commit (ingest/service.py), so the time from the publish
  call to the Ack's arrival is an upper bound of publish -> commit, and exactly what a terminal waits before it
  can delete the batch from its outbox. Every message is stamped at publish and matched to its Ack by
  (SN, first seq); p50/p99/max per window. The backlog in samples (published - ``/healthz``
  ``ingest.samples_stored``) is polled each second as a second view.
* **Sustained ingest.** Samples committed per second from ``/healthz`` over the steady window (after the warm-up,
  to the last publish), against samples offered in the same window.
* **Resources.** CPU (% of one core, averaged over the live window) and peak RSS of the server process, the broker
  and the load generator (psutil); the load average each second.
* **API while ingesting.** After the warm-up, with 10 and then 50 concurrent clients (``bench_server_api.measure``,
  httpx): registry list/filter (50 a page), unit detail, fleet availability by county over whole days of the
  generated roll-ups (several periods, so not every request is the same cached question).
* **Outage wave** (largest size): ``--wave`` terminals come back at once after ``--outage-minutes`` without a
  link, as the agent does it: first each one's newest sample alone (so the server knows it is back), then the
  rest of its backlog in one batch. Everything published as fast as the generator can; measured: how long until
  every newest sample is committed, and until everything is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from benchmarks._harness import machine, machine_line
from benchmarks.bench_ingest import ProcWatch, add_loadgen_acl, stored
from benchmarks.bench_server_api import TZ, generate, measure, midnight
from tests.fleet import Broker, Pki, Server, wait_for

PERIOD = 600  # agent.config batch_interval_s
SAMPLES_PER_BATCH = 10  # a batch every 600 s of one-minute samples
CONNS = 4  # load-generator connections (many SNs each)
ACK_CN = "loadgen-acks"
EPOCH = 1


# --------------------------------------------------------------------------------------------- telemetry
def terminal_batch(sn: str, n: int, epoch: int, seq0: int, ts0: int, count: int, rng: random.Random) -> bytes:
    """An encoded ``Batch`` of ``count`` one-minute samples for terminal number ``n`` (its faults follow from ``n``).

    Samples are ``seq0 ..`` at ``ts0, ts0 + 60, ..``. About 2 % of terminals have the printer out of paper, 1 %
    an ID-card reader that does not answer, 0.5 % a modem fault, 8 % a slow network, 2.5 % lose the link for
    three minutes of each batch (those samples say ``connected=False`` and carry no RTT)."""
    from wire import codec
    from wire.messages import Batch, Check, FsStat, Sample

    printer = Check(1, "paper_out") if n % 50 == 7 else Check(0)
    idcard = Check(1, "no_response") if n % 97 == 3 else Check(0)
    modem = Check(1, "no_sim") if n % 200 == 11 else Check(0)
    slow = n % 12 == 5
    flaky = n % 40 == 9
    base_rtt = 450 if slow else 60 + n % 120
    cell = 10000 + n % 5000
    data0 = (n * 7919) % 200_000_000
    samples = []
    for i in range(count):
        seq, ts = seq0 + i, ts0 + 60 * i
        down = flaky and 3 <= (seq % 10) < 6
        samples.append(Sample(
            seq=seq, ts=ts, connected=not down,
            rtt_ms=None if down else base_rtt + rng.randint(0, 80 if not slow else 500),
            rtt_var_ms=None if down else rng.randint(1, 40 if not slow else 150),
            retrans=rng.randint(0, 3), segs_out=rng.randint(100, 100000), cpu=round(rng.uniform(1, 60), 1),
            load1=round(rng.uniform(0, 2), 2), mem_used_mb=rng.randint(300, 900), mem_avail_mb=rng.randint(500, 1500),
            swap_used_mb=0, fs=[FsStat("/var/lib/posfleet", 7800, 2000 + n % 4000, True)],
            uptime_s=86400 + (ts % 900000),
            checks={"storage": Check(0), "printer": printer, "idcard": idcard, "modem": modem},
            signal_dbm=None if down else rng.randint(-110, -60), csq=None if down else rng.randint(5, 31),
            cell_id=cell, tac=4000 + n % 300, data_bytes=data0 + seq * rng.randint(3000, 6000),
        ))
    return codec.encode(Batch(sn=sn, epoch=epoch, samples=samples))


# --------------------------------------------------------------------------------------------- load generator
def _client(pki_dir: str, cn: str, port: int, client_id: str, inflight: int = 500) -> Any:
    """A paho v5 client with the terminal certificate ``cn`` of the benchmark's PKI (not connected yet)."""
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    d = Path(pki_dir) / "terminals" / cn
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(d / "ca.pem"))
    ctx.load_cert_chain(str(d / "terminal.pem"), str(d / "terminal.key"))
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.tls_set_context(ctx)
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    return c


def loadgen(spec: dict[str, Any], sent_samples: Any, acked_msgs: Any, phase: Any, stop: Any) -> None:
    """Publish the plan in ``spec`` (mode ``live`` or ``wave``); results (lags) as JSON into ``spec['out']``.

    ``phase``: 0 connecting, 1 publishing, 2 published (waiting for Acks until ``stop`` is set), 3 done."""
    from wire import codec, topics
    from wire.messages import Ack

    sns: list[str] = spec["sns"]
    n_term = len(sns)
    rng = random.Random(spec.get("seed", 1))
    lock = threading.Lock()
    pending: dict[tuple[str, int], tuple[float, int]] = {}  # (sn, first seq) -> (publish time, last seq)
    lags: list[tuple[float, float]] = []  # (publish time, lag) in time.time() seconds
    sent_count = [0]
    puback = [0]
    subscribed = threading.Event()

    def on_ack(client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        now = time.time()
        try:
            ack = codec.decode(msg.payload, Ack)
        except codec.DecodeError:
            return
        sn = msg.topic.split("/")[1]
        with lock:
            for lo, hi in ack.ranges:
                q = lo
                while q <= hi:
                    e = pending.pop((sn, q), None)
                    if e is None:
                        q += 1
                        continue
                    lags.append((e[0], now - e[0]))
                    acked_msgs.value += 1
                    q = e[1] + 1

    def on_publish(client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with lock:
            puback[0] += 1

    acks = _client(spec["pki_dir"], ACK_CN, spec["port"], f"{ACK_CN}-{os.getpid()}")
    acks.on_message = on_ack
    acks.on_subscribe = lambda *a: subscribed.set()
    acks.connect("localhost", spec["port"], keepalive=60)
    acks.loop_start()
    acks.subscribe("pf/+/a", qos=0)
    if not subscribed.wait(20):
        raise RuntimeError("ack reader: no SUBACK")
    clients = []
    for i in range(spec["conns"]):
        c = _client(spec["pki_dir"], f"loadgen-{i}", spec["port"], f"loadgen-{i}-{os.getpid()}")
        c.on_publish = on_publish
        c.connect("localhost", spec["port"], keepalive=60)
        c.loop_start()
        clients.append(c)
    wait_for(lambda: all(c.is_connected() for c in clients), 20, "load generator connections")

    def publish(n: int, seq0: int, ts0: int, count: int) -> None:
        sn = sns[n]
        payload = terminal_batch(sn, n, EPOCH, seq0, ts0, count, rng)
        k = sent_count[0]
        with lock:
            pending[(sn, seq0)] = (time.time(), seq0 + count - 1)
        clients[k % len(clients)].publish(topics.topic(sn, topics.TELEMETRY), payload, qos=1)
        sent_count[0] = k + 1
        sent_samples.value += count
        while sent_count[0] - puback[0] > 5000:  # bound paho's queue if the broker falls behind
            time.sleep(0.005)

    behind_max = 0.0
    phase.value = 1
    t0 = time.monotonic()
    t_first = time.time()
    if spec["mode"] == "live":
        period, duration = spec["period"], spec["duration"]
        order = list(range(n_term))
        random.Random(7).shuffle(order)
        k = 0
        while True:
            rnd, p = divmod(k, n_term)
            due = rnd * period + p * period / n_term
            if due >= duration:
                break
            ahead = due - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
            else:
                behind_max = max(behind_max, -ahead)
            now_min = int(time.time()) // 60 * 60
            publish(order[p], rnd * SAMPLES_PER_BATCH + 1, now_min - 60 * SAMPLES_PER_BATCH, SAMPLES_PER_BATCH)
            k += 1
    else:  # wave: everyone back at once; newest sample alone first, then the rest of the outage in one batch
        minutes = spec["outage_minutes"]
        seq_base = 1_000_000
        now_min = int(time.time()) // 60 * 60
        for n in range(n_term):
            publish(n, seq_base + minutes, now_min - 60, 1)
        spec["t_newest_published"] = time.time()
        for n in range(n_term):
            publish(n, seq_base + 1, now_min - 60 * minutes, minutes - 1)
    t_last = time.time()
    phase.value = 2
    deadline = time.monotonic() + spec["ack_wait"]
    while time.monotonic() < deadline and not stop.value:
        with lock:
            if not pending:
                break
        time.sleep(0.2)
    for c in clients:
        c.disconnect()
        c.loop_stop()
    acks.disconnect()
    acks.loop_stop()
    with lock:
        Path(spec["out"]).write_text(json.dumps({
            "sent": sent_count[0], "pubacked": puback[0], "t_first": t_first, "t_last": t_last,
            "t_newest_published": spec.get("t_newest_published", 0.0), "behind_max_s": behind_max,
            "unacked": len(pending), "lags": lags,
        }))
    phase.value = 3


class LoadGen:
    """The generator in its own process (spawned: it must not share the GIL with the measuring side)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self.spec = spec
        self.sent_samples = ctx.Value("q", 0, lock=False)
        self.acked = ctx.Value("q", 0, lock=False)
        self.phase = ctx.Value("i", 0, lock=False)
        self.stop = ctx.Value("i", 0, lock=False)
        self.proc = ctx.Process(target=loadgen, args=(spec, self.sent_samples, self.acked, self.phase, self.stop),
                                daemon=True)

    def start(self) -> LoadGen:
        self.proc.start()
        wait_for(lambda: self.phase.value >= 1 or not self.proc.is_alive(), 60, "the load generator to connect")
        if not self.proc.is_alive() and self.phase.value < 3:
            raise RuntimeError("load generator died while connecting")
        return self

    def result(self, timeout: float, grace: float = 1.0) -> dict[str, Any]:
        """Stop waiting for Acks ``grace`` s from now (they follow the commit at once); the generator's figures."""
        time.sleep(grace)
        self.stop.value = 1
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
            raise RuntimeError("load generator did not finish")
        if self.phase.value != 3:
            raise RuntimeError(f"load generator failed (exit code {self.proc.exitcode})")
        out: dict[str, Any] = json.loads(Path(self.spec["out"]).read_text())
        return out


# --------------------------------------------------------------------------------------------- measuring side
class Poller(threading.Thread):
    """Each second: (time.time(), samples stored per /healthz, samples sent by the generator, load average 1 min)."""

    def __init__(self, server: Server, lg: LoadGen | None = None) -> None:
        super().__init__(daemon=True)
        self.server, self.lg = server, lg
        self.series: list[tuple[float, int, int, float]] = []
        self.stop_evt = threading.Event()

    def run(self) -> None:
        while not self.stop_evt.is_set():
            n = stored(self.server)
            if n >= 0:
                sent = self.lg.sent_samples.value if self.lg else 0
                self.series.append((time.time(), n, sent, os.getloadavg()[0]))
            self.stop_evt.wait(1.0)

    def at(self, t: float) -> tuple[float, int, int, float]:
        """The poll nearest to wall time ``t``."""
        return min(self.series, key=lambda s: abs(s[0] - t))

    def stop(self) -> None:
        self.stop_evt.set()
        self.join(5)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def lag_stats(lags: list[tuple[float, float]], t_from: float = 0.0, t_to: float = float("inf")) -> dict[str, float]:
    xs = [lag for t, lag in lags if t_from <= t < t_to]
    return {"n": len(xs), "p50_s": pct(xs, 0.5), "p99_s": pct(xs, 0.99), "max_s": max(xs, default=float("nan")),
            "mean_s": statistics.fmean(xs) if xs else float("nan")}


def api_requests(g: dict[str, Any], rnd: random.Random, requests: int, avail_requests: int,
                 days: int) -> dict[str, list[tuple[str, dict[str, str]]]]:
    sns: list[str] = g["sns"]
    counties: list[str] = g["counties"]
    lists = []
    for _ in range(requests):
        f = rnd.choice([{"county": rnd.choice(counties)}, {"status": "in_service", "county": rnd.choice(counties)},
                        {"q": f"{rnd.randrange(10000):04d}"}, {"link_type": "wired", "sort": "last_seen"},
                        {"offset": str(rnd.randrange(0, max(1, len(sns) - 50)))}])
        lists.append(("/api/v1/registry/units", {"limit": "50", **f}))
    details = [(f"/api/v1/registry/units/{rnd.choice(sns)}", {}) for _ in range(requests)]
    today = datetime.now(TZ).date()
    fleet = []
    for _ in range(avail_requests):
        a = rnd.randrange(1, days + 1)
        b = rnd.randrange(0, a)
        fleet.append(("/api/v1/availability", {
            "from": datetime.fromtimestamp(midnight(today - timedelta(days=a)), TZ).isoformat(),
            "to": datetime.fromtimestamp(midnight(today - timedelta(days=b)), TZ).isoformat(), "group_by": "county"}))
    return {"list units": lists, "unit detail": details, "fleet availability by county": fleet}


def run_api(base: str, token: str, g: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rnd = random.Random(11)
    for clients in args.clients:
        reqs = api_requests(g, rnd, args.requests * clients // 10, args.avail_requests * clients // 10, args.days)
        for name, paths in reqs.items():
            t = time.time()
            res = asyncio.run(measure(base, token, f"{name}, {clients} clients", paths, clients))
            res["t0"], res["t1"] = t, time.time()
            out[f"{name}|{clients}"] = res
    return out


def setup(pki: Pki, n: int, workdir: Path, args: argparse.Namespace) -> tuple[Broker, Server, dict[str, Any]]:
    broker = Broker(pki, workdir / "broker")
    pki.terminal(ACK_CN)  # first: issuing a certificate rewrites the ACL from the CA's index (decision 011)
    add_loadgen_acl(pki, CONNS)
    acl = pki.dir / "acl"
    acl.write_text(acl.read_text() + f"\n# benchmark lag probe (bench_scale only)\nuser {ACK_CN}\ntopic read pf/+/a\n")
    broker.start()
    # the API phase's concurrent clients share one token and one address: no per-person limits (decision 013)
    unlimited = "" if "[api]" in args.server_extra else "\n[api]\nrate_per_s = 0\naddress_rate_per_s = 0\n"
    server = Server(pki, broker, workdir / "server", extra=args.server_extra + unlimited)
    units = math.ceil(n * 20 / 19)  # every 20th generated unit is a spare that does not report
    t = time.perf_counter()
    g = generate(server.db, units, institutions=max(10, units // 17), days=args.days, raw_units=0, raw_days=0,
                 backlog_units=0, backlog_hours=0, now=int(time.time()))
    g["sns"] = g["sns"][:n]
    g["t_generate"] = time.perf_counter() - t
    g["units"] = units
    server.start()
    return broker, server, g


def live(pki: Pki, broker: Broker, server: Server, g: dict[str, Any], n: int, args: argparse.Namespace,
         workdir: Path) -> dict[str, Any]:
    r: dict[str, Any] = {"terminals": n, "registered": g["units"], "seconds": args.seconds, "period": args.period,
                         "t_generate": g["t_generate"]}
    assert server.proc is not None and broker.proc is not None
    spec = {"mode": "live", "sns": g["sns"], "pki_dir": str(pki.dir), "port": broker.port, "conns": CONNS,
            "period": args.period, "duration": args.seconds, "ack_wait": args.drain_timeout,
            "out": str(workdir / f"live-{n}.json")}
    base_stored = stored(server)
    watches = {"server": ProcWatch(server.proc.pid), "broker": ProcWatch(broker.proc.pid)}
    lg = LoadGen(spec)
    poll = Poller(server, lg)
    poll.start()
    lg.start()
    watches["loadgen"] = ProcWatch(lg.proc.pid)
    t0 = time.time()
    print(f"  {n:,} terminals publishing for {args.seconds:.0f} s ({n / args.period:,.1f} batches/s, "
          f"{n * SAMPLES_PER_BATCH / args.period:,.0f} samples/s)", flush=True)
    time.sleep(max(0.0, args.warmup - (time.time() - t0)))
    r["api"] = run_api(f"http://127.0.0.1:{server.http_port}", g["token"], g, args) if args.clients else {}
    wait_for(lambda: lg.phase.value >= 2, args.seconds + 120, "the generator to finish publishing", interval=0.2)
    t_pub_end = time.time()
    want = lg.sent_samples.value
    try:
        wait_for(lambda: stored(server) - base_stored >= want, args.drain_timeout, "every sample to be stored",
                 interval=0.2)
        r["drained_s"] = time.time() - t_pub_end
    except AssertionError:
        r["drained_s"] = float("nan")
    for name, w in watches.items():
        r[f"{name}_cpu_pct"], r[f"{name}_rss_mb"] = w.stop()
    poll.stop()
    res = lg.result(args.drain_timeout + 60)
    r["server_rss_end_mb"] = psutil.Process(server.proc.pid).memory_info().rss / 2**20
    r["sent_msgs"], r["sent_samples"], r["unacked"] = res["sent"], want, res["unacked"]
    r["stored"] = stored(server) - base_stored
    r["behind_max_s"] = res["behind_max_s"]
    lags = [tuple(x) for x in res["lags"]]
    # steady window: after the warm-up to the last publish
    a, b = poll.at(t0 + args.warmup), poll.at(t_pub_end)
    r["window_s"] = b[0] - a[0]
    r["committed_rate"] = (b[1] - a[1]) / max(1e-9, b[0] - a[0])
    r["offered_rate"] = (b[2] - a[2]) / max(1e-9, b[0] - a[0])
    r["max_backlog_samples"] = max((s - (st - base_stored) for _t, st, s, _l in poll.series), default=0)
    loads = [x[3] for x in poll.series]
    r["load_min"], r["load_max"] = min(loads, default=0), max(loads, default=0)
    r["lag_all"] = lag_stats(lags)
    api_times = [(v["t0"], v["t1"]) for v in r["api"].values()]
    if api_times:
        a0, a1 = min(x[0] for x in api_times), max(x[1] for x in api_times)
        r["lag_before_api"] = lag_stats(lags, 0, a0)
        r["lag_during_api"] = lag_stats(lags, a0, a1)
        r["lag_after_api"] = lag_stats(lags, a1)
        r["api_window_s"] = a1 - a0
        # committed rate with and without the API load (first 10 s left out: connections and first batches)
        for k, (x, y) in {"before": (t0 + 10, a0), "during": (a0, min(a1, t_pub_end))}.items():
            p, q = poll.at(x), poll.at(y)
            r[f"committed_rate_{k}_api"] = (q[1] - p[1]) / max(1e-9, q[0] - p[0])
            r[f"offered_rate_{k}_api"] = (q[2] - p[2]) / max(1e-9, q[0] - p[0])
    r["series"] = [(round(t - t0, 1), st - base_stored, sent, ld) for t, st, sent, ld in poll.series]
    return r


def wave(pki: Pki, broker: Broker, server: Server, g: dict[str, Any], n: int, args: argparse.Namespace,
         workdir: Path) -> dict[str, Any]:
    assert server.proc is not None and broker.proc is not None
    r: dict[str, Any] = {"terminals": n, "outage_minutes": args.outage_minutes}
    spec = {"mode": "wave", "sns": g["sns"][:n], "pki_dir": str(pki.dir), "port": broker.port, "conns": CONNS,
            "outage_minutes": args.outage_minutes, "ack_wait": args.drain_timeout, "out": str(workdir / "wave.json")}
    base = stored(server)
    watches = {"server": ProcWatch(server.proc.pid), "broker": ProcWatch(broker.proc.pid)}
    lg = LoadGen(spec)
    poll = Poller(server, lg)
    poll.start()
    lg.start()
    t0 = time.time()
    print(f"  outage wave: {n:,} terminals back at once after {args.outage_minutes} min: {n:,} newest samples, "
          f"then {n * (args.outage_minutes - 1):,} backlog samples", flush=True)
    wait_for(lambda: lg.phase.value >= 2, args.drain_timeout, "the wave to be published", interval=0.2)
    t_pub = time.time()
    want = n * args.outage_minutes
    try:
        wait_for(lambda: stored(server) - base >= want, args.drain_timeout, "the wave to be stored", interval=0.2)
        r["drained_s"] = time.time() - t0
    except AssertionError:
        r["drained_s"] = float("nan")
    r["published_s"] = t_pub - t0
    for name, w in watches.items():
        r[f"{name}_cpu_pct"], r[f"{name}_rss_mb"] = w.stop()
    poll.stop()
    res = lg.result(args.drain_timeout + 60)
    r["stored"], r["expected"], r["unacked"] = stored(server) - base, want, res["unacked"]
    newest = sorted(x for x in res["lags"] if x[0] < res["t_newest_published"])
    r["newest_published_s"] = res["t_newest_published"] - res["t_first"]
    # every newest sample committed: the last Ack of the first n messages
    r["newest_all_acked_s"] = (max(t + lag for t, lag in newest) - res["t_first"]) if len(newest) == n else float("nan")
    r["lag_newest"] = lag_stats([tuple(x) for x in newest])
    r["lag_all"] = lag_stats([tuple(x) for x in res["lags"]])
    r["rate_samples"] = want / r["drained_s"] if r["drained_s"] == r["drained_s"] else float("nan")
    r["rate_msgs"] = 2 * n / r["drained_s"] if r["drained_s"] == r["drained_s"] else float("nan")
    loads = [x[3] for x in poll.series]
    r["load_max"] = max(loads, default=0)
    return r


# --------------------------------------------------------------------------------------------- report
def _lag(d: dict[str, float]) -> str:
    return f"p50 {d['p50_s']:.2f} s, p99 {d['p99_s']:.2f} s, max {d['max_s']:.2f} s (n={d['n']:,})"


def report_live(r: dict[str, Any]) -> None:
    n = r["terminals"]
    print(f"\n== {n:,} terminals ({r['registered']:,} registered incl. spares; registry + {r.get('days', '?')} days of "
          f"roll-ups generated in {r['t_generate']:.0f} s), {r['seconds']:.0f} s at one batch per terminal every "
          f"{r['period']} s")
    print(f"  offered {r['offered_rate']:,.0f} samples/s, committed {r['committed_rate']:,.0f} samples/s over the "
          f"{r['window_s']:.0f} s steady window; {r['stored']:,} of {r['sent_samples']:,} stored; drained "
          f"{r['drained_s']:.1f} s after the last publish; max backlog {r['max_backlog_samples']:,} samples; "
          f"generator at most {r['behind_max_s']:.2f} s behind schedule; {r['unacked']} messages never acknowledged")
    for k in ("before", "during"):
        if f"committed_rate_{k}_api" in r:
            print(f"  {k} the API load: offered {r[f'offered_rate_{k}_api']:,.0f} samples/s, committed "
                  f"{r[f'committed_rate_{k}_api']:,.0f} samples/s")
    print(f"  lag publish -> Ack (after commit): all {_lag(r['lag_all'])}")
    for k in ("before", "during", "after"):
        if f"lag_{k}_api" in r:
            print(f"    {k} the API load: {_lag(r[f'lag_{k}_api'])}")
    print(f"  server CPU {r['server_cpu_pct']:.0f} % of one core, peak RSS {r['server_rss_mb']:.0f} MB "
          f"(end {r['server_rss_end_mb']:.0f} MB); broker CPU {r['broker_cpu_pct']:.0f} %, peak RSS "
          f"{r['broker_rss_mb']:.0f} MB; generator CPU {r['loadgen_cpu_pct']:.0f} %; load average "
          f"{r['load_min']:.1f}-{r['load_max']:.1f}")
    for key, v in r["api"].items():
        name, clients = key.split("|")
        print(f"  API {name}, {clients} clients: p50 {v['p50_ms']:.0f} ms, p99 {v['p99_ms']:.0f} ms, "
              f"max {v['max_ms']:.0f} ms, {v['rps']:.1f} req/s, {v['errors']} errors (n={v['n']})")


def report_wave(r: dict[str, Any]) -> None:
    print(f"\n== outage wave: {r['terminals']:,} terminals back at once after {r['outage_minutes']} min")
    print(f"  every newest sample published after {r['newest_published_s']:.1f} s, all committed (Ack) after "
          f"{r['newest_all_acked_s']:.1f} s; newest-sample lag {_lag(r['lag_newest'])}")
    print(f"  everything ({r['expected']:,} samples, {2 * r['terminals']:,} messages) published in "
          f"{r['published_s']:.1f} s, stored after {r['drained_s']:.1f} s = {r['rate_samples']:,.0f} samples/s, "
          f"{r['rate_msgs']:,.0f} messages/s; {r['stored']:,} of {r['expected']:,} stored, {r['unacked']} unacked")
    print(f"  server CPU {r['server_cpu_pct']:.0f} %, peak RSS {r['server_rss_mb']:.0f} MB; broker CPU "
          f"{r['broker_cpu_pct']:.0f} %, peak RSS {r['broker_rss_mb']:.0f} MB; load average up to {r['load_max']:.1f}")


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine(), "args": {k: v for k, v in vars(args).items() if k != "json"},
                           "live": [], "wave": None}
    pki = Pki(workdir / "pki")
    biggest = max(args.sizes)
    for n in args.sizes:
        d = workdir / f"n{n}"
        print(f"{machine_line()}\nsetting up {n:,} terminals ...", flush=True)
        broker, server, g = setup(pki, n, d, args)
        try:
            if args.seconds > 0:
                r = live(pki, broker, server, g, n, args, d)
                r["days"] = args.days
                report_live(r)
                out["live"].append(r)
            if n == biggest and args.wave:
                w = wave(pki, broker, server, g, min(args.wave, n), args, d)
                report_wave(w)
                out["wave"] = w
        finally:
            server.stop()
            broker.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50000,200000", help="fleet sizes, comma-separated (default 50000,200000)")
    p.add_argument("--seconds", type=float, default=300.0, help="live run per size, real seconds (default 300)")
    p.add_argument("--period", type=float, default=PERIOD, help="seconds between a terminal's batches (default 600)")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the API load and the steady window")
    p.add_argument("--clients", default="10,50", help="API concurrency levels (empty: no API load)")
    p.add_argument("--requests", type=int, default=30, help="list/detail requests per 10 clients (default 30)")
    p.add_argument("--avail-requests", type=int, default=5, help="availability requests per 10 clients")
    p.add_argument("--days", type=int, default=7, help="days of generated roll-ups (default 7)")
    p.add_argument("--wave", type=int, default=20000, help="terminals in the outage wave, at the largest size "
                   "(default 20000; 0: none)")
    p.add_argument("--outage-minutes", type=int, default=10, help="outage length: samples per terminal in the wave")
    p.add_argument("--drain-timeout", type=float, default=300.0)
    p.add_argument("--server-extra", default="", help="extra server TOML (e.g. '[alerts]\\nenabled = false')")
    p.add_argument("--json", default="", help="write every figure to this JSON file")
    a = p.parse_args(argv)
    a.sizes = [int(x) for x in a.sizes.split(",") if x]
    a.clients = [int(x) for x in a.clients.split(",") if x]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        t = time.perf_counter()
        res = run(a, Path(tmp))
        res["total_s"] = time.perf_counter() - t
        print(f"\ntotal {res['total_s']:.0f} s; {machine_line()}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
