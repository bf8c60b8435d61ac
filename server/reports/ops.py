"""The operations service report for a period: the figures the contract is paid on, and where they come from.

Every rate in it comes from :meth:`server.availability.service.Availability.figures`, the function behind
``GET /api/v1/availability``, so the report and the API agree to the slot. Chinese labels by default.

Sections: fleet rates and tier; per county; per institution; flagged units with the rate(s) below the threshold
and the minutes lost by reason; faults by peripheral (minutes among flagged units, and fault alerts opened);
likely carrier outages (by county and by cell site); units swapped and repaired; SIM data use per calendar month
against the plan (from the units' data counters; "none reported" when no unit reported one).

As the document the contract asks for (issue 17): a cover (title, contract parties and number, the period in
Chinese dates with its last day, report number, generated time), the counting rule and the tier clause with its
result (province-wide only: a county report prints no tier), daily trend and by-county charts (inline SVG),
network service levels per clause, the inspection appendix per county, the fault list, spare stock, the server's
self-inspection, recommendations and a signature and seal block (server/reports/document.py). Contract parties,
numbers and tiers come from the settings (``[reports]``, ``[availability] tiers``). Every reason code is shown in
words (server/labels.py: the dashboard's table). Formats: HTML (A4), PDF (that HTML printed), CSV (rates as
percent columns) and XLSX (server/exports.py: typed numbers, ICCIDs as text).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import datetime, timedelta
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
        "rule": "计数规则：每分钟一个时隙，仅计机构服务时间内、终端登记为在用的时隙；无数据时隙既不算完好也不算网络通畅。",
        "threshold": "达标线", "counted_to": "已计至", "incomplete": "注意：期间尚未结束或有迟到数据待重算，数字可能变化。",
        "fleet": "全省（本范围）汇总", "device_rate": "设备完好率", "network_rate": "网络通畅率", "tier": "合同档次",
        "final_payment": "尾款比例", "service_slots": "服务时隙", "intact_slots": "完好时隙",
        "network_ok_slots": "网络通畅时隙", "no_data_slots": "无数据时隙", "units": "终端数", "flagged_units": "未达标终端",
        "by_county": "分区县", "by_region": "分市（统筹区）", "region": "市（统筹区）", "by_institution": "分机构", "institution": "机构", "name": "名称", "flagged": "未达标终端明细",
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
        "units": "Units", "flagged_units": "Flagged units", "by_county": "By county", "by_region": "By city (region)", "region": "City (region)", "by_institution": "By institution",
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


# the document's further sections (issue 17)
LABELS["zh"].update({
    "client": "甲方（委托方）", "contractor": "乙方（服务方）", "contract_no": "合同编号", "report_no": "报告编号",
    "not_set": "（未配置）", "period_days": "共 {n} 天，含最后一日", "toc": "目录",
    "tier_clause": "合同付款条款", "tier_condition": "设备完好率与{net}", "tier_result": "本期结果",
    "tier_result_text": "设备完好率 {dev}，{net} {netv}：第 {tier} 档，尾款为合同总价的 {share}。",
    "tier_county": "合同档次按全省汇总数字确定，区县报告不判定档次。",
    "tier_none": "本期无服务时隙，无法判定档次。",
    "charts": "趋势与分区县图表", "trend": "每日{dev}与{net}", "by_county_chart": "分区县{dev}与{net}",
    "sla": "网络服务水平", "sla_rule": "按合同条款：时延 ≤ {lat} ms，抖动 ≤ {jit} ms，丢包率 ≤ {loss}，误包率 ≤ 1×10⁻⁴。"
           "每个样本代表其间隔内的服务时间；断网样本计为不达标；未测得该项的在线样本单列为“未测量”，不计为达标。",
    "sla_latency": "时延达标占比", "sla_jitter": "抖动达标占比", "sla_loss": "丢包达标占比", "sla_hours": "服务时长(小时)",
    "sla_measured": "测量覆盖", "sla_down": "断网占比",
    "sla_no_jitter": "本期终端未上报抖动测量值，抖动一项无法评估。",
    "sla_no_loss": "本期终端未上报 TCP 重传计数，丢包一项无法评估。",
    "sla_no_error": "终端不测量误包率（≤ 1×10⁻⁴），本报告不评估该项；需由运营商提供。",
    "sla_from": "依据按日汇总的网络服务水平及服务器保留的原始样本（自 {t} 起）；此前的时段无汇总也无原始样本，未计入本节。",
    "sla_none": "本期无保留的原始样本，无法统计网络服务水平。",
    "inspection": "附录：终端巡检记录", "inspection_rule": "每台终端的最新上报数据（处理器、内存、存储、外设）、软件版本、SIM 卡与本期流量、最近一次测试页。",
    "inspection_split": "终端数较多，巡检记录按区县另行成册（posfleet report ops --appendix，或 API 参数 part=appendix&county=…）。",
    "sample_at": "数据时间", "cpu": "CPU(%)", "mem": "内存占用", "storage_fill": "存储占用", "storage_rw": "读写",
    "peripherals": "外设状态", "test_page": "最近测试页", "iccid": "ICCID", "sim_use": "本期流量(MB)",
    "versions": "软件版本", "writable": "可读写", "readonly": "只读", "never": "未打印", "status": "状态",
    "fault_list": "故障记录", "duration": "持续(分钟)", "cause": "原因", "repair": "处理", "more": "另有 {n} 条未列出",
    "spares": "备机库存", "spare": "备机", "in_repair": "送修中", "in_service": "在用",
    "spares_source": "依据终端登记（状态：备机、送修中）。",
    "server": "服务器自检", "server_hook": "服务器自检数据由运行中的服务器提供（API 与定时报告）；本报告未取得（命令行生成，或自检失败，见服务器日志）。",
    "server_status": "总体状态", "problems": "问题", "backup": "最近备份", "backup_age": "备份距今(小时)",
    "db_size": "数据库大小(MB)", "disk": "磁盘", "disk_fill": "占用", "cert": "证书", "expires": "到期",
    "days_left": "剩余天数", "terms_expiring": "60 天内到期的终端证书", "time_sync": "时间同步", "yes": "是", "no": "否",
    "recommendations": "建议", "signature": "签章",
    "sign_client": "甲方（盖章）", "sign_contractor": "乙方（盖章）", "sign_person": "负责人签字", "sign_date": "日期",
    "pct_unit": "(%)", "spare_units": "备机",
    # the self-inspection's status, certificate names and problems, worded as the dashboard's 服务器 page words them
    "item": "项目", "value": "结果",
    "si_ok": "各项正常", "si_problems": "发现 {n} 项问题", "si_cert_ca": "根证书（CA）", "si_cert_broker": "消息服务器证书",
    "si_cert_server": "服务器客户端证书", "si_cert_terminals": "CA 证书索引",
    "problem_disk": "{path} 已用 {pct}%（告警线 {line}%）", "problem_disk_error": "{path}：{error}",
    "problem_backup": "最近一次数据库备份已过 {age} 小时（告警线 {line} 小时）",
    "problem_backup_none": "没有数据库备份记录（posfleet server db backup）", "problem_broker": "未连接消息服务器 {address} {error}",
    "problem_cert": "{what}{days} 天后到期", "problem_cert_expired": "{what}已过期", "problem_cert_error": "{what}无法读取：{error}",
    "problem_time": "服务器时钟未同步（未运行 NTP：chrony 或 systemd-timesyncd），最大误差 {ms} 毫秒",
    "problem_renewal": "{n} 个终端证书续期请求等待 CA 签发，最早的已等 {days} 天：请在 CA 主机运行 posfleet ca sign-renewals",
    "problem_report": "定期报告 {period} 错过未生成，其汇总数据已不保留（availability.rollup_keep_days = {days}），无法补做",
})
LABELS["en"].update({
    "client": "Client (party A)", "contractor": "Contractor (party B)", "contract_no": "Contract no.",
    "report_no": "Report no.", "not_set": "(not configured)", "period_days": "{n} days, last day included",
    "toc": "Contents", "tier_clause": "Payment clause", "tier_condition": "Device intact rate and {net}",
    "tier_result": "Result", "tier_result_text": "Device intact rate {dev}, {net} {netv}: tier {tier}, final payment "
                                                "{share} of the total fee.",
    "tier_county": "The contract tier is decided on the province-wide figures; a county report prints none.",
    "tier_none": "No service slots in the period: no tier.",
    "charts": "Trend and counties", "trend": "Daily {dev} and {net}", "by_county_chart": "{dev} and {net} by county",
    "sla": "Network service levels", "sla_rule": "Per the contract: latency ≤ {lat} ms, jitter ≤ {jit} ms, loss ≤ {loss}, "
           "packet error ≤ 1e-4. Each sample stands for its interval of service time; a sample with the link down is "
           "outside every limit; a connected sample without the measure is unmeasured, not counted as within.",
    "sla_latency": "Latency within", "sla_jitter": "Jitter within", "sla_loss": "Loss within",
    "sla_hours": "Service hours", "sla_measured": "measured", "sla_down": "Link down",
    "sla_no_jitter": "No terminal reported jitter in the period: jitter cannot be judged.",
    "sla_no_loss": "No terminal reported TCP retransmission counters: loss cannot be judged.",
    "sla_no_error": "Terminals do not measure packet error (≤ 1e-4): not judged here; the carrier must provide it.",
    "sla_from": "From the daily network service-level roll-ups and the raw samples the server keeps (from {t}); earlier time has neither and is not counted here.",
    "sla_none": "No raw samples kept for the period: network service levels cannot be counted.",
    "inspection": "Appendix: terminal inspection", "inspection_rule": "Each terminal's newest report (CPU, memory, storage, "
                  "peripherals), software versions, SIM and its data use in the period, last test page.",
    "inspection_split": "Many terminals: the inspection appendix is made per county (posfleet report ops --appendix, or "
                        "the API's part=appendix&county=...).",
    "sample_at": "Reported", "cpu": "CPU (%)", "mem": "Memory", "storage_fill": "Storage", "storage_rw": "R/W",
    "peripherals": "Peripherals", "test_page": "Last test page", "iccid": "ICCID", "sim_use": "Data (MB)",
    "versions": "Software", "writable": "rw", "readonly": "read-only", "never": "never", "status": "Status",
    "fault_list": "Faults", "duration": "Minutes", "cause": "Cause", "repair": "Repair", "more": "{n} more not listed",
    "spares": "Spare stock", "spare": "Spare", "in_repair": "In repair", "in_service": "In service",
    "spares_source": "From the registry (status spare, in repair).",
    "server": "Server self-inspection", "server_hook": "The server's self-inspection comes from the running server (API "
              "and scheduled reports); this report has none (made on the command line, or the inspection failed: "
              "see the server's log).",
    "server_status": "Status", "problems": "Problems", "backup": "Last backup", "backup_age": "Backup age (h)",
    "db_size": "Database (MB)", "disk": "Disk", "disk_fill": "Used", "cert": "Certificate", "expires": "Expires",
    "days_left": "Days left", "terms_expiring": "Terminal certificates expiring within 60 days", "time_sync": "Time sync",
    "yes": "yes", "no": "no", "recommendations": "Recommendations", "signature": "Signatures",
    "sign_client": "Client (seal)", "sign_contractor": "Contractor (seal)", "sign_person": "Signed by",
    "sign_date": "Date", "pct_unit": " (%)", "spare_units": "Spares",
    "item": "Item", "value": "Result",
    "si_ok": "all checks passed", "si_problems": "{n} problems found", "si_cert_ca": "Fleet CA", "si_cert_broker": "Broker",
    "si_cert_server": "Server (MQTT client)", "si_cert_terminals": "the CA's index",
    "problem_disk": "{path} {pct}% full (alert at {line}%)", "problem_disk_error": "{path}: {error}",
    "problem_backup": "the last database backup is {age} h old (alert after {line} h)",
    "problem_backup_none": "no database backup recorded (posfleet server db backup)",
    "problem_broker": "not connected to the broker at {address} {error}",
    "problem_cert": "{what} expires in {days} days", "problem_cert_expired": "{what} has expired",
    "problem_cert_error": "{what} cannot be read: {error}",
    "problem_time": "the server's clock is not synchronised (no NTP: chrony or systemd-timesyncd), max error {ms} ms",
    "problem_renewal": "{n} terminal certificate renewal request(s) wait for the CA, the oldest {days} days: run "
                       "posfleet ca sign-renewals on the CA's host",
    "problem_report": "the scheduled report {period} was missed and cannot be made now: its roll-ups are no longer "
                      "kept (availability.rollup_keep_days = {days})",
})


def labels_for(settings: Any, lang: str) -> dict[str, str]:
    """The report's labels with the configured title and the contract's word for the network figure."""
    L = dict(LABELS[lang])
    r = settings.reports
    L["title"] = r.title if lang == "zh" else r.title_en
    if lang == "zh":
        term = r.network_term
        L["network_rate"] = term
        L["network_ok_slots"] = f"{term.removesuffix('率')}时隙"
    return L


async def build(availability: Any, storage: Any, start: int, end: int, county: str | None = None,
                lang: str = "zh", flagged_limit: int = 500, *, period: Any = None,
                server_inspection: dict[str, Any] | None = None, appendix: bool | None = None,
                part: str = "report") -> dict[str, Any]:
    """Everything the report shows, as data (the HTML, CSV and XLSX renderers only format it).

    ``period``: a :class:`server.reports.periods.Period` (month, quarter; by default the days of
    ``[start, end)``). ``server_inspection``: :func:`server.inspection.service.inspect`'s answer, or None (the
    section then says where it comes from). ``appendix``: include the inspection appendix (None: when at most
    ``[reports] appendix_max_units`` terminals are in scope). ``part="appendix"``: the appendix alone (per county files)."""
    from . import document
    from .periods import Period, period_name, period_text

    tz = availability.tz
    settings = availability.settings
    L = labels_for(settings, lang)
    if period is None:
        first = datetime.fromtimestamp(start, tz)
        last_dt = datetime.fromtimestamp(end, tz)
        last = last_dt.date() - timedelta(days=1) if (last_dt.hour, last_dt.minute) == (0, 0) else last_dt.date()
        period = Period(start, end, "days", f"{first.date().isoformat()}_{last.isoformat()}", first.date(), last)
    index = await availability.registry.index()
    r = settings.reports
    number = f"{r.number_prefix}{period.key}" + (f"-{county}" if county else "")
    cover = {"title": L["title"], "client": r.client, "contractor": r.contractor, "contract_no": r.contract_no,
             "report_no": number, "period_text": period_text(period, tz, lang), "period_name": period_name(period, lang),
             "days": (period.last - period.first).days + 1, "county": county,
             "generated_text": document.chinese_datetime(int(availability.clock.now()), tz) if lang == "zh" else
             datetime.fromtimestamp(int(availability.clock.now()), tz).strftime("%d %B %Y %H:%M")}
    in_scope = sum(1 for u in index.values() if county is None or u.county == county)
    limit = settings.reports.appendix_max_units
    with_appendix = (in_scope <= limit) if appendix is None else appendix
    if part == "appendix":
        return {"lang": lang, "labels": L, "cover": cover, "part": "appendix", "county": county, "period_key": period.key,
                "from": datetime.fromtimestamp(start, tz).isoformat(), "to": datetime.fromtimestamp(end, tz).isoformat(),
                "generated": datetime.fromtimestamp(int(availability.clock.now()), tz).isoformat(timespec="seconds"),
                "inspection": await document.inspection(availability, storage, index, start, end, county, lang),
                "appendix_included": True}
    data = await _figures_part(availability, storage, start, end, county, lang, flagged_limit, L, index)
    data.update(cover=cover, part="report", period_key=period.key, period_kind=period.kind,
                tier_clause=document.tier_clause(settings, lang), network_term=L["network_rate"])
    data["trend"] = await document.trend(availability, storage, index, start, end, county)
    data["sla"] = await document.network_sla(availability, storage, index, start, end, county)
    data["fault_list"] = await document.fault_list(storage, index, start, end, county, tz, lang, data["swaps"])
    data["spares"] = document.spare_stock(index, county)
    # the server's self-inspection is the province's matter: a county report (whoever asks for it) has no such
    # section, so a county user's report is the province's report of that county, word for word
    data["server_section"] = county is None
    if county is not None:
        server_inspection = None
    data["server_inspection"] = server_inspection
    data["server_text"] = document.inspection_text(server_inspection, L) if server_inspection else None
    data["appendix_included"] = with_appendix
    data["appendix_split"] = in_scope > limit  # PDF/HTML: the appendix in per-county files (documents())
    data["inspection"] = (await document.inspection(availability, storage, index, start, end, county, lang)
                          if with_appendix else {})
    data["recommendations"] = document.recommendations(data, lang)
    data["charts"] = _charts(data, L)
    return data


def _server_sheet(data: dict[str, Any], col: Any) -> Any:
    """The server's self-inspection as the HTML's section gives it, one line an item, in the report's language."""
    from ..exports import Sheet

    L = data["labels"]
    si, words = data.get("server_inspection"), data.get("server_text")
    if not si or not words:
        return Sheet(L["server"], [col("item")], [], [L["server_hook"]])
    backup = si["backup"]
    rows = [{"item": L["server_status"], "value": words["status"]},
            {"item": L["backup"], "value": (backup.get("file") or L["none"])
             + (f" · {L['backup_age']} {backup['age_h']}" if backup.get("age_h") is not None else "")},
            {"item": L["db_size"], "value": f"{si['database']['bytes'] / 1048576:.1f}" if si["database"].get("bytes") else "—"}]
    rows += [{"item": f"{L['disk']} {d['path']}", "value": f"{d['used_pct']}%" if "used_pct" in d else d.get("error", "")}
             for d in si["disks"]]
    rows += [{"item": f"{L['cert']} {words['cert'].get(c['what'], c['what'])}",
              "value": f"{c['days_left']} {L['days_left']}" if "days_left" in c else c.get("error", "")}
             for c in si["certificates"]["items"]]
    terms = si["certificates"]["terminals"]
    rows.append({"item": L["terms_expiring"], "value": f"{terms['expiring']} / {terms['total']}"})
    rows.append({"item": L["time_sync"], "value": L["yes"] if si["time_sync"].get("synchronised") else L["no"]})
    rows += [{"item": L["problems"], "value": p} for p in words["problems"]]
    return Sheet(L["server"], [col("item"), col("value")], rows)


