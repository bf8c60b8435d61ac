"""Fleet scale (issue 7): the server with 50,000 and 200,000 terminals reporting as the real agent does.

    .venv/bin/python -m benchmarks.bench_scale                          # 50k and 200k, 5 min each, on SQLite
    .venv/bin/python -m benchmarks.bench_scale --sizes 200000 --clients 50 --storage sqlite,postgresql  # issue 15
    .venv/bin/python -m benchmarks.bench_scale --sizes 200000 --seconds 120 --wave 200000   # the full outage wave

What runs (one broker and one server per fleet size and backend, fresh each time): a real Mosquitto with the
generated config, the real fleet server process on SQLite or PostgreSQL (``--storage``, both in one run: a cluster
of the benchmark's own, a new database per size), and one load-generator process.

* **Registry.** The units are written into the server's schema by ``bench_server_api.generate`` (institutions,
  counties, registry, live state, ``--days`` of hourly roll-ups: by default enough to cover the last whole
  quarter) so every publishing SN is a registered, in-service unit that roll-ups and fleet figures cover; on
  PostgreSQL the same rows are generated into a scratch SQLite file and copied in (``copy_generated``). It
  registers N x 20/19 units because it makes every 20th a spare that does not report: N terminals publish.
* **Drill-down data.** ``--drill-units`` units send their last ``--drill-days`` whole days as a backlog through
  MQTT before the live run, as agents do after an outage; the server stores them late and its roll-up pass
  recounts those hours and stores their slot codes, which is what a drill-down into a past day reads.
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
* **API while ingesting.** After the warm-up, with 10 and then 50 concurrent clients (``bench_server_api.measure``;
  its lean keep-alive client by default, ``--client httpx`` for httpx, whose ~5 ms of CPU a request on the same two
  cores was taken from the server), one call type after another, each reported with p50/p99: registry list/filter (50 a page), unit detail,
  drill-down (a drilled unit's minutes of one of its past days), fleet availability by county over whole days of
  the generated roll-ups (several periods, so not every request is the same cached question), and the last whole
  quarter's fleet availability by county (the same question from every client, as dashboards ask it).
* **PostgreSQL's CPU.** With PostgreSQL, its processes' CPU and RSS are reported beside the server's (SQLite's
  work is inside the server process).
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
import queue
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

import benchmarks.bench_server_api as api_bench
from benchmarks._harness import machine, machine_line
from benchmarks.bench_ingest import ProcWatch, add_loadgen_acl, stored
from benchmarks.bench_server_api import TZ, copy_generated, generate, last_quarter, measure, midnight
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
    pending: dict[tuple[str, int], tuple[float, int, int]] = {}  # (sn, first seq) -> (publish time, last seq, n)
    ready: queue.SimpleQueue[int] = queue.SimpleQueue()  # backlog mode: a terminal whose window has room again
    backlog = spec["mode"] == "backlog"
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
                    if backlog:
                        ready.put(e[2])
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

    def publish(n: int, seq0: int, ts0: int, count: int, epoch: int = EPOCH, r: random.Random = rng) -> None:
        sn = sns[n]
        payload = terminal_batch(sn, n, epoch, seq0, ts0, count, r)
        k = sent_count[0]
        with lock:
            pending[(sn, seq0)] = (time.time(), seq0 + count - 1, n)
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
    elif backlog:
        # every terminal back after an outage, as the agent sends its outbox: the newest sample alone first (the
        # server knows it is back), then the rest oldest first in batches of link.max_batch, at most ``window``
        # batches unacknowledged per terminal (the agent's max_batch x 4 in flight). Values from a generator per
        # (terminal, first seq): the same backlog whichever server receives it. No resends: a batch still
        # unacknowledged at the end is counted, not sent again.
        count, start, size, epoch = spec["count"], spec["start"], spec["batch"], spec["epoch"]

        def own(n: int, seq0: int) -> random.Random:
            return random.Random(n * 1_000_003 + seq0)

        for n in range(n_term):
            publish(n, count, start + 60 * (count - 1), 1, epoch, own(n, count))
        spec["t_newest_published"] = time.time()
        for _ in range(spec["window"] - 1):
            for n in range(n_term):
                ready.put(n)
        nxt = [1] * n_term
        left = n_term if count > 1 else 0
        while left and not stop.value:
            try:
                n = ready.get(timeout=1.0)
            except queue.Empty:
                continue
            if nxt[n] >= count:
                continue
            c = min(size, count - nxt[n])
            publish(n, nxt[n], start + 60 * (nxt[n] - 1), c, epoch, own(n, nxt[n]))
            nxt[n] += c
            if nxt[n] >= count:
                left -= 1
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


def api_requests(g: dict[str, Any], rnd: random.Random, requests: int, avail_requests: int, quarter_requests: int,
                 days: int) -> dict[str, list[tuple[str, dict[str, str]]]]:
    sns: list[str] = g["sns"]
    counties: list[str] = g["counties"]
    lists = [("/api/v1/registry/units", f) for f in api_bench.registry_mix(rnd, requests, len(sns), counties)]
    details = [(f"/api/v1/registry/units/{rnd.choice(sns)}", {}) for _ in range(requests)]
    out = {"list units": lists, "unit detail": details}
    if g.get("drill"):  # a unit's minutes of a day that is over (its slot codes, stored by the roll-up pass)
        out["drill-down"] = [(f"/api/v1/units/{rnd.choice(g['drill'])}/slots", {"date": rnd.choice(g["drill_dates"])})
                             for _ in range(requests)]
    today = datetime.fromtimestamp(g["now"], TZ).date()
    fleet = []
    for _ in range(avail_requests):
        a = rnd.randrange(1, days + 1)
        b = rnd.randrange(0, a)
        fleet.append(("/api/v1/availability", {
            "from": datetime.fromtimestamp(midnight(today - timedelta(days=a)), TZ).isoformat(),
            "to": datetime.fromtimestamp(midnight(today - timedelta(days=b)), TZ).isoformat(), "group_by": "county"}))
    out["fleet availability by county"] = fleet
    if quarter_requests:  # the last whole quarter: one question every dashboard asks (shared, then cached)
        q_from, q_to = last_quarter(g["now"])
        out["fleet quarter by county"] = [("/api/v1/availability", {"from": q_from, "to": q_to, "group_by": "county"})
                                          for _ in range(quarter_requests)]
    return out


def quarter_days(now: int) -> int:
    """Days of roll-ups before ``now``'s day that cover the last whole quarter (the quarter's figures read them)."""
    q_from = datetime.fromisoformat(last_quarter(now)[0]).date()
    return (datetime.fromtimestamp(now, TZ).date() - q_from).days


def run_api(base: str, token: str, g: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rnd = random.Random(11)
    for clients in args.clients:
        reqs = api_requests(g, rnd, args.requests * clients // 10, args.avail_requests * clients // 10,
                            args.quarter_requests * clients // 10, args.days)
        for name, paths in reqs.items():
            if not paths:  # (a call type asked 0 times: --avail-requests 0)
                continue
            t = time.time()
            res = asyncio.run(measure(base, token, f"{name}, {clients} clients", paths, clients))
            res["t0"], res["t1"] = t, time.time()
            out[f"{name}|{clients}"] = res
    return out


def cpu_of(pid: int | None) -> float:
    """User + system CPU seconds of a process and its children so far (0.0 without a process)."""
    if not pid:
        return 0.0
    total = 0.0
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        return 0.0
    for q in procs:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def rollup_status(server: Server) -> dict[str, Any] | None:
    """The server's roll-up job (``/api/v1/availability/status``: pending unit-hours, recounts), or None."""
    try:
        r = server.get("/api/v1/availability/status")
        return r.json() if r.status_code == 200 else None  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - a busy server may not answer within the client's timeout: asked again
        return None


