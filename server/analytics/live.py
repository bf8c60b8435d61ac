"""Live fleet state and network quality (separate from the contract figures).

* Online: the broker session is up, or a message arrived within three keep-alive intervals (availability.md).
  Counts and rates are over units registered *in service*.
* Carrier: the modem's operator name, or the IMSI's MCC+MNC (China: 460).
* Network quality over a window of raw samples: latency (mean and 95th percentile of the measured round
  trips), jitter (mean of the kernel's smoothed RTT variation, ``rtt_var_ms``), loss (retransmitted segments /
  segments sent, from the cumulative TCP counters, restarting at each new connection). Judged against
  400 ms / 50 ms / 1e-3 (configurable under ``[analytics]``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

MNC_CARRIER = {
    "46000": "China Mobile", "46002": "China Mobile", "46004": "China Mobile", "46007": "China Mobile",
    "46008": "China Mobile", "46013": "China Mobile", "46001": "China Unicom", "46006": "China Unicom",
    "46009": "China Unicom", "46003": "China Telecom", "46005": "China Telecom", "46011": "China Telecom",
    "46015": "China Broadnet",
}
_NAMES = {"cmcc": "China Mobile", "china mobile": "China Mobile", "中国移动": "China Mobile",
          "chn-unicom": "China Unicom", "china unicom": "China Unicom", "cucc": "China Unicom", "中国联通": "China Unicom",
          "chn-ct": "China Telecom", "china telecom": "China Telecom", "ctcc": "China Telecom", "中国电信": "China Telecom"}


def carrier(identity: dict[str, Any] | None) -> str:
    ident = identity or {}
    name = str(ident.get("carrier") or "").strip()
    if name:
        return _NAMES.get(name.lower(), name)
    for key in ("mcc_mnc", "imsi"):
        v = str(ident.get(key) or "")
        if len(v) >= 5 and v[:5] in MNC_CARRIER:
            return MNC_CARRIER[v[:5]]
    return "unknown"


def quality(samples: Iterable[dict[str, Any]], latency_ok: int, jitter_ok: int, loss_ok: float) -> dict[str, Any]:
    """Network quality of one unit from its samples (oldest first)."""
    rtts: list[int] = []
    jit: list[int] = []
    retrans = segs = 0
    prev: tuple[int, int] | None = None
    n = down = 0
    for s in samples:
        n += 1
        if not s.get("connected", True):
            down += 1
        if s.get("rtt_ms") is not None:
            rtts.append(int(s["rtt_ms"]))
        if s.get("rtt_var_ms") is not None:
            jit.append(int(s["rtt_var_ms"]))
        r, o = s.get("retrans"), s.get("segs_out")
        if r is not None and o is not None:
            if prev is not None and o >= prev[1] and r >= prev[0]:
                retrans += r - prev[0]
                segs += o - prev[1]
            prev = (int(r), int(o))
    rtts.sort()
    lat = sum(rtts) / len(rtts) if rtts else None
    p95 = rtts[min(len(rtts) - 1, int(0.95 * len(rtts)))] if rtts else None
    jitter = sum(jit) / len(jit) if jit else None
    loss = retrans / segs if segs else None
    return {
        "samples": n, "link_down_samples": down,
        "latency_ms": None if lat is None else round(lat, 1), "latency_p95_ms": p95,
        "jitter_ms": None if jitter is None else round(jitter, 1),
        "loss": None if loss is None else round(loss, 6),
        "latency_ok": None if lat is None else lat <= latency_ok,
        "jitter_ok": None if jitter is None else jitter <= jitter_ok,
        "loss_ok": None if loss is None else loss <= loss_ok,
    }


def summarise(units: list[dict[str, Any]], month_rates: dict[str, float | None] | None = None) -> dict[str, Any]:
    """Live dashboard figures from joined registry + live rows (each with ``online`` computed).

    Institutions are ranked by online rate, then by ``month_rates`` (this month's availability, the lower of the
    two rates; none known ranks lowest), then by code; the worst ten are the same ranking read from the bottom,
    so the two lists differ whenever there are twenty institutions, ties or not. ``ranking.tied`` says when every
    institution has the same online rate (the order is then the second figure's)."""
    rates = month_rates or {}
    active = [u for u in units if u["status"] == "in_service"]
    online = sum(1 for u in active if u["online"])
    inst: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    names: dict[str, dict[str, Any]] = {}
    for u in active:
        if u.get("institution"):
            acc = inst[u["institution"]]
            acc[0] += 1
            acc[1] += 1 if u["online"] else 0
            names[u["institution"]] = {"name": u.get("institution_name") or "", "county": u.get("county") or ""}
    ranked = sorted(({"institution": k, **names[k], "units": v[0], "online": v[1], "online_rate": round(v[1] / v[0], 4),
                      "month_rate": rates.get(k)} for k, v in inst.items()),
                    key=lambda x: (-x["online_rate"], x["month_rate"] is None, -(x["month_rate"] or 0), x["institution"]))
    worst = ranked[::-1]
    tied = len({x["online_rate"] for x in ranked}) == 1 and len(ranked) > 1
    versions: dict[str, Counter[str]] = defaultdict(Counter)
    for u in units:
        inv = u.get("inventory") or {}
        versions["agent"][str(inv.get("agent") or u.get("agent_version") or "unknown")] += 1
        for comp, ver in (inv.get("components") or {}).items():
            versions[str(comp)][str(ver or "unknown")] += 1
    by_county: dict[str, Counter[str]] = defaultdict(Counter)
    by_type: Counter[str] = Counter()
    for u in units:
        by_county[u.get("county") or "unassigned"][u["status"]] += 1
        if u["status"] == "in_service":
            by_type[u.get("institution_type") or "unassigned"] += 1
    return {
        "units": len(units),
        "in_service": len(active),
        "online": online,
        "offline": len(active) - online,
        "online_share": round(online / len(active), 4) if active else None,
        "institutions_best": ranked[:10],
        "institutions_worst": worst[:10],
        "ranking": {"by": ["online_rate", "month_rate", "institution"], "tied": tied},
        "by_carrier": dict(Counter(carrier(u.get("identity")) for u in active).most_common()),
        "by_link_type": dict(Counter(u.get("link_type") or "unknown" for u in active).most_common()),
        "software_versions": {k: dict(v.most_common()) for k, v in sorted(versions.items())},
        "deployment_by_county": {k: dict(v) for k, v in sorted(by_county.items())},
        "deployment_by_institution_type": dict(by_type.most_common()),
    }