def _charts(data: dict[str, Any], L: dict[str, str]) -> dict[str, str]:
    from .charts import bar_chart, line_chart

    thr = data["threshold"]
    thr_label = f"{L['threshold']} {thr * 100:g}%"
    dev, net = L["device_rate"], L["network_rate"]
    days = [t["day"][5:] for t in data["trend"]]
    trend = line_chart(days, [(dev, [t["device_rate"] for t in data["trend"]]),
                              (net, [t["network_rate"] for t in data["trend"]])], thr, thr_label,
                       L["trend"].format(dev=dev, net=net))
    names = [c["county"] or "—" for c in data["counties"]]
    counties = bar_chart(names, [(dev, [c["device_rate"] for c in data["counties"]]),
                                 (net, [c["network_rate"] for c in data["counties"]])], thr, thr_label,
                         L["by_county_chart"].format(dev=dev, net=net))
    return {"trend": trend, "counties": counties}


async def _figures_part(availability: Any, storage: Any, start: int, end: int, county: str | None, lang: str,
                        flagged_limit: int, L: dict[str, str], index: dict[str, Any]) -> dict[str, Any]:
    """The settlement figures (the report before issue 17): fleet, counties, institutions, flagged units, faults by
    peripheral, outages, swaps, SIM data use."""
    from .. import labels

    tz = availability.tz
    fleet = await availability.figures(start, end, "fleet", county=county)
    counties = await availability.figures(start, end, "county", county=county)
    # the cities (the institutions' region, 统筹区) the counties belong to: the contract assesses per city/county
    regions = await availability.figures(start, end, "region") if county is None else {"items": []}
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
                      "ts": c["from_ts"],
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
        "fleet": fleet["fleet"], "counties": counties["items"], "regions": regions["items"], "institutions": institutions["items"],
        "flagged": [{**u, "reasons_text": [(labels.reason(k, lang), v) for k, v in u["reasons"]["minutes"].items()]}
                    for u in flagged["items"]],
        "flagged_total": flagged["total"],
        "faults": [{"peripheral": p, "peripheral_label": labels.peripheral(p, lang),
                    "fault_minutes": fault_minutes.get(p, 0), "fault_alerts": fault_alerts.get(p, 0)}
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
    env.filters["pct0"] = lambda v: "—" if v is None else f"{v * 100:.0f}%"
    env.filters["when"] = lambda v: v[:16].replace("T", " ") if v else v  # 2026-10-01 08:00 (the fleet's zone)
    return env


def render_html(data: dict[str, Any]) -> str:
    return _env().get_template("ops.html").render(**data)


def sheets(data: dict[str, Any]) -> list[Any]:
    """The report's tables, one :class:`server.exports.Sheet` each: the XLSX's worksheets and the CSV's sections.
    Rates are ``fraction`` columns (XLSX: numbers shown as percentages; CSV: percent numbers), counts numbers,
    times date-times in the fleet's zone, SNs, codes and ICCIDs text."""
    from ..exports import Column, Sheet

    L = data["labels"]

    def col(key: str, kind: str = "text", label: str | None = None) -> Column:
        text = label or L.get(key, key)
        return Column(key, text, text, kind)  # type: ignore[arg-type]

    if data.get("part") == "appendix":
        return [_inspection_sheet(data, col)]
    counts = [col(k, "number") for k in ("service_slots", "intact_slots", "network_ok_slots", "no_data_slots")]
    rates = [col("device_rate", "fraction"), col("network_rate", "fraction")]
    f = dict(data["fleet"])
    if data["county"]:
        f["tier"] = f["final_payment"] = None  # province-wide only
    cover = data["cover"]
    notes = [cover["title"], f"{L['period']}: {cover['period_text']}", f"{L['report_no']}: {cover['report_no']}",
             f"{L['client']}: {cover['client']}", f"{L['contractor']}: {cover['contractor']}",
             f"{L['contract_no']}: {cover['contract_no']}", f"{L['county']}: {data['county'] or L['all']}",
             f"{L['counted_to']}: {data['counted_to']}", f"{L['generated']}: {data['generated']}"]
    if not data["complete"]:
        notes.append(L["incomplete"])
    out = [Sheet(L["fleet"], [*rates, col("tier", "number"), col("final_payment", "fraction"), *counts,
                              col("units", "number"), col("flagged_units", "number")], [f], notes)]
    out.append(Sheet(L["tier_clause"], [col("tier"), col("condition", label=L["tier_condition"].format(net=data["network_term"])),
                                        col("share", label=L["final_payment"])], data["tier_clause"]))
    group_cols = [*rates, *counts, col("units", "number"), col("flagged_units", "number")]
    if data.get("regions"):
        out.append(Sheet(L["by_region"], [col("region"), *group_cols], data["regions"]))
    out.append(Sheet(L["by_county"], [col("county"), *group_cols], data["counties"]))
    out.append(Sheet(L["by_institution"], [col("institution"), col("name"), col("county"), *group_cols],
                     data["institutions"]))
    sla = data["sla"]
    sla_notes = [L["sla_rule"].format(lat=sla["limits"]["latency_ms"], jit=sla["limits"]["jitter_ms"],
                                      loss=sla["limits"]["loss"])]
    if sla["evidence_from"] is None:
        sla_notes.append(L["sla_none"])
    else:
        if not sla["covers_period"]:
            sla_notes.append(L["sla_from"].format(t=sla["evidence_from"]))
        if not sla["jitter_measured"]:
            sla_notes.append(L["sla_no_jitter"])
        if not sla["loss_measured"]:
            sla_notes.append(L["sla_no_loss"])
    sla_notes.append(L["sla_no_error"])
    sla_rows = sla["counties"] + ([{**sla["fleet"], "county": L["all"]}] if sla["evidence_from"] else [])
    out.append(Sheet(L["sla"], [col("county"), col("hours", "number", L["sla_hours"]),
                                col("latency", "fraction", L["sla_latency"]), col("jitter", "fraction", L["sla_jitter"]),
                                col("loss", "fraction", L["sla_loss"]), col("down", "fraction", L["sla_down"])],
                     sla_rows, sla_notes))
    flagged = [{**u, "below_text": "+".join(L[b] for b in u["below"]),
                "reasons_joined": "; ".join(f"{k}: {v}" for k, v in u["reasons_text"])} for u in data["flagged"]]
    out.append(Sheet(L["flagged"], [col("sn"), col("institution"), col("county"), *rates, *counts,
                                    col("below_text", label=L["below"]), col("reasons_joined", label=L["reasons"])],
                     flagged))
    out.append(Sheet(L["fault_list"], [col("start", "time"), col("sn"), col("institution"), col("county"),
                                       col("minutes", "number", L["duration"]), col("cause"), col("repair")],
                     data["fault_list"]["items"]))
    out.append(Sheet(L["faults"], [col("peripheral_label", label=L["peripheral"]), col("fault_minutes", "number"),
                                   col("fault_alerts", "number")], data["faults"]))
    out.append(Sheet(L["outages"], [col("county"), col("start", "time"), col("end", "time"), col("minutes", "number"),
                                    col("max_units", "number")], data["outages"]))
    out.append(Sheet(L["outages_cell"], [col("cell"), col("county"), col("start", "time"), col("end", "time"),
                                         col("minutes", "number"), col("max_units", "number")], data["cell_outages"]))
    out.append(Sheet(L["swaps"], [col("when", "time"), col("sn"), col("change"), col("institution"), col("note"),
                                  col("by")], data["swaps"]))
    sim = data["sim"]
    out.append(Sheet(L["sim"], [col("month"), col("plan_mb", "number", L["plan"]),
                                col("reporting", "number", L["sim_reporting"]), col("total_mb", "number", L["sim_total"]),
                                col("over_80", "number", L["sim_over80"]), col("over_100", "number", L["sim_over100"])],
                     sim["months"] if sim else [], [] if sim else [L["sim_none"]]))
    if sim:
        out.append(Sheet(L["sim_top"], [col("month"), col("sn"), col("institution"), col("county"),
                                        col("used_mb", "number"), col("plan_share", "fraction")], sim["top"]))
    out.append(Sheet(L["spares"], [col("county"), col("in_service", "number"), col("spare", "number"),
                                   col("in_repair", "number")], data["spares"], [L["spares_source"]]))
    if data.get("server_section", True):
        out.append(_server_sheet(data, col))
    out.append(Sheet(L["recommendations"], [col("text", label=L["recommendations"])],
                     [{"text": r} for r in data["recommendations"]]))
    if data["appendix_included"]:
        out.append(_inspection_sheet(data, col))
    else:
        out.append(Sheet(L["inspection"], [col("county")], [], [L["inspection_split"]]))
    return out


def _inspection_sheet(data: dict[str, Any], col: Any) -> Any:
    from ..exports import Sheet

    L = data["labels"]
    rows = []
    for county, units in data["inspection"].items():
        for t in units:
            rows.append({**t, "county": county,
                         "rw": None if t["storage_writable"] is None else
                         (L["writable"] if t["storage_writable"] else L["readonly"]),
                         "peripherals": "; ".join(f"{c['name']}: {c['state']}" + (f" ({c['reason']})" if c["reason"] else "")
                                                  for c in t["checks"]),
                         "test_page_text": f"{t['test_page'][0]} {t['test_page'][1]}" if t["test_page"] else L["never"],
                         "versions_text": "; ".join(f"{k} {v}" for k, v in t["versions"].items())})
    return Sheet(L["inspection"], [col("county"), col("sn"), col("institution"), col("sample_at", "time"),
                                   col("cpu", "number"), col("mem_fill", "fraction", L["mem"]),
                                   col("storage_fill", "fraction"), col("rw", label=L["storage_rw"]),
                                   col("peripherals"), col("test_page_text", label=L["test_page"]), col("iccid"),
                                   col("carrier", label="运营商" if data["lang"] == "zh" else "Carrier"),
                                   col("sim_mb", "number", L["sim_use"]), col("versions_text", label=L["versions"])],
                 rows, [L["inspection_rule"]])


def render_xlsx(data: dict[str, Any], tz: str) -> bytes:
    """The report as an XLSX workbook, one worksheet a table (server/exports.py: typed cells, ICCIDs as text)."""
    from ..exports import write_xlsx

    return write_xlsx(sheets(data), data["lang"], tz)


def render_csv(data: dict[str, Any], tz: str = "Asia/Shanghai") -> bytes:
    """The same tables as the XLSX, one section after another (UTF-8 with BOM, CRLF; text cells as
    :mod:`server.exports` writes them). Rates are percent numbers in columns headed ``(%)``: 97.5321, not 0.975321."""
    from zoneinfo import ZoneInfo

    from ..exports import _time

    zone = ZoneInfo(tz)
    L = data["labels"]
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\r\n")
    for n, sheet in enumerate(sheets(data)):
        if n:
            w.writerow([])
        for note in sheet.notes:
            w.writerow([protect(note)])
        w.writerow([protect(sheet.title)])
        w.writerow([c.header(data["lang"]) + (L["pct_unit"] if c.kind == "fraction" else "") for c in sheet.columns])
        for r in sheet.rows:
            row = []
            for c in sheet.columns:
                v = r.get(c.key)
                if v is None:
                    row.append("")
                elif c.kind == "fraction" and isinstance(v, int | float):
                    row.append(round(v * 100, 4))
                elif c.kind == "number" and isinstance(v, int | float):
                    row.append(v)
                elif c.kind == "time":
                    dt = _time(v, zone)
                    row.append("" if dt is None else dt.astimezone(zone).isoformat(timespec="minutes"))
                else:
                    row.append(protect(str(v)))
            w.writerow(row)
    return b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8")


MEDIA = {"html": "text/html; charset=utf-8", "csv": "text/csv; charset=utf-8", "pdf": "application/pdf",
         "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def file_name(data: dict[str, Any], fmt: str) -> str:
    """ops-2026Q4.pdf, ops-2026-11-秀英区.xlsx, ops-2026Q4-appendix-秀英区.pdf (the period's key, not ISO times)."""
    part = "-appendix" if data.get("part") == "appendix" else ""
    county = f"-{data['county']}" if data.get("county") else ""
    return f"ops-{data['period_key']}{part}{county}.{fmt}"


def documents(data: dict[str, Any], fmt: str) -> list[tuple[str, dict[str, Any]]]:
    """The files one report makes in ``fmt``: itself; and for PDF and HTML of a fleet larger than
    ``[reports] appendix_max_units`` whose data holds the appendix, the report without it plus one appendix per county
    (a 50,000-unit appendix is some 1,700 pages: printed per county, each file stays small). XLSX and CSV keep
    the appendix as one table."""
    if fmt in ("xlsx", "csv") or not data.get("appendix_split") or not data.get("inspection") \
            or data.get("part") == "appendix":
        return [(file_name(data, fmt), data)]
    out = [(file_name(data, fmt), {**data, "appendix_included": False})]
    for county, rows in data["inspection"].items():
        name = county or ("未分配" if data["lang"] == "zh" else "unassigned")  # units of no institution yet
        part = {**data, "part": "appendix", "county": name, "inspection": {county: rows},
                "cover": {**data["cover"], "county": name}}
        out.append((file_name(part, fmt), part))
    return out


async def render(data: dict[str, Any], fmt: str, settings: Any) -> bytes:
    """The report in ``fmt`` (html, csv, xlsx, pdf). PDF: the HTML printed by headless Chromium
    (raises :class:`server.reports.pdf.ChromiumMissing` / ``PdfError``)."""
    import asyncio

    if fmt == "csv":
        return render_csv(data, settings.timezone)
    if fmt == "xlsx":
        return await asyncio.to_thread(render_xlsx, data, settings.timezone)
    html = render_html(data)
    if fmt == "pdf":
        from .pdf import html_to_pdf

        return await html_to_pdf(html, settings.reports.chromium, settings.reports.pdf_timeout_s)
    return html.encode("utf-8")
