"""Fuzzing the ingest boundary: 20,000 generated messages through the real broker into the real server.

Hypothesis generates 4,000 batch-shaped msgpack messages (every wire field with values of any type and size: huge and
negative integers, NaN and infinities, binary, extension types, non-text keys, nesting), events of every
registered kind and of none, and byte-level mutations of valid batches (flipped bytes, truncations, wrong
format bytes, broken deflate streams); each is also mutated at random four times (20,000 in all: hypothesis
alone costs ~5 ms an example here, too slow for 20,000 in the suite). Each one first goes through the boundary in-process (which may only
ever refuse with a counted reason), then all of them through the broker, beside a healthy unit. Checked:
the server stays up and ready; the healthy unit's samples sent during and after are stored and acknowledged;
every message is counted exactly once (accepted or rejected by reason); nothing stored breaks the schema;
no storage error and no dead letter. (The healthy unit's availability is checked as "all its samples stored
and acknowledged": its counted hour closes an hour later, longer than this test should run.)
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import sqlite_count
from tests.fleet import Server, wait_for
from tests.terminal import Terminal
from wire import boundary, codec
from wire.messages import Batch, Check, Event, Sample

SN, HEALTHY = "HN00130001", "HN00130002"
N_GENERATED, MUTANTS = 4_000, 4  # 4,000 from hypothesis, each also mutated 4 times: 20,000 messages

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40) | st.binary(max_size=40)
           | st.builds(msgspec.msgpack.Ext, st.integers(0, 127), st.binary(max_size=8)))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6) | st.integers(-5, 5), inner, max_size=4), max_leaves=8)
SAMPLE_KEYS = [f.encode_name for f in msgspec.structs.fields(Sample)]


def _sample_dicts(now: int) -> st.SearchStrategy:
    good = {"q": st.integers(0, 10**6), "t": st.integers(now - 86400, now), "h": st.just({"storage": [0]})}
    anything = {k: values for k in SAMPLE_KEYS if k not in good}
    return st.fixed_dictionaries(good, optional=anything)


def _events(now: int) -> st.SearchStrategy:
    kinds = st.sampled_from([*boundary.EVENT_SCHEMAS, "shell", "x" * 40, ""])
    return st.fixed_dictionaries({"q": st.integers(-1, 10**6), "t": st.integers(now - 86400, now + 600), "e": kinds},
                                 optional={"d": st.dictionaries(st.text(max_size=12), values, max_size=6) | values})


def _batches(now: int) -> st.SearchStrategy:
    batch = st.fixed_dictionaries(
        {"sn": st.one_of(st.just(SN), st.just(SN), st.just(SN), st.just(SN), st.just("HN99999999"), st.text(max_size=40)), "e": st.one_of(st.integers(0, 2**31), st.integers(0, 2**31), st.integers(0, 2**31), st.integers(-2, 2**64 - 1))},
        optional={"S": st.lists(_sample_dicts(now), max_size=5), "E": st.lists(_events(now), max_size=3),
                  "v": st.sampled_from([1, 1, 1, -1, 2]), "zz": values})
    structured = batch.map(lambda b: b"\x01" + msgspec.msgpack.encode(b))
    good = codec.encode(Batch(sn=SN, epoch=7, samples=[
        Sample(seq=k, ts=now - 60 * k, cpu=10.0, checks={"storage": Check(0)}) for k in range(1, 20)],
        events=[Event(seq=50, ts=now, kind="inventory", data={"agent": "1"})]), compress=False)
    mutated = st.tuples(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), min_size=1, max_size=8),
                        st.integers(1, 4 * len(good))).map(lambda m: _mutate(good, *m))
    return st.one_of(structured, structured, structured, structured, mutated, mutated, st.binary(max_size=200))


def _mutate(good: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    b = bytearray(good)
    for i, v in flips:
        b[i] = v
    return bytes(b[:cut])


def _generate(now: int) -> list[bytes]:
    """Hypothesis's examples (~5 ms each here), and from each a few cheap byte-level mutants."""
    out: list[bytes] = []
    rng = random.Random(12)

    @settings(max_examples=N_GENERATED, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(_batches(now))
    def collect(payload: bytes) -> None:
        batch = [payload]
        for _ in range(MUTANTS):
            b = bytearray(payload or b"\x01")
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            batch.append(bytes(b[: rng.randint(1, len(b))] if rng.random() < 0.3 else b))
        for p in batch:
            _boundary_only_refuses(p)
        out.extend(batch)

    collect()
    return out


def _boundary_only_refuses(payload: bytes) -> None:
    """In-process property: the boundary decodes or refuses with a DecodeError; it never raises anything else."""
    try:
        batch = boundary.decode_batch(payload)
    except codec.DecodeError:
        return
    for raw in batch.samples:
        try:
            boundary.sample(raw)
        except codec.DecodeError:
            pass
    for raw in batch.events:
        try:
            boundary.event(raw)
        except codec.DecodeError:
            pass


# 41 s alone on a quiet box (2 cores); the suite's 120 s default is too tight beside two other xdist workers
@pytest.mark.slow
@pytest.mark.timeout(360)
def test_twenty_thousand_generated_messages(pki, broker, tmp_path: Path) -> None:
    now = int(time.time())
    payloads = _generate(now)
    assert len(payloads) == N_GENERATED * (1 + MUTANTS)
    server = Server(pki, broker, tmp_path / "server",
                    extra="[ingest]\nunit_messages_per_minute = 1000000\nunit_bytes_per_minute = 1000000000\n"
                          "unit_events_per_minute = 1000000\n").start()
    try:
        fuzz_term = Terminal(pki, broker, SN, inflight=500)
        fuzz = fuzz_term.c
        healthy_term = Terminal(pki, broker, HEALTHY, inflight=500)
        healthy, acked = healthy_term.c, healthy_term.acked
        # the last whole hour: the healthy unit's eleven minutes are never ahead of the server's clock (from the
        # current hour they were, in the first ten minutes of an hour, and were refused as from the future)
        hour = now - now % 3600 - 3600
        infos = []
        seq = 0
        for i, p in enumerate(payloads):
            infos.append(fuzz.publish(f"pf/{SN}/t", p, qos=1))
            if i % 2000 == 0:  # the healthy unit reports all along
                seq += 1
                infos.append(healthy.publish(f"pf/{HEALTHY}/t", codec.encode(Batch(sn=HEALTHY, epoch=1, samples=[
                    Sample(seq=seq, ts=hour + 60 * seq, rtt_ms=50, checks={"storage": Check(0)})])), qos=1))
        for info in infos:
            info.wait_for_publish(120)
        total = len(infos)
        wait_for(lambda: server.get("/api/v1/ingest/stats").json()["messages"] >= total, 240,
                 f"all {total} messages seen", interval=0.5)
        # good data sent after the fuzz is stored and acknowledged
        seq += 1
        healthy.publish(f"pf/{HEALTHY}/t", codec.encode(Batch(sn=HEALTHY, epoch=1, samples=[
            Sample(seq=seq, ts=hour + 60 * seq, rtt_ms=50, checks={"storage": Check(0)})])), qos=1).wait_for_publish(10)
        wait_for(lambda: len(acked) == seq, 120, "every healthy sample acknowledged")  # a bound: 30 s ran out once in a loaded CI run
        assert sqlite_count(server.db, f"select count(*) from samples where sn = '{HEALTHY}'") == seq
        s = server.get("/api/v1/ingest/stats").json()
        assert s["messages"] == total + 1, "each message counted once, none twice"
        assert s["accepted"] + sum(s["rejected_messages"].values()) == s["messages"], s
        assert len(s["rejected_messages"]) >= 4, s["rejected_messages"]  # the generator reached several reasons
        # the generator reached the item-level checks too (figures of this seed: see the run's output)
        print("fuzz figures:", {k: s[k] for k in ("accepted", "rejected_messages", "rejected_items", "fields_dropped",
                                                   "samples_stored", "events_stored")})
        assert s["accepted"] >= 500 and sum(s["rejected_items"].values()) >= 500 and s["fields_dropped"] >= 100, s
        assert server.proc.poll() is None
        assert server.get("/readyz").status_code == 200
        assert s["dead_letters"] == 0 and s["storage_errors"] == 0
        # nothing stored breaks the schema: every stored sample body re-validates, every event is of a known kind
        con = sqlite3.connect(server.db)
        bodies = [r[0] for r in con.execute(f"select body from samples where sn = '{SN}'")]
        kinds = {r[0] for r in con.execute("select kind from events")}
        con.close()
        fields = {f.name: f.encode_name for f in msgspec.structs.fields(Sample)}
        for body in bodies:
            d = msgspec.json.decode(body)
            wire = {fields[k]: v for k, v in d.items() if v is not None and k in fields}
            wire["h"] = {k: v for k, v in d["checks"].items()}
            wire["f"] = [[f["mount"], f["size_mb"], f["used_mb"], f["writable"]] for f in d["fs"]]
            boundary.sample(msgspec.Raw(msgspec.msgpack.encode(wire)))  # raises if anything stored is out of range
        assert kinds <= set(boundary.EVENT_SCHEMAS), kinds
        # every acknowledgement, even to the fuzzing unit, decodes under the terminal's own schema (a rejected
        # ``seq: true`` once came back as ``[true, true, ...]``, which no agent can read)
        assert fuzz_term.undecodable == [] and healthy_term.undecodable == [], fuzz_term.undecodable[:3]
        fuzz.loop_stop()
        fuzz.disconnect()
        healthy.loop_stop()
        healthy.disconnect()
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()
