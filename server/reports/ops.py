"""The operations service report for a period: the figures the contract is paid on, and where they come from.

Every rate in it comes from :meth:`server.availability.service.Availability.figures`, the function behind
``GET /api/v1/availability``, so the report and the API agree to the slot. Chinese labels by default.

Sections: fleet rates and tier; per county; per institution; flagged units with the rate(s) below the threshold
and the minutes lost by reason; faults by peripheral (minutes among flagged units, and fault alerts opened);
likely carrier outages (by county and by cell site); units swapped and repaired; SIM data use per calendar month
against the plan (from the units' data counters; "none reported" when no unit reported one).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..alerts.service import cell_outage_runs, outage_runs
from ..analytics.datause import MB, month_bounds
from ..availability.rollups import local_day
from ..exports import protect

LABELS = {
    "zh": {
        "title": "医保终端运维服务报告", "period": "统计期间", "county": "区县", "all": "全部", "generated": "生成时间",
        "rule": "计数规则：每分钟一个时隙，仅计机构服务时间内、终端登记为在用的时隙；无数据时隙既不算完好也不算网络可用。",
        "threshold": "达标线", "counted_to": "已计至", "incomplete": "注意：期间尚未结束或有迟到数据待重算，数字可能变化。",
        "fleet": "全省（本范围）汇总", "device_rate": "设备完好率", "network_rate": "网络可用率", "tier": "合同档次",
        "final_payment": "尾款比例", "service_slots": "服务时隙", "intact_slots": "完好时隙",
        "network_ok_slots": "网络可用时隙", "no_data_slots": "无数据时隙", "units": "终端数", "flagged_units": "未达标终端",
        "by_county": "分区县", "by_institution": "分机构", "institution": "机构", "name": "名称", "flagged": "未达标终端明细",
        "sn": "终端SN", "below": "未达标项", "reasons": "原因（分钟）", "faults": "外设故障", "peripheral": "外设",
        "fault_minutes": "故障分钟（未达标终端）", "fault_alerts": "故障告警数", "outages": "疑似运营商网络故障",
        "start": "开始", "end": "结束", "minutes": "分钟", "max_units": "同时断网终端数", "swaps": "换机与维修",
        "when": "时间", "change": "变更", "note": "说明", "by": "操作人", "sim": "SIM流量",
        "sim_none": "本期无终端上报流量计数，无SIM流量统计。", "none": "无", "evidence_from": "原始数据起于",
        "outages_cell": "疑似运营商基站故障", "cell": "基站（TAC/小区）", "month": "月份", "plan": "套餐(MB)",
        "sim_reporting": "上报终端数", "sim_total": "总流量(MB)", "sim_over80": "达套餐80%终端", "sim_over100": "超套餐终端",
        "sim_top": "流量最多的终端", "used_mb": "用量(MB)", "plan_share": "占套餐",
        "swapped": "换上备机", "to_repair": "送修", "repaired": "修复返回", "other": "状态变更",
    },
    "en": {
        "title": "Operations service report: medical-insurance terminals", "period": "Period", "county": "County",
        "all": "all", "generated": "Generated",
        "rule": "Counting rule: one slot a minute; only slots inside the institution's service hours while the unit is "
                "registered in service count; a slot with no data is neither intact nor network ok.",
        "threshold": "Threshold", "counted_to": "Counted to",
        "incomplete": "Note: the period is still open or late data awaits recount; figures may change.",
        "fleet": "Fleet (this scope)", "device_rate": "Device intact rate", "network_rate": "Network availability rate",
        "tier": "Contract tier", "final_payment": "Final payment", "service_slots": "Service slots",
        "intact_slots": "Intact slots", "network_ok_slots": "Network ok slots", "no_data_slots": "No-data slots",
        "units": "Units", "flagged_units": "Flagged units", "by_county": "By county", "by_institution": "By institution",
        "institution": "Institution", "name": "Name", "flagged": "Flagged units", "sn": "SN", "below": "Below threshold",
        "reasons": "Reasons (minutes)", "faults": "Peripheral faults", "peripheral": "Peripheral",
        "fault_minutes": "Fault minutes (flagged units)", "fault_alerts": "Fault alerts", "outages": "Likely carrier outages",
        "start": "Start", "end": "End", "minutes": "Minutes", "max_units": "Units down together", "swaps": "Swaps and repairs",
        "when": "When", "change": "Change", "note": "Note", "by": "By", "sim": "SIM data use",
        "sim_none": "No unit reported a data counter in this period; no SIM data use.", "none": "none",
        "outages_cell": "Likely carrier outages by cell site", "cell": "Cell site (TAC/cell)", "month": "Month",
        "plan": "Plan (MB)", "sim_reporting": "Units reporting", "sim_total": "Total (MB)",
        "sim_over80": "Units at 80 % of plan", "sim_over100": "Units over plan", "sim_top": "Highest use",
        "used_mb": "Used (MB)", "plan_share": "Of plan",
        "evidence_from": "raw evidence from", "swapped": "spare swapped in", "to_repair": "sent to repair",
        "repaired": "back from repair", "other": "status change",
    },
}


async def build(availability: Any, storage: Any, start: int, end: int, county: str | None = None,
                lang: str = "zh", flagged_limit: int = 500) -> dict[str, Any]:
    """Everything the report shows, as data (the HTML and CSV renderers only format it)."""
    tz = availability.tz
    L = LABELS[lang]
    fleet = await availability.figures(start, end, "fleet", county=county)
    counties = await availability.figures(start, end, "county", county=county)
    institutions = await availability.figures(start, end, "institution", county=county)
    flagged = await availability.flagged(start, end, county=county, limit=flagged_limit)
    # faults by peripheral: minutes among flagged units, fault alerts opened in the period
    fault_minutes: Counter[str] = Counter()
    for u in flagged["items"]:
        for reason, minutes in u["reasons"]["minutes"].items():
            if "=" in reason:
                fault_minutes[reason.split("=", 1)[0]] += minutes
    _n, alerts = await storage.list_alerts(open_only=False, kind="fault", limit=100000)
    fault_alerts: Counter[str] = Counter(
        a["data"].get("check", "?") for a in alerts if start <= a["opened_ts"] < end and (county is None or a["county"] == county))
    peripherals = sorted(set(fault_minutes) | set(fault_alerts))
    # swaps and repairs
    index = await availability.registry.index()
    changes = await storage.status_changes_between(start, end)
    histories = await storage.status_histories(sorted({c["sn"] for c in changes}))
    swaps = []
    for c in changes:
        info = index.get(c["sn"])
        if county is not None and (info is None or info.county != county):
            continue
        hist = histories.get(c["sn"], [])
        before = [h for h in hist if h["from_ts"] < c["from_ts"]]
        prev = before[-1]["status"] if before else None
        if c["by"] == "ingest" or c["note"] == "registered":
            continue
        if c["status"] == "in_repair":
            kind = "to_repair"
        elif c["status"] == "in_service" and prev == "spare":
            kind = "swapped"
        elif prev == "in_repair":
            kind = "repaired"
        else:
            kind = "other"
        swaps.append({"when": datetime.fromtimestamp(c["from_ts"], tz).isoformat(timespec="minutes"), "sn": c["sn"],
                      "change": L[kind], "status": c["status"], "previous": prev, "note": c["note"], "by": c["by"],
                      "institution": info.institution_name if info else ""})
    outages = [{**o, "start": datetime.fromtimestamp(o["start"], tz).isoformat(timespec="minutes"),
                "end": datetime.fromtimestamp(o["end"], tz).isoformat(timespec="minutes")}
               for o in await outage_runs(storage, start, end, county)]
    cell_outages = [{**o, "start": datetime.fromtimestamp(o["start"], tz).isoformat(timespec="minutes"),
                     "end": datetime.fromtimestamp(o["end"], tz).isoformat(timespec="minutes")}
                    for o in await cell_outage_runs(storage, start, end, county)]
    return {
        "lang": lang, "labels": L, "cell_outages": cell_outages,
        "sim": await sim_section(availability, storage, index, start, end, county),
        "from": fleet["from"], "to": fleet["to"], "counted_to": fleet["counted_to"], "complete": fleet["complete"],
        "county": county, "threshold": fleet["threshold"],
        "generated": datetime.fromtimestamp(int(availability.clock.now()), tz).isoformat(timespec="seconds"),
        "fleet": fleet["fleet"], "counties": counties["items"], "institutions": institutions["items"],
        "flagged": flagged["items"], "flagged_total": flagged["total"],
        "faults": [{"peripheral": p, "fault_minutes": fault_minutes.get(p, 0), "fault_alerts": fault_alerts.get(p, 0)}
                   for p in peripherals],
        "outages": outages, "swaps": swaps,
    }


async def sim_section(availability: Any, storage: Any, index: dict[str, Any], start: int, end: int,
                      county: str | None) -> dict[str, Any] | None:
    """SIM data use per calendar month of the period (its days in the period), against the monthly plan;
    None when no unit in scope reported a data counter."""
    tz = availability.tz
    plan = availability.settings.analytics.sim_plan_mb * MB
    first_day, last_day = local_day(start, tz).toordinal(), local_day(end - 1, tz).toordinal()
    months, top = [], []
    day = first_day
    while day <= last_day:
        m_first, m_last, _a, _b = month_bounds(None, _noon(day, tz), tz)
        a, b = max(day, m_first.toordinal()), min(last_day, m_last.toordinal())
        use = {sn: u for sn, u in (await storage.data_use(a, b)).items()
               if sn in index and (county is None or index[sn].county == county)}
        if use:
            months.append({"month": f"{m_first:%Y-%m}", "plan_mb": plan // MB, "reporting": len(use),
                           "total_mb": round(sum(u["bytes"] for u in use.values()) / MB, 1),
                           "over_80": sum(1 for u in use.values() if u["bytes"] * 100 >= 80 * plan),
                           "over_100": sum(1 for u in use.values() if u["bytes"] >= plan)})
            for sn, u in use.items():
                info = index[sn]
                top.append({"month": f"{m_first:%Y-%m}", "sn": sn, "institution": info.institution_name or "",
                            "county": info.county, "used_mb": round(u["bytes"] / MB, 1),
                            "plan_share": round(u["bytes"] / plan, 4)})
        day = b + 1
    if not months:
        return None
    top.sort(key=lambda t: (-t["used_mb"], t["month"], t["sn"]))
    return {"months": months, "top": top[:20]}


def _noon(day: int, tz: Any) -> int:
    from datetime import date

    from ..availability.rollups import midnight

    return midnight(date.fromordinal(day), tz) + 12 * 3600


def pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.2f} %"


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
                      autoescape=select_autoescape(["html"]))
    env.filters["pct"] = pct
    return env


def render_html(data: dict[str, Any]) -> str:
    return _env().get_template("ops.html").render(**data)


class _SafeWriter:
    """Text cells as :mod:`server.exports` writes them: digit strings (an institution code, a numeric SN) kept as
    text by Excel and WPS, would-be formulas neutralised; numbers stay numbers."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def writerow(self, row: list[Any]) -> None:
        self.writer.writerow([protect(v) if isinstance(v, str) else v for v in row])


