"""Wire cost of the optional 3G signal fields (``rscp_dbm``, ``ecio_db``, issue 14) in a telemetry batch.

Builds the agent's usual batch (10 one-minute samples, every field a modem-equipped terminal fills) three ways
-- an LTE terminal (the 3G fields absent), the same terminal on a 3G cell with whole-dB integers (what the agent
sends), and, for comparison, Ec/Io sent as a float -- encodes each with the agent's codec (msgpack, raw DEFLATE
when smaller) and prints the bytes per batch, per sample and per month at one sample a minute (43,200).

This is payload only: MQTT, TLS and TCP/IP framing per batch do not change with the fields
(``bench_bytes`` measures the whole link for one terminal; its agent has no modem, so its figure is the LTE one).

    .venv/bin/python -m benchmarks.bench_sample_fields
"""

from __future__ import annotations

import random

from wire import codec
from wire.messages import Batch, Check, FsStat, Sample

SAMPLES_PER_BATCH = 10
SAMPLES_PER_MONTH = 30 * 24 * 60
BATCHES = 200


def _batch(rng: random.Random, rng3: random.Random, seq0: int, three_g: str | None) -> Batch:
    samples = []
    for i in range(SAMPLES_PER_BATCH):
        extra: dict[str, object] = {}
        if three_g is not None:
            ecio = rng3.choice([-4.5, -5.0, -5.5, -6.0, -6.5, -7.0, -8.5])
            extra = {"rscp_dbm": rng3.randint(-95, -80), "ecio_db": round(ecio) if three_g == "int" else ecio}
        samples.append(Sample(
            seq=seq0 + i, ts=1_800_000_000 + 60 * (seq0 + i), rtt_ms=rng.randint(40, 400), rtt_var_ms=rng.randint(1, 40),
            retrans=rng.randint(0, 3), segs_out=rng.randint(100, 100000), cpu=round(rng.uniform(1, 60), 1),
            load1=round(rng.uniform(0, 2), 2), mem_used_mb=rng.randint(300, 900), mem_avail_mb=rng.randint(500, 1500),
            swap_used_mb=0, fs=[FsStat("/var/lib/posfleet", 7800, rng.randint(1000, 6000), True)],
            uptime_s=rng.randint(1000, 900000),
            checks={"storage": Check(0), "printer": Check(0), "idcard": Check(0), "modem": Check(0)},
            signal_dbm=rng.randint(-110, -60), csq=rng.randint(5, 31), cell_id=0xE0B70B, tac=0x5F0C,
            data_bytes=rng.randint(10**6, 10**8), **extra,  # type: ignore[arg-type]
        ))
    return Batch(sn="HN00000001", epoch=1, samples=samples)


def main() -> None:
    rows = {}
    for label, mode in (("LTE (3G fields absent)", None), ("3G, whole-dB ints (sent)", "int"),
                        ("3G, Ec/Io as a float", "float")):
        rng, rng3 = random.Random(14), random.Random(15)  # the same other fields in every row
        total = sum(len(codec.encode(_batch(rng, rng3, k * SAMPLES_PER_BATCH, mode))) for k in range(BATCHES))
        rows[label] = total / (BATCHES * SAMPLES_PER_BATCH)
    base = rows["LTE (3G fields absent)"]
    print(f"{'batch of 10 one-minute samples, agent codec':<44} {'B/sample':>9} {'extra':>7} {'MB/month':>9}")  # noqa: T201
    for label, per in rows.items():
        print(f"{label:<44} {per:9.1f} {per - base:+7.1f} {per * SAMPLES_PER_MONTH / 1e6:9.3f}")  # noqa: T201


if __name__ == "__main__":
    main()
