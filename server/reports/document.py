"""The report's document sections beyond the settlement figures (issue 17): the tier clause, daily trend, network
service levels per clause, the inspection appendix, the fault list, spare stock, recommendations.

Every section comes from stored data and says where it comes from; what is not measured is said, not invented:

* **Network service levels** are read from the per unit-day roll-up (``sla_day``, kept by the availability roll-up
  pass: server/availability/sla.py) and counted from the raw samples still kept for what it does not hold (the
  section says from when it counts): each sample stands for its interval of service time; latency is the sample's measured round trip
  (``rtt_ms``), jitter the kernel's smoothed RTT variation (``rtt_var_ms``), loss the TCP segments retransmitted per
  segment sent between two samples of one connection. A sample with the link down is outside every limit; a
  connected sample without the measure is *unmeasured* for it (shown apart, not counted as good). Packet error
  (≤ 1×10⁻⁴) is not measured by the terminals: the section says so.
* **Inspection appendix**: each terminal's newest sample (CPU, memory, storage fill and whether it is writable,
  each peripheral's check), its software versions and ICCID (inventory), the last test page printed
  (``test_page`` commands), its SIM data use in the period (data counters).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from wire.messages import OK, STATE_NAMES

from .. import labels
from ..availability import sla
from ..availability.rollups import local_day, midnight
from ..availability.service import rate

MB = 1024 * 1024


def _state_word(state: Any, lang: str) -> str:
    if state == OK:
        return "正常" if lang == "zh" else "ok"
    name = STATE_NAMES.get(state, "unknown")
    return labels.label(f"reason.{name}", lang) or name


# how a finished test-page command ended (server/commands/service.py: succeeded, or one of FAILED), as the
# appendix's "last test page" says it
TEST_PAGE_STATES = {"zh": {"succeeded": "成功", "failed": "失败", "rejected": "终端拒绝执行", "expired": "超时未执行"},
                    "en": {"succeeded": "printed", "failed": "failed", "rejected": "refused by the terminal",
                           "expired": "expired unrun"}}


def tier_clause(settings: Any, lang: str) -> list[dict[str, str]]:
    """The tier table from ``[availability] tiers`` / ``last_tier``, as the contract words it."""
    a = settings.availability
    rows = []
    upper: float | None = None
    for floor, tier, share in a.tiers:
        if lang == "zh":
            cond = f"均 ≥ {floor * 100:g}%" + (f" 且 < {upper * 100:g}%" if upper is not None else "")
        else:
            cond = f"both ≥ {floor * 100:g} %" + (f" and < {upper * 100:g} %" if upper is not None else "")
        rows.append({"tier": str(tier), "condition": cond, "share": f"{share * 100:g}%"})
        upper = floor
    last_floor = a.tiers[-1][0] if a.tiers else None
    cond = (f"任一 < {last_floor * 100:g}%" if lang == "zh" else f"either < {last_floor * 100:g} %") \
        if last_floor is not None else ("其他" if lang == "zh" else "otherwise")
    rows.append({"tier": str(a.last_tier[0]), "condition": cond, "share": f"{a.last_tier[1] * 100:g}%"})
    return rows


async def trend(availability: Any, storage: Any, index: dict[str, Any], start: int, end: int,
                county: str | None) -> list[dict[str, Any]]:
    """Device and network rate per day of the period (fleet or county): the days' roll-ups summed in one query
    (the same counts as the figures of each day); a day cut by the period's bounds or not yet counted to its end
    is asked of the figures themselves."""
    tz = availability.tz
    sns = None if county is None else sorted(sn for sn, u in index.items() if u.county == county)
    first, last = local_day(start, tz), local_day(end - 1, tz)
    totals = await storage.rollup_day_totals(first.toordinal(), last.toordinal(), sns)
    rolled = availability.rolled_to or 0
    out = []
    day = first
    while day <= last:
        a, b = midnight(day, tz), midnight(day + timedelta(days=1), tz)
        if a < start or b > end or b > rolled:
            f = (await availability.figures(max(start, a), min(end, b), "fleet", county=county))["fleet"]
            dev, net, service = f["device_rate"], f["network_rate"], f["service_slots"]
        else:
            service, intact, netok, _nodata = totals.get(day.toordinal(), (0, 0, 0, 0))
            dev = rate(Fraction(intact, service)) if service else None
            net = rate(Fraction(netok, service)) if service else None
        out.append({"day": day.isoformat(), "device_rate": dev, "network_rate": net, "service_slots": service})
        day += timedelta(days=1)
    return out


async def network_sla(availability: Any, storage: Any, index: dict[str, Any], start: int, end: int,
                      county: str | None) -> dict[str, Any]:
    """Share of service time within each clause limit, per county and overall (see the module's text): the stored
    unit-day roll-ups (``sla_day``) for the whole days they hold, the raw samples still kept for the rest (a day
    cut by the period's bounds, the day in progress, a day from before the roll-up existed)."""
    s = availability.settings
    limits = (s.analytics.latency_ok_ms, s.analytics.jitter_ok_ms, s.analytics.loss_ok)
    tz = availability.tz
    now = int(availability.clock.now())
    raw_from = now - s.retention_days * 86400
    sns = sorted(sn for sn, u in index.items() if county is None or u.county == county)
    n = len(sla.SLA_KEYS)
    acc: dict[str, list[int]] = defaultdict(lambda: [0] * n)
    end = min(end, now)
    first, last = local_day(start, tz), local_day(end - 1, tz) if end > start else local_day(start, tz)
    stored_sums, stored = await storage.sla_sums(first.toordinal(), last.toordinal(),
                                                 None if county is None else sns)
    for sn, c in stored_sums.items():
        info = index.get(sn)
        if info is not None and c[0] and (county is None or info.county == county):
            row = acc[info.county]
            for k in range(n):
                row[k] += c[k]
    # what the roll-ups do not hold: spans of the period counted from the raw samples still kept
    rolled: list[tuple[int, int]] = []
    spans: list[tuple[int, int]] = []
    day = first
    while end > start and day <= last:
        a, b = max(start, midnight(day, tz)), min(end, midnight(day + timedelta(days=1), tz))
        whole = a == midnight(day, tz) and b == midnight(day + timedelta(days=1), tz)
        target = rolled if whole and day.toordinal() in stored else spans
        if target and target[-1][1] == a:
            target[-1] = (target[-1][0], b)
        else:
            target.append((a, b))
        day += timedelta(days=1)
    missing: list[tuple[int, int]] = []
    for a, b in spans:
        if a < raw_from:
            missing.append((a, min(b, raw_from)))
            a = raw_from
        if a >= b:
            continue
        # a few units a query: each reported every minute, 100 units x 14 days are 2 million rows held at once
        for i in range(0, len(sns), 100):
            chunk = sns[i:i + 100]
            histories = await storage.status_histories(chunk)
            by_sn: dict[str, list[Any]] = defaultdict(list)
            for r in await storage.network_samples(a - sla.LOSS_GAP_S, b, chunk):
                by_sn[r[0]].append(r[1:])
            for sn, rows in by_sn.items():
                info = index.get(sn)
                if info is None:
                    continue
                got = sla.count_unit(rows, info.hours.window_seconds(a, b), sla.history_pairs(histories.get(sn, [])),
                                     a, b, limits, tz)
                row = acc[info.county]
                for c in got.values():
                    for k in range(n):
                        row[k] += c[k]
    total = [sum(c[k] for c in acc.values()) for k in range(n)]
    evidence_from = min([p[0] for p in rolled] + [max(a, raw_from) for a, b in spans if b > raw_from], default=None)
    return {"limits": {"latency_ms": limits[0], "jitter_ms": limits[1], "loss": limits[2]},
            "evidence_from": datetime.fromtimestamp(evidence_from, tz).isoformat() if evidence_from is not None else None,
            "covers_period": not missing, "fleet": sla.shares(total),
            "counties": [{"county": k or "—", **sla.shares(v)} for k, v in sorted(acc.items())],
            "rolled_days": len(stored), "jitter_measured": total[4] > total[7], "loss_measured": total[6] > total[7]}


def _fs_rows(fs: Any) -> list[dict[str, Any]]:
    out = []
    for f in fs or []:
        if isinstance(f, dict):
            mount, size, used, writable = f.get("mount"), f.get("size_mb"), f.get("used_mb"), f.get("writable")
        else:
            mount, size, used, writable = (list(f) + [None] * 4)[:4]
        if mount is None:
            continue
        out.append({"mount": mount, "fill": round(used / size, 4) if size else None, "writable": writable})
    return out


async def inspection(availability: Any, storage: Any, index: dict[str, Any], start: int, end: int,
                     county: str | None, lang: str) -> dict[str, list[dict[str, Any]]]:
    """Per county, each terminal in service or spare at the end of the period: its inspection items."""
    tz = availability.tz
    live = {u["sn"]: u for u in await storage.live_index()}
    pages = await storage.last_commands("test_page")
    first_day, last_day = local_day(start, tz).toordinal(), local_day(end - 1, tz).toordinal()
    use = await storage.data_use(first_day, last_day)
    plan = availability.settings.analytics.sim_plan_mb * MB
    months = max(1, round((last_day - first_day + 1) / 30.4))
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sn in sorted(index):
        info = index[sn]
        if county is not None and info.county != county:
            continue
        if info.status not in ("in_service", "spare"):
            continue
        u = live.get(sn) or {}
        latest = u.get("latest") or {}
        inv = u.get("inventory") or {}
        ident = u.get("identity") or {}
        used, avail = latest.get("mem_used_mb"), latest.get("mem_avail_mb")
        checks = []
        for name, st in sorted((latest.get("checks") or {}).items()):
            state, why = (list(st) + [0, ""])[:2] if isinstance(st, list | tuple) else (st.get("state"), st.get("reason", ""))
            checks.append({"name": labels.peripheral(name, lang), "state": _state_word(state, lang),
                           "ok": state == OK, "reason": labels.reason(why, lang) if why else ""})
        page = pages.get(sn)
        versions = {"agent": inv.get("agent") or u.get("agent_version") or ""}
        versions.update({str(k): str(v or "") for k, v in (inv.get("components") or {}).items()})
        versions = {k: v for k, v in versions.items() if v}
        d = use.get(sn)
        fs = _fs_rows(latest.get("fs"))
        out[info.county].append({
            "sn": sn, "institution": info.institution_name or "", "status": info.status,
            "sample_at": datetime.fromtimestamp(int(latest["ts"]), tz).isoformat(timespec="minutes") if latest.get("ts") else None,
            "cpu": latest.get("cpu"), "load1": latest.get("load1"),
            "mem_used_mb": used, "mem_fill": round(used / (used + avail), 4) if used is not None and avail else None,
            "fs": fs, "storage_fill": max((f["fill"] for f in fs if f["fill"] is not None), default=None),
            "storage_writable": all(f["writable"] for f in fs) if fs else None,
            "checks": checks,
            "test_page": (datetime.fromtimestamp(int(page["finished"]), tz).isoformat(timespec="minutes"),
                          TEST_PAGE_STATES.get(lang, {}).get(page["state"], page["state"])) if page else None,
            "iccid": ident.get("iccid") or "", "carrier": labels.carrier(str(ident.get("carrier") or ""), lang)
            if ident.get("carrier") else "",
            "sim_mb": round(d["bytes"] / MB, 1) if d else None,
            "sim_share": round(d["bytes"] / (plan * months), 4) if d else None,
            "versions": versions,
        })
    return dict(sorted(out.items()))


async def fault_list(storage: Any, index: dict[str, Any], start: int, end: int, county: str | None, tz: Any,
                     lang: str, swaps: list[dict[str, Any]], limit: int = 2000) -> dict[str, Any]:
    """Fault, offline and storage alerts opened in the period: start, duration, cause (translated), and the repair
    recorded for the unit after the start (a swap, a repair) or whether the fault cleared by itself."""
    _n, alerts = await storage.list_alerts(open_only=False, limit=100000)
    now_end = end
    rows = []
    for a in alerts:
        if a["kind"] not in ("fault", "offline", "storage") or not start <= a["opened_ts"] < end:
            continue
        if county is not None and a.get("county") != county:
            continue
        data = a.get("data") or {}
        if a["kind"] == "fault":
            cause = labels.reason(f"{data.get('check', '?')}={data.get('reason') or 'fault'}", lang)
        else:
            cause = labels.label(f"kind.{a['kind']}", lang) or a["kind"]
        closed = a.get("closed_ts")
        fixes = [s for s in swaps if s["sn"] == a["sn"] and s["ts"] >= a["opened_ts"]
                 and (closed is None or s["ts"] <= closed + 86400)]
        if fixes:
            repair = "；".join(f"{s['change']} {s['when']}" + (f"（{s['note']}）" if s["note"] else "") for s in fixes)
        elif closed is not None:
            repair = "自行恢复" if lang == "zh" else "cleared by itself"
        else:
            repair = "未恢复" if lang == "zh" else "still open"
        info = index.get(a["sn"] or "")
        rows.append({"sn": a["sn"] or "", "county": a.get("county") or "", "institution": info.institution_name if info else "",
                     "start": datetime.fromtimestamp(a["opened_ts"], tz).isoformat(timespec="minutes"),
                     "minutes": round(((closed if closed is not None else now_end) - a["opened_ts"]) / 60),
                     "open": closed is None, "cause": cause, "repair": repair, "kind": a["kind"]})
    rows.sort(key=lambda r: (r["start"], r["sn"]))
    return {"total": len(rows), "items": rows[:limit]}


def spare_stock(index: dict[str, Any], county: str | None) -> list[dict[str, Any]]:
    """Spare and in-repair units per county from the registry (status ``spare`` / ``in_repair``)."""
    acc: dict[str, dict[str, int]] = defaultdict(lambda: {"spare": 0, "in_repair": 0, "in_service": 0})
    for u in index.values():
        if county is not None and u.county != county:
            continue
        if u.status in ("spare", "in_repair", "in_service"):
            acc[u.county or "—"][u.status] += 1
    return [{"county": k, **v} for k, v in sorted(acc.items())]


def recommendations(data: dict[str, Any], lang: str, limit: int = 20) -> list[str]:
    """What to do next, from the figures: units to visit (device rate below the threshold, or a fault still
    open), SIMs near their budget, counties out of spares, certificates near expiry, network limits missed."""
    zh = lang == "zh"
    out: list[str] = []
    visit = [u for u in data["flagged"] if "device_rate" in u["below"]]
    if visit:
        names = "、".join(u["sn"] for u in visit[:limit]) if zh else ", ".join(u["sn"] for u in visit[:limit])
        more = (f" 等 {len(visit)} 台" if zh else f" and others ({len(visit)} in all)") if len(visit) > limit else ""
        out.append(f"上门检修设备完好率低于达标线的终端：{names}{more}。" if zh else
                   f"Visit the units whose device intact rate is below the threshold: {names}{more}.")
    still = sorted({f["sn"] for f in data["fault_list"]["items"] if f["open"] and f["sn"]})
    if still:
        out.append(("故障尚未恢复的终端：" if zh else "Faults still open on: ")
                   + ("、" if zh else ", ").join(still[:limit]) + ("。" if zh else "."))
    sim = data.get("sim")
    if sim:
        over = sorted({t["sn"] for t in sim["top"] if t["plan_share"] >= 0.8})
        if over:
            out.append(("SIM 流量已达套餐 80% 以上，核查业务流量或调整套餐：" if zh else
                        "SIMs at 80 % of their plan or more (check the traffic or the plan): ")
                       + ("、" if zh else ", ").join(over[:limit]) + ("。" if zh else "."))
    empty = [s["county"] for s in data["spares"] if s["spare"] == 0 and s["in_service"] > 0]
    if empty:
        out.append(("以下区县无备机，建议补充：" if zh else "No spare units left in: ") + ("、" if zh else ", ").join(empty)
                   + ("。" if zh else "."))
    si = data.get("server_inspection")
    if si:
        terms = (si.get("certificates") or {}).get("terminals") or {}
        soon = terms.get("soonest") or []
        if soon:
            out.append((f"{len(soon)} 台终端证书将在 {soon[-1]['days_left']:.0f} 天内到期，安排续期：" if zh else
                        f"{len(soon)} terminal certificates expire within {soon[-1]['days_left']:.0f} days; renew: ")
                       + ("、" if zh else ", ").join(c["sn"] for c in soon[:limit]) + ("。" if zh else "."))
    sla = data["sla"]
    for key, zh_name, en_name in (("latency", "时延", "latency"), ("jitter", "抖动", "jitter"), ("loss", "丢包", "loss")):
        bad = [c["county"] for c in sla["counties"] if c[key] is not None and c[key] < data["threshold"]]
        if bad:
            out.append(f"{('、'.join(bad))}：{zh_name}达标时间占比低于 {data['threshold'] * 100:g}%，请运营商排查。" if zh else
                       f"{', '.join(bad)}: {en_name} within the limit less than {data['threshold'] * 100:g} % of "
                       "service time; ask the carrier.")
    if not (data.get("fleet") or {}).get("service_slots"):
        # nothing was counted (no unit in service, or a period before the server counted): no target was met
        out.insert(0, "本期无服务时隙，无据以判断各项指标是否达标。" if zh else
                   "No service slots were counted in the period: no figure can be said to meet its target.")
    if not out:
        out.append("本期各项指标均达标，按计划巡检。" if zh else "Every figure met its target; inspect as planned.")
    return out


def inspection_text(si: dict[str, Any], L: dict[str, str]) -> dict[str, Any]:
    """The self-inspection's status, certificate names and problems in the report's language (the server's
    ``message`` is English, for its log): the same words as the dashboard's 服务器 page (app.js ``problemText``)."""
    def fill(key: str, **v: Any) -> str:
        text = L[key]
        for k, x in v.items():
            text = text.replace("{" + k + "}", "" if x is None else str(x))
        return text.strip()

    def num(x: Any) -> Any:
        return round(x) if isinstance(x, (int, float)) else x

    cert = {w: L.get(f"si_cert_{w}", w) for w in ("ca", "broker", "server", "terminals")}
    problems = []
    for p in si.get("problems") or []:
        v, check = p.get("vars") or {}, p.get("check")
        what = cert.get(v.get("what"), v.get("what") or "")
        if check == "disk":
            text = fill("problem_disk_error", path=v.get("path"), error=v.get("error")) if v.get("error") else \
                fill("problem_disk", path=v.get("path"), pct=v.get("pct"), line=v.get("line"))
        elif check == "backup":
            text = fill("problem_backup_none") if v.get("age_h") is None else \
                fill("problem_backup", age=num(v["age_h"]), line=v.get("line"))
        elif check == "broker":
            text = fill("problem_broker", address=v.get("address"), error=v.get("error"))
        elif check == "certificate":
            text = fill("problem_cert_error", what=what, error=v.get("error")) if v.get("error") else \
                fill("problem_cert" if (v.get("days") or 0) >= 0 else "problem_cert_expired", what=what,
                     days=num(v.get("days")))
        elif check == "time":
            text = fill("problem_time", ms=v.get("max_error_ms"))
        elif check == "renewal":
            text = fill("problem_renewal", n=v.get("n"), days=num(v.get("days")))
        elif check == "report":
            text = fill("problem_report", period=v.get("period"), days=v.get("days"))
        else:
            text = p.get("message", "")
        problems.append(text)
    status = fill("si_problems", n=len(problems)) if problems else L["si_ok"]
    return {"status": status, "cert": cert, "problems": problems}


def chinese_datetime(ts: int, tz: Any) -> str:
    dt = datetime.fromtimestamp(ts, tz)
    return f"{dt.year}年{dt.month}月{dt.day}日 {dt:%H:%M}"

