"""Network service levels per clause (issue 17, decision 029): the pure count behind the per unit-day roll-up
(``sla_day``) and the report's count of raw samples not rolled up yet.

Each sample stands for its ``interval`` of service time when it is dated inside the institution's service hours
and the unit was in service then (its status history, as the availability counter reads it). For that time:

* link down: outside every limit (measured, not within);
* latency: the sample's round trip ``rtt_ms`` (within when ``<= latency_ok_ms``); absent: unmeasured;
* jitter: the kernel's smoothed RTT variation ``rtt_var_ms`` (within when ``<= jitter_ok_ms``); absent: unmeasured;
* loss: TCP segments retransmitted per segment sent since the unit's previous sample, when both carry the
  counters, the link was up at the previous one, the counters grew, and the previous one is at most
  :data:`LOSS_GAP_S` older (so a day counted alone gives the same count as a quarter counted at once: the
  previous sample is looked up that far before a span).

No I/O here; tested on literal values through the report and the roll-up pass.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from datetime import tzinfo
from typing import Any

from .rollups import local_day

SLA_KEYS = ("time", "lat_in", "lat_meas", "jit_in", "jit_meas", "loss_in", "loss_meas", "down")
LOSS_GAP_S = 3600  # the previous sample's counters count for the loss only this far back (and are read this far)


def count_unit(rows: Iterable[Sequence[Any]], windows: Sequence[tuple[int, int]], history: Sequence[tuple[int, str]],
               start: int, end: int, limits: tuple[int, int, float], tz: tzinfo) -> dict[int, list[int]]:
    """One unit's counts (:data:`SLA_KEYS`, seconds) per local day ordinal over ``[start, end)``.

    ``rows``: the unit's ``(ts, interval, connected, rtt_ms, rtt_var_ms, retrans, segs_out)`` by time, from
    ``start - LOSS_GAP_S`` (those before ``start`` only give the loss its previous counters); ``windows``: its
    service windows over ``[start, end)`` (``ServiceHours.window_seconds``)."""
    lat_ok, jit_ok, loss_ok = limits
    starts, ends = [w[0] for w in windows], [w[1] for w in windows]
    hist_ts = [h[0] for h in history]
    out: dict[int, list[int]] = {}
    prev: tuple[int, int, int] | None = None  # (ts, retrans, segs) of the previous sample with the link up
    for ts, interval, connected, rtt, var, retrans, segs in rows:
        ts = int(ts)
        counters = (ts, int(retrans), int(segs)) if connected and retrans is not None and segs is not None else None
        k = bisect_right(starts, ts) - 1
        if ts < start or ts >= end or k < 0 or ts >= ends[k]:
            prev = counters
            continue
        if history:
            j = bisect_right(hist_ts, ts) - 1
            if j < 0 or history[j][1] != "in_service":
                prev = counters
                continue
        day = local_day(ts, tz).toordinal()
        c = out.get(day)
        if c is None:
            c = out[day] = [0] * len(SLA_KEYS)
        w = int(interval)
        c[0] += w
        if not connected:
            c[7] += w
            c[2] += w
            c[4] += w
            c[6] += w
            prev = None
            continue
        if rtt is not None:
            c[2] += w
            c[1] += w if rtt <= lat_ok else 0
        if var is not None:
            c[4] += w
            c[3] += w if var <= jit_ok else 0
        if counters is not None and prev is not None and ts - prev[0] <= LOSS_GAP_S \
                and counters[2] > prev[2] and counters[1] >= prev[1]:
            c[6] += w
            c[5] += w if (counters[1] - prev[1]) / (counters[2] - prev[2]) <= loss_ok else 0
        prev = counters
    return out


def history_pairs(history: Iterable[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(int(h["from_ts"]), str(h["status"])) for h in history]


def shares(c: Sequence[int]) -> dict[str, Any]:
    """The report's row of one sum of :data:`SLA_KEYS`: service hours, each share within its limit of the time
    measured for it, the share measured, the share with the link down."""
    d = dict(zip(SLA_KEYS, c, strict=True))

    def share(a: str, b: str) -> float | None:
        return round(d[a] / d[b], 6) if d[b] else None

    return {"hours": round(d["time"] / 3600, 1), "latency": share("lat_in", "lat_meas"),
            "jitter": share("jit_in", "jit_meas"), "loss": share("loss_in", "loss_meas"),
            "latency_measured": share("lat_meas", "time"), "jitter_measured": share("jit_meas", "time"),
            "loss_measured": share("loss_meas", "time"), "down": share("down", "time")}
