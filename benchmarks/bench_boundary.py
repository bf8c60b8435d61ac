"""What the ingest boundary costs (issue 12: it must not cost more than 10 % of the drain rate).

The server's per-message work before the commit, in-process and on one core, on the batches bench_ingest sends
(10 realistic samples each) and on an agent's typical live batch (one sample, plus an inventory event):

* ``lax``: what ingest did before issue 12: ``codec.decode(payload, Batch)`` (unbounded ints, ``dict[str, object]``
  event data), then each sample turned into its stored form (``sample_dict``);
* ``boundary``: ``wire.boundary.decode_batch``, then each sample and event decoded alone against the closed
  schema (``boundary.sample``, ``boundary.event``), the event data through its kind's schema and the redactor,
  then the stored form.

Printed: microseconds per batch and per sample for each, the difference, and that difference as a share of the
time one sample takes at the measured drain rate (docs/performance.md: 10,533 samples/s, i.e. 95 us a sample on
one core).

    .venv/bin/python -m benchmarks.bench_boundary
"""

from __future__ import annotations

import random
import sys
import time

from benchmarks._harness import machine_line
from benchmarks.bench_ingest import make_batch
from wire import boundary, codec
from wire.messages import Batch, Event, sample_dict

DRAIN_RATE = 10_533  # samples/s, bench_ingest 2026-12-06 with the boundary (docs/performance.md)


def lax(payload: bytes) -> int:
    b = codec.decode(payload, Batch)
    for s in b.samples:
        sample_dict(s)
    for e in b.events:
        dict(e.data)
    return len(b.samples)


def strict(payload: bytes) -> int:
    from drivers.idcard.mask import redact_text

    b = boundary.decode_batch(payload)
    n = 0
    for raw in b.samples:
        s, _dropped = boundary.sample(raw)
        sample_dict(s)
        n += 1
    for raw in b.events:
        _e, data = boundary.event(raw)
        {k: redact_text(v) if isinstance(v, str) else v for k, v in data.items()}
    return n


def _time(fn, payloads: list[bytes], rounds: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for p in payloads:
            fn(p)
        best = min(best, time.perf_counter() - t)
    return best / len(payloads)


def main() -> int:
    rng = random.Random(1)
    backlog = [make_batch(f"HN{n:08d}", 1, n * 10, 1_796_000_000, rng) for n in range(2000)]
    inv = Event(seq=99, ts=1_796_000_000, kind="inventory", data={
        "agent": "0.1.0", "boot_id": "3f0c2a4e-5b1d-4c8e-9f7a-1b2c3d4e5f60", "hostname": "pos-hn-0001",
        "components": {"pos": "3.2.1", "os": "UOS 20"}, "iccid": "89860012345678901234", "imei": "861234567890123",
        "modem_model": "EC200T", "carrier": "China Mobile"})
    live = []
    for n in range(2000):
        b = codec.decode(make_batch(f"HN{n:08d}", 1, n, 1_796_000_000, rng), Batch)
        live.append(codec.encode(Batch(sn=b.sn, epoch=1, samples=b.samples[:1], events=[inv] if n % 10 == 0 else [])))
    print(machine_line())
    per_sample_budget = 1e6 / DRAIN_RATE
    for name, payloads, per in (("backlog batch (10 samples)", backlog, 10), ("live batch (1 sample, 1 in 10 with an "
                                                                              "inventory event)", live, 1)):
        a = _time(lax, payloads, 5) * 1e6
        b = _time(strict, payloads, 5) * 1e6
        print(f"{name}: lax {a:.1f} us, boundary {b:.1f} us a batch; +{b - a:.1f} us a batch = "
              f"+{(b - a) / per:.1f} us a sample = {(b - a) / per / per_sample_budget * 100:.1f} % of a sample's "
              f"{per_sample_budget:.0f} us at {DRAIN_RATE:,} samples/s (target <= 10 %: "
              f"{'PASS' if (b - a) / per / per_sample_budget <= 0.10 else 'FAIL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