def _epoch(v: Any) -> float | None:
    """A time in an API answer (epoch seconds or ISO 8601) as epoch seconds."""
    if v is None or v == "":
        return None
    return float(v) if isinstance(v, int | float) else datetime.fromisoformat(v).timestamp()


def api_workers(server_extra: str) -> int:
    """``[http] api_workers`` as ``--server-extra`` sets it (1 when it does not)."""
    import re

    m = re.search(r"^\s*api_workers\s*=\s*(\d+)", server_extra, re.M)
    return int(m.group(1)) if m else 1


def meta_value(url: str, key: str) -> str | None:
    """One value of the server's ``meta`` table, read straight from its database (a benchmark's read, both
    backends), or None."""
    if url.startswith("sqlite:///"):
        import sqlite3

        con = sqlite3.connect(f"file:{url[len('sqlite:///'):]}?mode=ro", uri=True, timeout=10)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        finally:
            con.close()
        return None if row is None else str(row[0])
    import subprocess

    from simulator.postgres import pg_bindir

    quoted = "'" + key.replace("'", "''") + "'"  # (psql does not put variables into a -c command)
    out = subprocess.run([str(pg_bindir() / "psql"), "-X", "-A", "-t", "-d", url, "-c",
                          f"SELECT value FROM meta WHERE key = {quoted}"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"reading meta {key}: {out.stderr.strip()}")
    return out.stdout.strip() or None


def recount_state(server: Server, workers: bool = False) -> tuple[Any, ...] | None:
    """(settled, what was read) where settled means every hour the commits marked is recounted: none left in the
    ``recount_queue`` the samples' commits wrote (a benchmark's read of the table, both backends), and

    * one server process (``workers`` false): no unit-hour, service-level day or outage hour pending in
      ``/api/v1/availability/status``, and the
      last roll-up pass that recounted anything started after the last commit (``last_recount_at`` is when a pass
      started, and is set when it ends);
    * a primary with API workers (who answer the API, with their own roll-up state): the primary's pending hours
      as it publishes them every second in ``meta`` (``PENDING_KEY``) are none.
    """
    from server.storage.base import PENDING_KEY
    from tests.backend import db_count

    try:
        ingest = server.get("/healthz").json()["ingest"]
    except Exception:  # noqa: BLE001 - asked again at the next poll
        return None
    commit = _epoch(ingest.get("last_commit"))
    if workers:
        pending = meta_value(server.storage_url, PENDING_KEY)
        figures: tuple[Any, ...] = (pending, commit)
        settled = pending == "[]"
    else:
        st = rollup_status(server)
        if st is None:
            return None
        figures = (st["pending_unit_hours"], st.get("recounts"), st.get("hours_recounted"), st.get("last_recount_at"),
                   commit)
        started = _epoch(st.get("last_recount_at"))
        settled = (not st["pending_unit_hours"] and not st.get("pending_sla_unit_days")
                   and not st.get("pending_outage_hours") and started is not None and commit is not None
                   and started >= int(commit))
    settled = settled and db_count(server.storage_url, "SELECT count(*) FROM recount_queue") == 0
    return settled, figures


def wait_recounted(server: Server, timeout: float, workers: bool = False) -> float:
    """Until the server has recounted every hour its commits marked: settled (:func:`recount_state`) on two polls
    with the same figures (no pass ended between them), the first of them at least 3 s after this call (with API
    workers the primary publishes its pending hours every second: an empty list older than the last commit's marks
    must not count). When it was first seen so."""
    first: list[Any] = [None, None]  # (time, figures) of the first settled poll of the current run
    not_before = time.time() + (3.0 if workers else 0.0)

    def done() -> bool:
        got = recount_state(server, workers)
        if got is None or not got[0] or time.time() < not_before:
            first[:] = [None, None]
            return False
        if first[1] == got[1]:
            return True
        first[:] = [time.time(), got[1]]
        return False

    wait_for(done, timeout, "every hour the backlog touched to be recounted", interval=1.0 if workers else 0.5)
    return float(first[0])


def send_backlog(pki: Pki, broker: Broker, server: Server, sns: list[str], start: int, count: int, epoch: int,
                 workdir: Path, *, window: int = 4, batch: int = 60, timeout: float = 3600.0,
                 cpu_pids: dict[str, int | None] | None = None, workers: bool = False) -> dict[str, Any]:
    """``sns`` send ``count`` one-minute samples from ``start`` as agents send their outbox after an outage
    (``loadgen`` mode ``backlog``); wait until all are stored, then until the server has recounted every hour
    they touched (``workers``: the server runs API worker processes, :func:`recount_state`). Times from the first
    publish, CPU seconds of ``cpu_pids`` per phase, Ack lags."""
    pids = cpu_pids or {}
    spec = {"mode": "backlog", "sns": sns, "pki_dir": str(pki.dir), "port": broker.port, "conns": CONNS,
            "count": count, "start": start, "batch": batch, "window": window, "epoch": epoch, "ack_wait": timeout,
            "out": str(workdir / f"backlog-{epoch}.json")}
    want = len(sns) * count
    base = stored(server)
    lg = LoadGen(spec)
    cpu0 = {k: cpu_of(p) for k, p in pids.items()}
    t0 = time.time()
    lg.start()
    r: dict[str, Any] = {"units": len(sns), "samples": want, "messages": len(sns) * (1 + math.ceil((count - 1) / batch))}
    try:
        wait_for(lambda: stored(server) - base >= want, timeout, "the backlog to be stored", interval=0.2)
        r["stored_s"] = time.time() - t0
        cpu1 = {k: cpu_of(p) for k, p in pids.items()}
        t_recounted = wait_recounted(server, timeout, workers)
        cpu2 = {k: cpu_of(p) for k, p in pids.items()}  # (up to half a second after it was first seen settled)
        r["recounted_s"] = t_recounted - t0
    finally:
        res = lg.result(120)
    r["published_s"] = res["t_last"] - res["t_first"]
    r["unacked"], r["stored"] = res["unacked"], stored(server) - base
    r["cpu_store_s"] = {k: cpu1[k] - cpu0[k] for k in pids}
    r["cpu_recount_s"] = {k: cpu2[k] - cpu1[k] for k in pids}
    r["lag"] = lag_stats([tuple(x) for x in res["lags"]])
    r["status"] = (rollup_status(server) or {}) if not workers else {}  # (an API worker's would be its own)
    return r


def setup(pki: Pki, n: int, workdir: Path, args: argparse.Namespace, storage_url: str | None = None,
          now: int | None = None) -> tuple[Broker, Server, dict[str, Any]]:
    """A fresh broker and server for ``n`` publishing terminals, the registry and ``args.days`` of roll-ups
    generated into its database (``storage_url``: a PostgreSQL database; default the server's SQLite file), and,
    with ``args.drill_units``, that many units' last ``args.drill_days`` whole days sent as a backlog so the server
    stores their slot codes (the drill-down reads them)."""
    now = int(time.time()) if now is None else now
    broker = Broker(pki, workdir / "broker")
    pki.terminal(ACK_CN)  # first: issuing a certificate rewrites the ACL from the CA's index (decision 011)
    add_loadgen_acl(pki, CONNS)
    acl = pki.dir / "acl"
    acl.write_text(acl.read_text() + f"\n# benchmark lag probe (bench_scale only)\nuser {ACK_CN}\ntopic read pf/+/a\n")
    broker.start()
    # the API phase's concurrent clients share one token and one address: no per-person limits (decision 013)
    unlimited = "" if "[api]" in args.server_extra else "\n[api]\nrate_per_s = 0\naddress_rate_per_s = 0\n"
    server = Server(pki, broker, workdir / "server", extra=args.server_extra + unlimited, storage=storage_url)
    units = math.ceil(n * 20 / 19)  # every 20th generated unit is a spare that does not report
    t = time.perf_counter()
    db = server.db if storage_url is None else workdir / "generated.sqlite"
    g = generate(db, units, institutions=max(10, units // 17), days=args.days, raw_units=0, raw_days=0,
                 backlog_units=0, backlog_hours=0, now=now)
    g["t_generate"] = time.perf_counter() - t
    if storage_url is not None:  # the same rows, put into PostgreSQL
        t = time.perf_counter()
        g["t_copy"] = copy_generated(db, storage_url)
        g["t_generate"] += time.perf_counter() - t
        db.unlink()
    g["now"] = now
    g["units"] = units
    g["sns"] = g["sns"][:n]
    server.start()
    drill = min(getattr(args, "drill_units", 0), n)
    if drill:
        today = datetime.fromtimestamp(now, TZ).date()
        first = today - timedelta(days=args.drill_days)
        t = time.perf_counter()
        d = send_backlog(pki, broker, server, g["sns"][:drill], midnight(first), args.drill_days * 1440, EPOCH + 1,
                         workdir, timeout=args.drain_timeout, workers=api_workers(args.server_extra) > 1)
        g["drill"] = g["sns"][:drill]
        g["drill_dates"] = [(first + timedelta(days=k)).isoformat() for k in range(args.drill_days)]
        g["t_drill"] = time.perf_counter() - t
        g["drill_backlog"] = {k: v for k, v in d.items() if k != "lag"}
        print(f"  drill-down data: {drill} units sent their last {args.drill_days} whole day(s) as a backlog "
              f"({d['samples']:,} samples): stored after {d['stored_s']:.0f} s, recounted (slot codes stored) "
              f"after {d['recounted_s']:.0f} s", flush=True)
    return broker, server, g


def live(pki: Pki, broker: Broker, server: Server, g: dict[str, Any], n: int, args: argparse.Namespace,
         workdir: Path) -> dict[str, Any]:
    r: dict[str, Any] = {"terminals": n, "registered": g["units"], "seconds": args.seconds, "period": args.period,
                         "t_generate": g["t_generate"], "storage": g.get("storage", "sqlite"), "days": args.days,
                         "t_copy": g.get("t_copy"), "t_drill": g.get("t_drill"), "drill_backlog": g.get("drill_backlog")}
    assert server.proc is not None and broker.proc is not None
    spec = {"mode": "live", "sns": g["sns"], "pki_dir": str(pki.dir), "port": broker.port, "conns": CONNS,
            "period": args.period, "duration": args.seconds, "ack_wait": args.drain_timeout,
            "out": str(workdir / f"live-{n}.json")}
    base_stored = stored(server)
    watches = {"server": ProcWatch(server.proc.pid), "broker": ProcWatch(broker.proc.pid)}
    if g.get("db_pid"):  # PostgreSQL's own processes (SQLite's work is in the server's)
        watches["postgres"] = ProcWatch(g["db_pid"])
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
    r: dict[str, Any] = {"terminals": n, "outage_minutes": args.outage_minutes, "storage": g.get("storage", "sqlite")}
    spec = {"mode": "wave", "sns": g["sns"][:n], "pki_dir": str(pki.dir), "port": broker.port, "conns": CONNS,
            "outage_minutes": args.outage_minutes, "ack_wait": args.drain_timeout, "out": str(workdir / "wave.json")}
    base = stored(server)
    watches = {"server": ProcWatch(server.proc.pid), "broker": ProcWatch(broker.proc.pid)}
    if g.get("db_pid"):
        watches["postgres"] = ProcWatch(g["db_pid"])
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
    print(f"\n== {r.get('storage', 'sqlite')}: {n:,} terminals ({r['registered']:,} registered incl. spares; registry + "
          f"{r.get('days', '?')} days of roll-ups generated in {r['t_generate']:.0f} s), {r['seconds']:.0f} s at one "
          f"batch per terminal every {r['period']} s")
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
          f"(end {r['server_rss_end_mb']:.0f} MB); "
          + (f"PostgreSQL's processes CPU {r['postgres_cpu_pct']:.0f} %, peak RSS {r['postgres_rss_mb']:.0f} MB; "
             if "postgres_cpu_pct" in r else "")
          + f"broker CPU {r['broker_cpu_pct']:.0f} %, peak RSS "
          f"{r['broker_rss_mb']:.0f} MB; generator CPU {r['loadgen_cpu_pct']:.0f} %; load average "
          f"{r['load_min']:.1f}-{r['load_max']:.1f}")
    for key, v in r["api"].items():
        name, clients = key.split("|")
        print(f"  API {name}, {clients} clients: p50 {v['p50_ms']:.0f} ms, p99 {v['p99_ms']:.0f} ms, "
              f"max {v['max_ms']:.0f} ms, {v['rps']:.1f} req/s, {v['errors']} errors (n={v['n']})")


def report_wave(r: dict[str, Any]) -> None:
    print(f"\n== {r.get('storage', 'sqlite')}: outage wave: {r['terminals']:,} terminals back at once after "
          f"{r['outage_minutes']} min")
    print(f"  every newest sample published after {r['newest_published_s']:.1f} s, all committed (Ack) after "
          f"{r['newest_all_acked_s']:.1f} s; newest-sample lag {_lag(r['lag_newest'])}")
    print(f"  everything ({r['expected']:,} samples, {2 * r['terminals']:,} messages) published in "
          f"{r['published_s']:.1f} s, stored after {r['drained_s']:.1f} s = {r['rate_samples']:,.0f} samples/s, "
          f"{r['rate_msgs']:,.0f} messages/s; {r['stored']:,} of {r['expected']:,} stored, {r['unacked']} unacked")
    print(f"  server CPU {r['server_cpu_pct']:.0f} %, peak RSS {r['server_rss_mb']:.0f} MB; "
          + (f"PostgreSQL's processes CPU {r['postgres_cpu_pct']:.0f} %; " if "postgres_cpu_pct" in r else "")
          + f"broker CPU {r['broker_cpu_pct']:.0f} %, peak RSS {r['broker_rss_mb']:.0f} MB; load average up to "
          f"{r['load_max']:.1f}")


def run(args: argparse.Namespace, workdir: Path, pg: Any = None) -> dict[str, Any]:
    """Every size on every backend of ``args.storage``, one after the other on this machine. PostgreSQL: a cluster
    of the benchmark's own (``pg``, or one started here: initdb defaults, ``shared_buffers = 512MB``, fsync on),
    a new database per size."""
    out: dict[str, Any] = {"machine": machine(), "args": {k: v for k, v in vars(args).items() if k != "json"},
                           "live": [], "wave": None, "waves": []}
    own = None
    if "postgresql" in args.storage and pg is None:
        from simulator.postgres import Postgres

        pg = own = Postgres(settings={"shared_buffers": "512MB"}).start()
    try:
        pki = Pki(workdir / "pki")
        biggest = max(args.sizes)
        for n in args.sizes:
            for backend in args.storage:
                d = workdir / f"{backend}-n{n}"
                url = pg.create(f"scale_{n}") if backend == "postgresql" else None
                print(f"{machine_line()}\nsetting up {n:,} terminals on {backend} ({args.days} days of roll-ups) ...",
                      flush=True)
                broker, server, g = setup(pki, n, d, args, url)
                g["storage"] = backend
                g["db_pid"] = pg.proc.pid if url else None
                try:
                    if args.seconds > 0:
                        r = live(pki, broker, server, g, n, args, d)
                        report_live(r)
                        out["live"].append(r)
                    if n == biggest and args.wave:
                        w = wave(pki, broker, server, g, min(args.wave, n), args, d)
                        w["storage"] = backend
                        report_wave(w)
                        out["waves"].append(w)
                        out["wave"] = out["wave"] or w
                finally:
                    server.stop()
                    broker.stop()
                if url:  # the next size's database beside it would only take the disk
                    pg.psql(f'DROP DATABASE "scale_{n}"')
                else:
                    for f in (server.db, server.db.with_name(server.db.name + "-wal")):
                        f.unlink(missing_ok=True)
    finally:
        if own is not None:
            own.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50000,200000", help="fleet sizes, comma-separated (default 50000,200000)")
    p.add_argument("--seconds", type=float, default=300.0, help="live run per size, real seconds (default 300)")
    p.add_argument("--period", type=float, default=PERIOD, help="seconds between a terminal's batches (default 600)")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the API load and the steady window")
    p.add_argument("--clients", default="10,50", help="API concurrency levels (empty: no API load)")
    p.add_argument("--requests", type=int, default=30, help="list/detail requests per 10 clients (default 30)")
    p.add_argument("--avail-requests", type=int, default=5, help="availability requests (whole days of random "
                   "periods, by county) per 10 clients")
    p.add_argument("--quarter-requests", type=int, default=10, help="requests for the last whole quarter's fleet "
                   "availability by county, per 10 clients (default 10)")
    p.add_argument("--days", type=int, default=0, help="days of generated roll-ups before today (default: enough "
                   "to cover the last whole quarter, 90-183)")
    p.add_argument("--drill-units", type=int, default=100, help="units whose last --drill-days whole days are sent "
                   "as a backlog before the live run, so the drill-down reads stored slot codes (default 100; 0: "
                   "no drill-down)")
    p.add_argument("--drill-days", type=int, default=2, help="days of drill-down data per drilled unit (default 2)")
    p.add_argument("--storage", default="sqlite", help="the server's backends, comma-separated, run one after the "
                   "other: sqlite, postgresql (a cluster of the benchmark's own, fsync on); default sqlite")
    p.add_argument("--wave", type=int, default=20000, help="terminals in the outage wave, at the largest size "
                   "(default 20000; 0: none)")
    p.add_argument("--outage-minutes", type=int, default=10, help="outage length: samples per terminal in the wave")
    p.add_argument("--drain-timeout", type=float, default=300.0)
    p.add_argument("--server-extra", default="", help="extra server TOML (e.g. '[alerts]\\nenabled = false')")
    p.add_argument("--client", choices=("raw", "httpx"), default="raw", help="the API clients: raw (one keep-alive "
                   "connection each, little CPU; default) or httpx (~5 ms of CPU a request, on the server's cores)")
    p.add_argument("--slowest", type=int, default=0, help="print each API phase's N slowest requests (raw client)")
    p.add_argument("--json", default="", help="write every figure to this JSON file")
    a = p.parse_args(argv)
    api_bench.CLIENT, api_bench.SLOWEST = a.client, a.slowest
    a.sizes = [int(x) for x in a.sizes.split(",") if x]
    a.clients = [int(x) for x in a.clients.split(",") if x]
    a.storage = [x.strip() for x in a.storage.split(",") if x.strip()]
    if not a.storage or set(a.storage) - {"sqlite", "postgresql"}:
        p.error("--storage: sqlite, postgresql or both, comma-separated")
    if a.days <= 0:
        a.days = max(7, quarter_days(int(time.time())))
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