def render_csv(data: dict[str, Any]) -> bytes:
    """The same tables as the HTML, one section after another (UTF-8 with BOM for spreadsheets)."""
    L = data["labels"]
    buf = io.StringIO(newline="")
    w = _SafeWriter(csv.writer(buf, lineterminator="\r\n"))
    counts = ["service_slots", "intact_slots", "network_ok_slots", "no_data_slots"]
    w.writerow([L["title"]])
    w.writerow([L["period"], data["from"], data["to"], L["counted_to"], data["counted_to"]])
    w.writerow([L["county"], data["county"] or L["all"], L["threshold"], data["threshold"]])
    w.writerow([])
    w.writerow([L["fleet"]])
    w.writerow([L[k] for k in ["device_rate", "network_rate", "tier", "final_payment", *counts, "units", "flagged_units"]])
    f = data["fleet"]
    w.writerow([f["device_rate"], f["network_rate"], f["tier"], f["final_payment"], *(f[k] for k in counts),
                f["units"], f["flagged_units"]])
    for title, key, rows in (("by_county", "county", data["counties"]), ("by_institution", "institution", data["institutions"])):
        w.writerow([])
        w.writerow([L[title]])
        head = [L[key]] + ([L["name"]] if key == "institution" else [])
        w.writerow(head + [L[k] for k in ["device_rate", "network_rate", *counts, "units", "flagged_units"]])
        for r in rows:
            w.writerow([r[key]] + ([r.get("name", "")] if key == "institution" else [])
                       + [r["device_rate"], r["network_rate"], *(r[k] for k in counts), r["units"], r["flagged_units"]])
    w.writerow([])
    w.writerow([L["flagged"]])
    w.writerow([L["sn"], L["institution"], L["county"], L["device_rate"], L["network_rate"], *(L[k] for k in counts),
                L["below"], L["reasons"]])
    for u in data["flagged"]:
        reasons = "; ".join(f"{k}: {v}" for k, v in u["reasons"]["minutes"].items())
        w.writerow([u["sn"], u["institution"] or "", u["county"], u["device_rate"], u["network_rate"],
                    *(u[k] for k in counts), "+".join(u["below"]), reasons])
    w.writerow([])
    w.writerow([L["faults"]])
    w.writerow([L["peripheral"], L["fault_minutes"], L["fault_alerts"]])
    for r in data["faults"]:
        w.writerow([r["peripheral"], r["fault_minutes"], r["fault_alerts"]])
    w.writerow([])
    w.writerow([L["outages"]])
    w.writerow([L["county"], L["start"], L["end"], L["minutes"], L["max_units"]])
    for o in data["outages"]:
        w.writerow([o["county"], o["start"], o["end"], o["minutes"], o["max_units"]])
    w.writerow([])
    w.writerow([L["outages_cell"]])
    w.writerow([L["cell"], L["county"], L["start"], L["end"], L["minutes"], L["max_units"]])
    for o in data["cell_outages"]:
        w.writerow([o["cell"], o["county"], o["start"], o["end"], o["minutes"], o["max_units"]])
    w.writerow([])
    w.writerow([L["swaps"]])
    w.writerow([L["when"], L["sn"], L["change"], L["institution"], L["note"], L["by"]])
    for s in data["swaps"]:
        w.writerow([s["when"], s["sn"], s["change"], s["institution"], s["note"], s["by"]])
    w.writerow([])
    sim = data["sim"]
    if sim is None:
        w.writerow([L["sim"], L["sim_none"]])
    else:
        w.writerow([L["sim"]])
        w.writerow([L["month"], L["plan"], L["sim_reporting"], L["sim_total"], L["sim_over80"], L["sim_over100"]])
        for m in sim["months"]:
            w.writerow([m["month"], m["plan_mb"], m["reporting"], m["total_mb"], m["over_80"], m["over_100"]])
        w.writerow([])
        w.writerow([L["sim_top"]])
        w.writerow([L["month"], L["sn"], L["institution"], L["county"], L["used_mb"], L["plan_share"]])
        for t in sim["top"]:
            w.writerow([t["month"], t["sn"], t["institution"], t["county"], t["used_mb"], t["plan_share"]])
    return b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8")
