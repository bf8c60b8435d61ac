/* posfleet dashboard: a hash-routed page over the fleet server's API (same bearer tokens and roles).
   Every figure shown comes from one API answer; nothing is recomputed here except sums for display. */
"use strict";

const TOKEN_KEY = "posfleet.token", LANG_KEY = "posfleet.lang", CSRF_KEY = "posfleet.csrf";  // a token, or a signed-in session (its cookie is HttpOnly: this tab keeps its CSRF token)

const I18N = {
  zh: {
    app_title: "医保终端运维监控", nav_fleet: "总览", nav_units: "终端", nav_institutions: "机构", logout: "退出",
    nav_server: "服务器", server_title: "服务器自检", inspect_ok: "各项正常", inspect_problems: "发现 {n} 项问题",
    disks: "磁盘", db: "数据库", backup: "备份", broker: "消息服务器", ingest: "数据接收", certificates: "证书",
    time_sync: "时钟同步", used: "已用", size: "容量", path: "位置", last_backup: "最近备份", age_h: "距今（小时）",
    file: "文件", connected: "已连接", address: "地址", error: "错误", lag_s: "积压时长（秒）", queued: "待写入",
    rejected: "拒收", dead_letters: "死信", subject: "主题", not_after: "到期", days_left: "剩余天数",
    terminal_certs: "终端证书", expiring: "{d} 天内到期", expired: "已过期", synchronised: "已同步",
    max_error_ms: "最大误差（毫秒）", backend: "类型", never: "从未", cert_ca: "根证书（CA）",
    cert_broker: "消息服务器证书", cert_server: "服务器客户端证书", alert_line: "告警线 {p}%",
    cert_alert_line: "到期前 {d} 天告警",
    problem_disk: "{path} 已用 {pct}%（告警线 {line}%）", problem_disk_error: "{path}：{error}",
    problem_backup: "最近一次数据库备份已过 {age} 小时（告警线 {line} 小时）",
    problem_backup_none: "没有数据库备份记录（posfleet server db backup）", problem_broker: "未连接消息服务器 {address} {error}",
    problem_cert: "{what}{days} 天后到期", problem_cert_expired: "{what}已过期", problem_cert_error: "{what}无法读取：{error}",
    problem_time: "服务器时钟未同步（未运行 NTP：chrony 或 systemd-timesyncd），最大误差 {ms} 毫秒", cert_terminals: "CA 证书索引",
    problem_renewal: "{n} 个终端证书续期请求等待 CA 签发，最早的已等 {days} 天：请在 CA 主机运行 posfleet ca sign-renewals",
    problem_report: "定期报告 {period} 错过未生成，其汇总数据已不保留（availability.rollup_keep_days = {days}），无法补做",
    renewals: "证书续期", renewal_waiting: "等待签发 {n}", renewal_states: "签发 {signed}，已切换 {switched}，完成 {done}，拒绝 {refused}",
    login_title: "登录", login_hint: "请输入管理员发放的访问令牌（pf_ 开头）。令牌只保存在本浏览器标签页中。",
    token: "访问令牌", sign_in: "登录", bad_token: "令牌无效或已吊销", server_error: "服务器错误",
    user_name: "用户名", password: "密码", totp_code: "动态验证码（6 位，或恢复码）", use_token: "使用访问令牌（脚本与临时访问）",
    login_user_hint: "请输入用户名和密码；已启用两步验证的账号还需输入手机验证器上的 6 位验证码。",
    bad_password: "用户名或密码错误", bad_code: "验证码错误", need_code: "请输入手机验证器上的 6 位验证码",
    locked: "失败次数过多，账号已锁定", disabled: "账号已停用，请联系管理员",
    enrol_title: "启用两步验证", enrol_hint: "管理员账号必须启用两步验证：用手机验证器（如 Google Authenticator、FreeOTP）扫描二维码，再输入其显示的 6 位验证码。",
    enrol_secret: "无法扫码时手动输入密钥", enrol_confirm: "确认", recovery_title: "恢复码（仅显示这一次）",
    recovery_hint: "手机丢失时，每个恢复码可代替验证码登录一次。请离线保存，然后重新登录。", sign_in_again: "重新登录",
    fleet_title: "全省总览", month: "本月", counted_to: "统计至", incomplete: "（统计中）",
    device_rate: "设备完好率", network_rate: "网络通畅率", tier: "合同档位", tier_n: "第{n}档",
    final_payment: "尾款比例 {p}", online: "在线", offline: "离线", online_share: "在线率",
    flagged_units: "低于 {t} 的终端", units: "终端数", in_service: "在用",
    trend: "趋势", days: "{n} 天", threshold: "阈值 {t}",
    flagged_title: "需关注终端（本月低于阈值，最差在前）", none: "无",
    sn: "终端 SN", institution: "机构", county: "区县", region: "地市", below: "低于阈值", reasons: "主要原因（分钟）",
    best10: "在线率最高的 10 家机构", worst10: "在线率最低的 10 家机构", online_rate: "在线率",
    by_county: "按区县", spare: "备用", in_repair: "维修", retired: "报废",
    latency: "时延", jitter: "抖动", loss: "丢包", within_limits: "达标终端占比（24 小时）",
    carriers: "运营商", link_types: "接入方式", versions: "软件版本", alerts: "未处理告警", opened: "开始时间",
    kind: "类型", message: "说明", unknown: "未知",
    units_title: "终端列表", search: "搜索 SN / 医保 SN", status: "状态", carrier: "运营商", last_seen: "最后上报",
    prev: "上一页", next: "下一页", of_total: "共 {n} 台",
    institutions_title: "机构列表", code: "编码", name: "名称", type: "类型",
    unit_title: "终端 {sn}", identity: "身份", insurance_sn: "医保 SN", terminal_type: "终端类型", model: "型号",
    vendor: "厂商", stock_type: "库存类型", link_type: "接入方式", agent: "监控代理",
    sim: "SIM 卡", imsi: "IMSI", iccid: "ICCID", first_report: "首次上报", last_report: "最后上报",
    modem_model: "模块型号", modem_firmware: "模块固件", software: "软件版本",
    peripherals: "外设状态", check_ok: "正常", check_fault: "故障", check_unknown: "无数据", latest_sample: "最新样本",
    health: "运行状况（最近样本）", cpu: "CPU %", mem: "内存已用 MB", disk: "磁盘已用 %", signal: "信号 dBm", rtt: "往返时延 ms",
    rscp: "3G 接收信号码功率 RSCP dBm", ecio: "3G 信号质量 Ec/Io dB", latest_value: "最新 {v}",
    day_slots: "当日时段（分钟）", date: "日期", slot_ok: "完好且网络正常", slot_dev: "设备故障", slot_net: "网络异常",
    slot_both: "设备故障且网络异常", slot_nodata: "无数据", slot_off: "非服务时段/非在用", slot_future: "尚未到来", nodata_minutes: "无数据（分钟）",
    failures: "故障时段", from: "从", to: "到", what: "内容", carrier_outage: "疑似运营商故障",
    figures_day: "当日：完好率 {d}，网络通畅率 {n}", commands: "远程命令", status_history: "状态记录",
    network_24h: "网络质量（24 小时）", samples: "样本数", p95: "P95",
    inst_title: "机构 {name}", hours: "服务时间", contact: "联系人", inst_units: "本机构终端（本月）",
    default_hours: "默认", yes: "是", no: "否", flagged: "需关注", not_found: "未找到",
    health_centre: "乡镇卫生院", village_clinic: "村卫生室", community_site: "社区服务点", hospital: "医院",
    community_health_centre: "社区卫生服务中心", community_health_station: "社区卫生服务站",
    pharmacy: "药店", insurance_office: "医保经办机构", deployed: "已部署", wired: "有线专网", "4g_vpdn": "4G VPDN",
    level: "级别", provincial: "省级", prefectural: "市级", county_level: "县级", township: "乡镇（街道）级", village: "村（社区）级",
    level_unset: "未填写",
    unassigned: "未分配", component: "组件", version: "版本", closed: "关闭时间", alert_log: "告警记录（最近）",
    search_btn: "搜索", reason: "原因", ties: "各机构在线率相同（{r}），按本月可用率（完好率与网络通畅率中较低者）排序",
    month_rate: "本月可用率", all: "全部", filter: "筛选", reset: "清除", auto_refresh: "自动刷新",
    refreshed: "更新于 {t}", ack: "确认", close: "关闭", note: "备注", acked: "已确认：{who}", closed_by: "已关闭：{who}", save: "保存", cancel: "取消",
    stored_reports: "定时生成的报表", stored_none: "暂无（在服务器设置 [reports.schedule] 中开启按月、按季生成）",
    period: "期间", format: "格式", made: "生成时间", delivered: "已发送", via_email: "邮件", via_webhook: "Webhook",
    download: "下载", report: "报表", export: "导出", import: "导入", preview: "预览", apply: "确认导入", emptied: "（清空）",
    import_add: "新增", import_change: "修改", import_line: "行号", import_field: "字段", import_imported: "已导入",
    import_added: "新增", import_changed: "修改", import_unchanged: "无变化",
  },
  en: {
    app_title: "POS fleet monitor", nav_fleet: "Fleet", nav_units: "Units", nav_institutions: "Institutions", logout: "Sign out",
    nav_server: "Server", server_title: "Server self-inspection", inspect_ok: "All checks pass",
    inspect_problems: "{n} problems found", disks: "Disks", db: "Database", backup: "Backup", broker: "Broker",
    ingest: "Ingest", certificates: "Certificates", time_sync: "Time sync", used: "Used", size: "Size", path: "Path",
    last_backup: "Last backup", age_h: "Age (hours)", file: "File", connected: "Connected", address: "Address",
    error: "Error", lag_s: "Lag (s)", queued: "Queued", rejected: "Rejected", dead_letters: "Dead letters",
    subject: "Subject", not_after: "Expires", days_left: "Days left", terminal_certs: "Terminal certificates",
    expiring: "expiring within {d} days", expired: "expired", synchronised: "Synchronised",
    max_error_ms: "Max error (ms)", backend: "Backend", never: "never", cert_ca: "Fleet CA", cert_broker: "Broker",
    cert_server: "Server (MQTT client)", alert_line: "alert at {p}%", cert_alert_line: "alert {d} days before expiry",
    problem_disk: "{path} {pct}% full (alert at {line}%)", problem_disk_error: "{path}: {error}",
    problem_backup: "the last database backup is {age} h old (alert after {line} h)",
    problem_backup_none: "no database backup recorded (posfleet server db backup)", problem_broker: "not connected to the broker at {address} {error}",
    problem_cert: "{what} expires in {days} days", problem_cert_expired: "{what} has expired", problem_cert_error: "{what} cannot be read: {error}",
    problem_time: "the server's clock is not synchronised (no NTP: chrony or systemd-timesyncd), max error {ms} ms", cert_terminals: "the CA's index",
    problem_renewal: "{n} terminal certificate renewal request(s) wait for the CA, the oldest {days} days: run posfleet ca sign-renewals on the CA's host",
    problem_report: "the scheduled report {period} was missed and cannot be made now: its roll-ups are no longer kept (availability.rollup_keep_days = {days})",
    renewals: "Certificate renewals", renewal_waiting: "waiting for the CA {n}", renewal_states: "signed {signed}, switched {switched}, done {done}, refused {refused}",
    login_title: "Sign in", login_hint: "Enter the access token your administrator issued (starts with pf_). It is kept in this browser tab only.",
    token: "Access token", sign_in: "Sign in", bad_token: "Unknown or revoked token", server_error: "Server error",
    user_name: "User name", password: "Password", totp_code: "Code (6 digits, or a recovery code)", use_token: "Use an access token (scripts, temporary access)",
    login_user_hint: "Enter your user name and password; accounts with two-factor also need the 6-digit code from the authenticator app.",
    bad_password: "Wrong user name or password", bad_code: "Wrong code", need_code: "Enter the 6-digit code from your authenticator app",
    locked: "Too many failures: the account is locked", disabled: "The account is disabled: ask an administrator",
    enrol_title: "Enable two-factor sign-in", enrol_hint: "Administrators must use two-factor sign-in: scan the QR code with an authenticator app (Google Authenticator, FreeOTP...) and enter the 6 digits it shows.",
    enrol_secret: "Key to type in when the code cannot be scanned", enrol_confirm: "Confirm", recovery_title: "Recovery codes (shown this once)",
    recovery_hint: "If the phone is lost, each code signs in once in place of the authenticator. Keep them offline, then sign in again.", sign_in_again: "Sign in again",
    fleet_title: "Fleet overview", month: "This month", counted_to: "counted to", incomplete: " (in progress)",
    device_rate: "Device intact rate", network_rate: "Network availability rate", tier: "Contract tier", tier_n: "Tier {n}",
    final_payment: "final payment {p}", online: "Online", offline: "Offline", online_share: "online share",
    flagged_units: "Units below {t}", units: "Units", in_service: "in service",
    trend: "Trend", days: "{n} days", threshold: "threshold {t}",
    flagged_title: "Flagged units (below the threshold this month, worst first)", none: "none",
    sn: "Unit SN", institution: "Institution", county: "County", region: "Region", below: "Below", reasons: "Main reasons (minutes)",
    best10: "10 institutions with the best online rate", worst10: "10 institutions with the worst online rate", online_rate: "Online rate",
    by_county: "By county", spare: "spare", in_repair: "in repair", retired: "retired",
    latency: "Latency", jitter: "Jitter", loss: "Loss", within_limits: "Units within limits (24 h)",
    carriers: "Carriers", link_types: "Link types", versions: "Software versions", alerts: "Open alerts", opened: "Opened",
    kind: "Kind", message: "Message", unknown: "unknown",
    units_title: "Units", search: "Search SN / insurance SN", status: "Status", carrier: "Carrier", last_seen: "Last seen",
    prev: "Previous", next: "Next", of_total: "{n} units",
    institutions_title: "Institutions", code: "Code", name: "Name", type: "Type",
    unit_title: "Unit {sn}", identity: "Identity", insurance_sn: "Insurance SN", terminal_type: "Terminal type", model: "Model",
    vendor: "Vendor", stock_type: "Stock type", link_type: "Link type", agent: "Agent",
    sim: "SIM", imsi: "IMSI", iccid: "ICCID", first_report: "First report", last_report: "Last report",
    modem_model: "Modem model", modem_firmware: "Modem firmware", software: "Software versions",
    peripherals: "Peripherals", check_ok: "ok", check_fault: "fault", check_unknown: "no data", latest_sample: "latest sample",
    health: "Health (recent samples)", cpu: "CPU %", mem: "Memory used MB", disk: "Disk used %", signal: "Signal dBm", rtt: "Round trip ms",
    rscp: "3G RSCP dBm", ecio: "3G Ec/Io dB", latest_value: "latest {v}",
    day_slots: "Slots of the day (minutes)", date: "Date", slot_ok: "intact and network ok", slot_dev: "device fault",
    slot_net: "network not ok", slot_both: "device fault and network not ok", slot_nodata: "no data", slot_off: "outside hours / not in service", slot_future: "not yet", nodata_minutes: "No data (minutes)",
    failures: "What failed when", from: "From", to: "To", what: "What", carrier_outage: "likely carrier outage",
    figures_day: "Day: intact {d}, network {n}", commands: "Commands", status_history: "Status history",
    network_24h: "Network quality (24 h)", samples: "samples", p95: "p95",
    inst_title: "Institution {name}", hours: "Service hours", contact: "Contact", inst_units: "Units here (this month)",
    default_hours: "default", yes: "yes", no: "no", flagged: "flagged", not_found: "not found",
    health_centre: "township health centre", village_clinic: "village clinic", community_site: "community site", hospital: "hospital",
    community_health_centre: "community health centre", community_health_station: "community health station",
    pharmacy: "pharmacy", insurance_office: "insurance office", deployed: "deployed", wired: "wired", "4g_vpdn": "4G VPDN",
    level: "Level", provincial: "provincial", prefectural: "prefectural", county_level: "county", township: "township",
    village: "village", level_unset: "not given",
    unassigned: "unassigned", component: "Component", version: "Version", closed: "Closed", alert_log: "Alerts (recent)",
    search_btn: "Search", reason: "Reason", ties: "Every institution has the same online rate ({r}): ranked by this month's availability (the lower of the two rates)",
    month_rate: "Month availability", all: "all", filter: "Filter", reset: "Clear", auto_refresh: "Auto refresh",
    refreshed: "updated {t}", ack: "Acknowledge", close: "Close", note: "Note", acked: "acknowledged: {who}", closed_by: "closed: {who}", save: "Save", cancel: "Cancel",
    stored_reports: "Scheduled reports", stored_none: "None yet (turn on monthly or quarterly reports in [reports.schedule])",
    period: "Period", format: "Format", made: "Made", delivered: "Delivered", via_email: "e-mail", via_webhook: "webhook",
    download: "Download", report: "Report", export: "Export", import: "Import", preview: "Preview", apply: "Apply import", emptied: "(emptied)",
    import_add: "add", import_change: "change", import_line: "line", import_field: "field", import_imported: "imported",
    import_added: "added", import_changed: "changed", import_unchanged: "unchanged",
  },
};

let lang = localStorage.getItem(LANG_KEY) === "en" ? "en" : "zh";
let ctx = null;

function t(key, vars) {
  let s = (I18N[lang][key] !== undefined ? I18N[lang][key] : I18N.zh[key] !== undefined ? I18N.zh[key] : key);
  for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, v);
  return s;
}
const word = v => (v === null || v === undefined || v === "") ? "—" : (I18N[lang][v] !== undefined ? I18N[lang][v] : String(v));

// codes from the server and the terminals, labelled from labels.js -----------------------------------------
// the label in the page's language; none: undefined, and the caller shows the code as it came (English)
const L = key => (LABELS[lang] || {})[key];
const fill = (tpl, vars) => tpl.replace(/\{(\w+)\}/g, (m, k) => vars[k] === undefined || vars[k] === null ? "—" : String(vars[k]));
const checkName = c => L("check." + c) || String(c);
// carriers as terminals name them ("CHINA MOBILE", "CMCC", "China Mobile"): matched without regard to case
function carrierName(c) {
  if (c === null || c === undefined || c === "") return "—";
  const key = "carrier." + String(c).trim().toLowerCase();
  const found = Object.keys(LABELS[lang] || {}).find(k => k.toLowerCase() === key);
  return found ? L(found) : String(c);
}
const kindName = k => L("kind." + k) || String(k);
function reasonWord(r) {
  if (r === null || r === undefined || r === "") return "";
  const text = String(r);
  const exact = L("reason." + text) || L("reason." + text.replace(/;/g, ",").replace(/:/g, "="));
  if (exact) return exact;
  let best = null;
  for (const k of Object.keys(LABELS[lang] || {})) if (k.startsWith("prefix.") && text.startsWith(k.slice(7)) && (!best || k.length > best.length)) best = k;
  if (best) return L(best) + text.slice(best.length - 7);
  const pct = /^(.*) (\d+)% full$/.exec(text);
  if (pct) return lang === "zh" ? `${pct[1]} 已用 ${pct[2]}%` : text;
  return text;
}
// one reason as the counter and the roll-ups write it: "printer=paper_out", "link_down", "rtt=512ms"
function reasonText(r) {
  const m = /^([^=]+)=(.*)$/.exec(String(r));
  if (!m) return reasonWord(r);
  if (m[1] === "rtt") return fill(L("reason.rtt") || "rtt {ms} ms", {ms: m[2].replace(/ms$/, "")});
  return `${checkName(m[1])}${lang === "zh" ? "：" : ": "}${reasonWord(m[2])}`;
}
// a status-history note as the server writes it ("registered", "swap (replaced by HN…)"); people's notes as written
function noteText(note) {
  const m = /^(.*?)(?: \((replaced by|replaces) (\S+)\))?$/.exec(String(note || ""));
  const head = L("note." + m[1]) || m[1];
  return m[2] ? `${head}（${fill(L("note." + m[2]) || m[2] + " {sn}", {sn: m[3]})}）` : head;
}
const tail = v => v ? "…" + String(v).slice(-6) : "?";
function alertText(a) {
  const d = a.data || {};
  const tpl = L("alert." + a.kind);
  if (!tpl) return a.message;
  const v = {sn: a.sn || ""};
  if (a.kind === "flagged") Object.assign(v, {threshold: pct(ctx ? ctx.threshold : 0.95).replace(".00", ""), device: pct(d.device_rate), network: pct(d.network_rate)});
  else if (a.kind === "offline") v.minutes = d.service_minutes_offline;
  else if (a.kind === "fault") Object.assign(v, {check: checkName(d.check), reason: d.reason ? (lang === "zh" ? `（${reasonWord(d.reason)}）` : ` (${d.reason})`) : ""});
  else if (a.kind === "storage") Object.assign(v, {mount: d.mount, pct: d.size_mb ? Math.round(d.used_mb * 100 / d.size_mb) : "—"});
  else if (a.kind === "sim_changed") Object.assign(v, {old: tail(d.old_iccid), new: tail(d.new_iccid)});
  else if (a.kind === "address" || a.kind === "link_change") Object.assign(v, {ip: d.ip, link: L("link." + d.link) || d.link,
    from: L("link." + d.from) || d.from, to: L("link." + d.to) || d.to});
  else if (a.kind === "carrier_outage") Object.assign(v, {place: [d.county || a.county || "", d.cell ? fill(L("cell"), {cell: d.cell}) : ""].filter(Boolean).join(" "),
    units: d.max_units !== undefined ? d.max_units : (d.sns || []).length, minutes: d.minutes ? (lang === "zh" ? " " : " for ") + fill(L("minutes"), {n: d.minutes}) : ""});
  else if (a.kind === "sim_data") Object.assign(v, {used: num(d.used_mb, 1), plan: d.plan_mb, pct: d.threshold_pct, projected: d.projected_mb});
  else if (a.kind === "security") { const w = L("security." + d.what); v.what = w ? fill(w, d) : a.message; }
  else if (a.kind === "pressure") Object.assign(v, {resource: L("resource." + d.resource) || d.resource, minutes: d.window_minutes,
    threshold: d.threshold_pct, mean: d.mean_pct, peak: d.peak_pct});
  else if (a.kind === "server") v.what = `${L("inspect." + d.check) || d.check}${lang === "zh" ? "：" : ": "}${a.message}`;
  else if (a.kind === "certificate") {
    if (a.sn && d.days_left !== undefined) Object.assign(v, {sn: a.sn + (lang === "zh" ? "：" : ": "),
      what: fill(L(d.days_left >= 0 ? "cert.expires" : "cert.expired"), {days: Math.round(d.days_left)})});
    else Object.assign(v, {sn: "", what: `${L("inspect.certificate") || "certificate"}${lang === "zh" ? "：" : ": "}${a.message}`});
  }
  return fill(tpl, v);
}

// formatting ------------------------------------------------------------------------------------------
function pct(v) { return v === null || v === undefined ? "—" : (v * 100).toFixed(2) + "%"; }
function num(v, d) { return v === null || v === undefined ? "—" : (d === undefined ? String(v) : Number(v).toFixed(d)); }
// the API's times are ISO 8601 with the fleet's offset (docs/api.md); epoch seconds are taken too
const epoch = v => v === null || v === undefined || v === "" ? null : typeof v === "number" ? v : Date.parse(v) / 1000;
function when(ts) {
  ts = epoch(ts);
  if (ts === null || Number.isNaN(ts)) return "—";
  const f = new Intl.DateTimeFormat("sv-SE", {timeZone: ctx ? ctx.timezone : "Asia/Shanghai", year: "numeric",
    month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false});
  return f.format(new Date(ts * 1000));
}
const hhmm = iso => iso.slice(11, 16);

// DOM -------------------------------------------------------------------------------------------------
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const k of kids.flat(Infinity)) if (k !== null && k !== undefined && k !== false) e.append(k instanceof Node ? k : String(k));
  return e;
}
function card(title, ...kids) { return h("section", {class: "card"}, h("h2", {}, title), ...kids); }
function table(head, rows, opts) {
  return h("div", {class: "scroll"}, h("table", opts || {},
    h("thead", {}, h("tr", {}, head.map(c => h("th", {class: c.num ? "num" : null}, c.label || c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", {colspan: head.length, class: "muted"}, t("none"))))));
}
const td = (v, a) => h("td", a || {}, v);
const tdn = (v, a) => h("td", Object.assign({class: "num"}, a || {}), v);
const unitLink = sn => h("a", {href: `#/unit/${encodeURIComponent(sn)}`, "data-sn": sn}, sn);
const instLink = (code, name) => code ? h("a", {href: `#/institution/${encodeURIComponent(code)}`, "data-inst": code}, name || code) : "—";
const rateCls = v => v === null || v === undefined ? null : v >= (ctx ? ctx.threshold : 0.95) ? "good" : "bad";
function kpi(label, value, sub, key, raw, cls) {
  return h("div", {class: "card kpi"}, h("div", {class: "label"}, label),
    h("div", {class: "value " + (cls || ""), "data-k": key, "data-v": raw === undefined ? null : JSON.stringify(raw)}, value),
    h("div", {class: "sub"}, sub || ""));
}

// API -------------------------------------------------------------------------------------------------
class AuthError extends Error {}
function authHeaders(method) {
  const token = sessionStorage.getItem(TOKEN_KEY), csrf = sessionStorage.getItem(CSRF_KEY);
  if (token) return {Authorization: `Bearer ${token}`};
  if (csrf) return method && method !== "GET" ? {"X-CSRF-Token": csrf} : {};  // the session cookie goes by itself
  throw new AuthError("not signed in");
}
async function api(path, params, opts) {
  const q = params ? "?" + new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "")) : "";
  const method = (opts && opts.method) || "GET";
  const init = {method, headers: authHeaders(method), credentials: "same-origin"};
  if (opts && opts.body !== undefined) {
    if (opts.body instanceof Blob) init.body = opts.body;
    else { init.body = JSON.stringify(opts.body); init.headers["Content-Type"] = "application/json"; }
  }
  const r = await fetch(path + q, init);
  if (r.status === 401) throw new AuthError("401");
  if (!r.ok) {
    let msg = `${r.status}`;
    try { const b = await r.json(); msg += " " + (typeof b.detail === "string" ? b.detail : JSON.stringify(b.detail || b.error || "")); } catch (e) { /* not JSON */ }
    const err = new Error(msg); err.status = r.status; throw err;
  }
  return r.json();
}
const month = () => ({from: ctx.month.from, to: ctx.month.to});

// routing ---------------------------------------------------------------------------------------------
function route() {
  const raw = location.hash.replace(/^#/, "") || "/fleet";
  const [path, qs] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return {name: parts[0] || "fleet", arg: parts[1], q: new URLSearchParams(qs || "")};
}
let renderSeq = 0;
async function render() {
  const main = document.getElementById("main");
  const r = route();
  const seq = ++renderSeq;
  document.querySelectorAll("[data-i18n]").forEach(e => { e.textContent = t(e.dataset.i18n); });
  document.getElementById("lang").textContent = lang === "zh" ? "English" : "中文";
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = t("app_title");
  document.querySelectorAll("[data-nav]").forEach(a => a.classList.toggle("active", a.dataset.nav === r.name ||
    (a.dataset.nav === "units" && r.name === "unit") || (a.dataset.nav === "institutions" && r.name === "institution")));
  const signedIn = !!(sessionStorage.getItem(TOKEN_KEY) || sessionStorage.getItem(CSRF_KEY));
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("logout").hidden = !signedIn;
  // a signed-in person (not a token) changes their own password there
  document.getElementById("change-password").hidden = !signedIn || !!sessionStorage.getItem(TOKEN_KEY);
  if (r.name === "login" || !signedIn) return showLogin(main);
  main.dataset.state = "loading";
  main.dataset.view = r.name;
  try {
    ctx = await api("/dashboard/api/context");
    document.getElementById("clock").textContent = `${ctx.now_iso.slice(0, 16).replace("T", " ")} (${ctx.timezone})`;
    // pages for some roles only (admin.js: the audit trail, users): their links shown to those roles
    document.querySelectorAll("#nav [data-roles]").forEach(a => { a.hidden = !a.dataset.roles.split(" ").includes(ctx.user.role); });
    const views = {fleet: viewFleet, units: viewUnits, unit: viewUnit, institutions: viewInstitutions, institution: viewInstitution, server: viewServer,
      ...(window.ACCESS_VIEWS || {})};  // access.js (issue 18): applications, pools, interfaces, statistics; admin.js: audit, users
    const node = await (views[main.dataset.view] || viewFleet)(r);
    if (seq !== renderSeq) return;
    main.replaceChildren(node);
    Charts.fit(main);
    main.dataset.state = "ready";
    main.dataset.refreshed = String(Date.now());
  } catch (err) {
    if (seq !== renderSeq) return;
    if (err instanceof AuthError) { sessionStorage.removeItem(TOKEN_KEY); sessionStorage.removeItem(CSRF_KEY); location.hash = "#/login"; return; }
    main.replaceChildren(h("p", {class: "error", "data-k": "error"}, `${t("server_error")}: ${err.message}`));
    main.dataset.state = "error";
  }
}

function showLogin(main, notice) {
  // named users (issue 18): user name + password (+ the authenticator's code); the token form stays for scripts
  const user = h("input", {type: "text", id: "user", autocomplete: "username"});
  const password = h("input", {type: "password", id: "password", autocomplete: "current-password"});
  const code = h("input", {type: "text", id: "code", autocomplete: "one-time-code", inputmode: "numeric"});
  const codeLabel = h("label", {for: "code", id: "code-label", hidden: true}, t("totp_code"));
  code.hidden = true;
  const msg = h("p", {class: "error", id: "user-error", "data-k": "user-error"});
  const fail = (b, status) => {
    const field = b.errors && b.errors[0] ? b.errors[0].field : "";
    const label = status === 429 ? t("locked") : status === 403 ? t("disabled")
      : field === "code" ? (code.value ? t("bad_code") : t("need_code")) : t("bad_password");
    if (field === "code") { code.hidden = false; codeLabel.hidden = false; code.focus(); }
    msg.textContent = `${label}（${b.detail}）`;
  };
  const form = h("form", {class: "card login", id: "user-form", onsubmit: async ev => {
    ev.preventDefault();
    msg.textContent = "";
    const r = await fetch("/api/v1/session", {method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({user: user.value.trim(), password: password.value, code: code.value.trim()})});
    const b = await r.json().catch(() => ({detail: String(r.status)}));
    if (!r.ok) return fail(b, r.status);
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.setItem(CSRF_KEY, b.csrf);
    if (b.stage === "enrol") return showEnrol(main, b.csrf);
    if (b.stage === "password") {  // a one-time password from an administrator: replaced before anything else
      main.replaceChildren(newPasswordForm(b.csrf, password.value, () => signedOut(main, t("password_changed"))));
      main.dataset.view = "new-password";
      return;
    }
    location.hash = "#/fleet";
    if (route().name === "fleet") render();
  }}, h("h1", {}, t("login_title")), notice ? h("p", {class: "good", id: "login-notice"}, notice) : null,
    h("p", {class: "muted"}, t("login_user_hint")),
    h("label", {for: "user"}, t("user_name")), user, h("label", {for: "password"}, t("password")), password,
    codeLabel, code, msg, h("button", {type: "submit", id: "user-sign-in"}, t("sign_in")));
  const input = h("input", {type: "password", id: "token", autocomplete: "off", placeholder: "pf_…"});
  const tmsg = h("p", {class: "error", id: "login-error"});
  const tform = h("form", {class: "card login", id: "login-form", onsubmit: async ev => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await api("/dashboard/api/context");
      location.hash = "#/fleet";
      if (route().name === "fleet") render();
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      tmsg.textContent = err instanceof AuthError ? t("bad_token") : `${t("server_error")}: ${err.message}`;
    }
  }}, h("details", {id: "token-box"}, h("summary", {}, t("use_token")), h("p", {class: "muted"}, t("login_hint")),
    h("label", {for: "token"}, t("token")), input, tmsg, h("button", {type: "submit", id: "sign-in"}, t("sign_in"))));
  main.replaceChildren(h("div", {}, form, tform));
  main.dataset.view = "login";
  main.dataset.state = "ready";
  user.focus();
}

// back to the login with a word (the session has ended: no view to go back to)
function signedOut(main, notice) {
  history.replaceState(null, "", "#/login");
  for (const id of ["nav", "logout", "change-password"]) document.getElementById(id).hidden = true;
  showLogin(main, notice);
}

// replace one's password (POST /api/v1/session/password): after signing in with a one-time password (``current``
// known), or from the top bar's 修改密码 (asked for); every session of the user ends, so ``done`` signs in again
function newPasswordForm(csrf, current, done) {
  const cur = h("input", {type: "password", id: "current-password", autocomplete: "current-password"});
  const pw = h("input", {type: "password", id: "new-password", autocomplete: "new-password"});
  const again = h("input", {type: "password", id: "new-password-again", autocomplete: "new-password"});
  const msg = h("p", {class: "error", id: "new-password-error"});
  return h("form", {class: "card login", id: "new-password-form", onsubmit: async ev => {
    ev.preventDefault();
    if (pw.value !== again.value) { msg.textContent = t("passwords_differ"); return; }
    const r = await fetch("/api/v1/session/password", {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify({password: current === null ? cur.value : current, new_password: pw.value})});
    const b = await r.json().catch(() => ({detail: String(r.status)}));
    if (!r.ok) { msg.textContent = b.detail; return; }
    sessionStorage.removeItem(CSRF_KEY);  // every session of the user has ended
    done();
  }}, h("h1", {}, t(current === null ? "change_password" : "new_password_title")),
    current === null ? null : h("p", {class: "muted"}, t("new_password_hint")),
    current === null ? [h("label", {for: "current-password"}, t("password")), cur] : null,
    h("label", {for: "new-password"}, t("new_password")), pw, h("label", {for: "new-password-again"}, t("new_password_again")), again,
    msg, h("button", {type: "submit", id: "new-password-save"}, t("save")));
}

async function showEnrol(main, csrf) {
  // an administrator's first sign-in: enrol the authenticator (QR), confirm a code, keep the recovery codes
  const r = await fetch("/api/v1/session/totp", {method: "POST", credentials: "same-origin", headers: {"X-CSRF-Token": csrf}});
  const b = await r.json();
  // the server's SVG (segno) as an image, never as HTML (the CSP allows data: images only)
  const qr = h("div", {id: "enrol-qr"}, h("img", {alt: "QR", width: 200, height: 200,
    src: "data:image/svg+xml;charset=utf-8," + encodeURIComponent(b.qr_svg)}));
  const code = h("input", {type: "text", id: "enrol-code", autocomplete: "one-time-code", inputmode: "numeric"});
  const msg = h("p", {class: "error", id: "enrol-error"});
  const form = h("form", {class: "card login", id: "enrol-form", onsubmit: async ev => {
    ev.preventDefault();
    const c = await fetch("/api/v1/session/totp/confirm", {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify({code: code.value.trim()})});
    const d = await c.json().catch(() => ({detail: String(c.status)}));
    if (!c.ok) { msg.textContent = `${t("bad_code")}（${d.detail}）`; return; }
    sessionStorage.removeItem(CSRF_KEY);  // the enrolment session has ended: sign in again with a code
    main.replaceChildren(h("div", {class: "card login", id: "recovery"}, h("h1", {}, t("recovery_title")),
      h("p", {class: "muted"}, t("recovery_hint")),
      h("ol", {id: "recovery-codes"}, ...d.recovery_codes.map(x => h("li", {}, x))),
      h("button", {type: "button", id: "again", onclick: () => showLogin(main)}, t("sign_in_again"))));
    main.dataset.view = "recovery";
  }}, h("h1", {}, t("enrol_title")), h("p", {class: "muted"}, t("enrol_hint")), qr,
    h("p", {class: "muted"}, `${t("enrol_secret")}: `, h("code", {id: "enrol-secret"}, b.secret)),
    h("label", {for: "enrol-code"}, t("totp_code")), code, msg, h("button", {type: "submit", id: "enrol-confirm"}, t("enrol_confirm")));
  main.replaceChildren(form);
  main.dataset.view = "enrol";
  main.dataset.state = "ready";
  code.focus();
}

// fleet view ------------------------------------------------------------------------------------------
// a user with a county or city scope: every figure the server gives them is of their units only (decision 031)
const scoped = () => !!(ctx && ctx.user && ctx.user.scope && !ctx.user.scope.province);
async function viewFleet() {
  const m = month();
  const [avail, live, flagged, alerts, net] = await Promise.all([
    api("/api/v1/availability", {...m, group_by: "county"}),
    api("/api/v1/analytics/live"),
    api("/api/v1/availability/flagged", {...m, limit: 20}),
    api("/api/v1/alerts", {limit: 10}),
    api("/api/v1/analytics/network", {hours: 24}).catch(() => ({counties: []})),
  ]);
  const f = avail.fleet;
  const thr = pct(ctx.threshold);
  const tierText = f.tier ? t("tier_n", {n: f.tier}) : "—";
  const kpis = h("div", {class: "kpis"},
    kpi(t("device_rate"), pct(f.device_rate), `${t("month")} ${ctx.month.label}`, "fleet.device_rate", f.device_rate, rateCls(f.device_rate)),
    kpi(t("network_rate"), pct(f.network_rate), `${t("month")} ${ctx.month.label}`, "fleet.network_rate", f.network_rate, rateCls(f.network_rate)),
    // the contract tier is the province's alone: a county user's figures (their units only) carry none
    scoped() ? null : kpi(t("tier"), tierText, f.final_payment === null || f.final_payment === undefined ? "" :
        t("final_payment", {p: pct(f.final_payment).replace(".00", "")}), "fleet.tier", f.tier, f.tier === 1 ? "good" : f.tier ? "bad" : ""),
    kpi(`${t("online")} / ${t("offline")}`, `${live.online} / ${live.offline}`,
        `${t("online_share")} ${pct(live.online_share)} · ${t("in_service")} ${live.in_service}`, "live.online_offline", [live.online, live.offline]),
    kpi(t("flagged_units", {t: thr}), String(f.flagged_units), `${t("units")} ${f.units}`, "fleet.flagged_units", f.flagged_units,
        f.flagged_units ? "bad" : "good"));
  const head = h("div", {class: "row"}, h("h1", {}, `${t("fleet_title")} · ${ctx.month.label}`),
    h("span", {class: "muted", "data-k": "counted_to"}, `${t("counted_to")} ${avail.counted_to.slice(0, 16).replace("T", " ")}${avail.complete ? "" : t("incomplete")}`));

  const trendBox = h("div", {id: "trend"});
  const trendCard = card(t("trend"), trendSwitch(trendBox, {}), trendBox);
  trendCard.classList.add("wide");

  const fl = table([t("sn"), t("institution"), t("county"), {label: t("device_rate"), num: 1}, {label: t("network_rate"), num: 1}, t("below"), t("reasons")],
    flagged.items.map(u => h("tr", {"data-row": u.sn}, td(unitLink(u.sn)), td(instLink(u.institution)), td(word(u.county)),
      tdn(pct(u.device_rate), {class: "num " + rateCls(u.device_rate)}), tdn(pct(u.network_rate), {class: "num " + rateCls(u.network_rate)}),
      td(u.below.map(b => t(b)).join(", ")),
      td(Object.entries((u.reasons || {}).minutes || {}).slice(0, 3).map(([k, v]) => `${reasonText(k)} ${v}`).join("; "), {class: "wrap"}))), {id: "flagged"});
  const flCard = card(`${t("flagged_title")} (${flagged.total})`, fl);
  flCard.classList.add("wide");

  const instTable = (rows, id) => table([t("institution"), t("county"), {label: t("units"), num: 1}, {label: t("online"), num: 1},
      {label: t("online_rate"), num: 1}, {label: t("month_rate"), num: 1}],
    rows.map(i => h("tr", {"data-row": i.institution}, td(instLink(i.institution, i.name)), td(word(i.county)), tdn(i.units), tdn(i.online),
      tdn(pct(i.online_rate)), tdn(pct(i.month_rate), {class: "num " + rateCls(i.month_rate)}))), {id});
  const tied = live.ranking && live.ranking.tied && live.institutions_best.length ?
    h("p", {class: "muted", "data-k": "ranking.tied"}, t("ties", {r: pct(live.institutions_best[0].online_rate)})) : null;

  const netBy = Object.fromEntries((net.counties || []).map(c => [c.county, c]));
  const counties = table([t("county"), {label: t("units"), num: 1}, {label: t("in_service"), num: 1}, {label: t("device_rate"), num: 1},
      {label: t("network_rate"), num: 1}, {label: t("flagged"), num: 1}, {label: `${t("latency")} ms`, num: 1}, {label: `${t("within_limits")}`, num: 1}],
    avail.items.map(c => {
      const key = c.county || "unassigned", dep = live.deployment_by_county[key] || {}, n = netBy[key] || {};
      const total = Object.values(dep).reduce((a, b) => a + b, 0);
      return h("tr", {"data-row": key}, td(c.county ? c.county : word("unassigned")), tdn(total), tdn(dep.in_service || 0),
        tdn(pct(c.device_rate), {class: "num " + rateCls(c.device_rate), "data-k": "county.device_rate"}),
        tdn(pct(c.network_rate), {class: "num " + rateCls(c.network_rate), "data-k": "county.network_rate"}),
        tdn(c.flagged_units), tdn(num(n.latency_ms, 0)), tdn(pct(n.latency_ok_share)));
    }), {id: "counties"});
  const byCounty = card(t("by_county"), counties);
  byCounty.classList.add("wide");

  const barRows = (obj, name) => Object.entries(obj).map(([k, v]) => ({label: (name || word)(k), value: v}));
  const versions = table([t("component"), t("version"), {label: t("units"), num: 1}],
    Object.entries(live.software_versions).flatMap(([comp, vs]) => Object.entries(vs).map(([v, n]) => h("tr", {}, td(comp), td(v), tdn(n)))));
  const alertsCard = card(`${t("alerts")} (${alerts.total})`, alertTable(alerts.items, {id: "alerts", where: true}));
  alertsCard.classList.add("wide");

  return h("div", {}, head, kpis,
    h("div", {class: "grid"}, trendCard, flCard,
      byCounty),
    h("div", {class: "grid two"}, card(t("best10"), tied, instTable(live.institutions_best, "best")),
      card(t("worst10"), tied ? tied.cloneNode(true) : null, instTable(live.institutions_worst, "worst"))),
    h("div", {class: "grid"},
      card(t("carriers"), h("div", {id: "carriers"}, Charts.bars(barRows(live.by_carrier, carrierName), {label: t("carriers")}))),
      card(t("link_types"), h("div", {id: "link-types"}, Charts.bars(barRows(live.by_link_type), {label: t("link_types"), color: "#00897b"}))),
      card(t("versions"), versions), alertsCard),
    reportCard());
}

// alerts: one table for the fleet and the unit pages; engineers and admins acknowledge or close with a note
const canAct = () => ctx && (ctx.user.role === "engineer" || ctx.user.role === "admin");
function alertTable(items, opts) {
  const head = [t("opened"), ...(opts.closed ? [t("closed")] : []), t("kind"), ...(opts.where ? [t("sn")] : []), t("message"),
    ...(canAct() && !opts.closed ? [""] : [])];
  return table(head, items.map(a => h("tr", {"data-row": String(a.id), "data-kind": a.kind},
    td(when(a.opened_ts)), opts.closed ? td(a.closed_ts ? when(a.closed_ts) : "—", {"data-k": "alert.closed"}) : null,
    td(kindName(a.kind)), opts.where ? td(a.sn ? unitLink(a.sn) : word(a.county)) : null,
    td([alertText(a), a.acked_by || a.closed_by || a.note ? h("div", {class: "muted", "data-k": "alert.acked"},
      [a.acked_by ? t("acked", {who: a.acked_by}) : null, a.closed_by ? t("closed_by", {who: a.closed_by}) : null, a.note || null]
        .filter(Boolean).join(" · ")) : null], {class: "wrap", "data-k": "alert.message"}),
    canAct() && !opts.closed ? td(alertActions(a), {class: "actions"}) : null)), {id: opts.id});
}
function alertActions(a) {
  const box = h("span", {});
  const ask = action => {
    const note = h("input", {type: "text", class: "note", placeholder: t("note"), maxlength: 500});
    const form = h("form", {class: "row inline", onsubmit: async ev => {
      ev.preventDefault();
      try {
        await api(`/api/v1/alerts/${a.id}/${action}`, null, {method: "POST", body: {note: note.value.trim()}});
        render();
      } catch (err) { showError(err); }
    }}, note, h("button", {type: "submit", "data-act": "save"}, t("save")),
      h("button", {type: "button", onclick: () => box.replaceChildren(...buttons())}, t("cancel")));
    box.replaceChildren(form);
    note.focus();
  };
  const buttons = () => [h("button", {type: "button", "data-act": "ack", onclick: () => ask("ack")}, t("ack")),
    h("button", {type: "button", "data-act": "close", onclick: () => ask("close")}, t("close"))];
  box.append(...buttons());
  return box;
}

// downloads (the token goes in a header, so fetch the file and hand it to the browser) ------------------------
async function download(path, params, fallback) {
  const q = params ? "?" + new URLSearchParams(params) : "";
  const r = await fetch(path + q, {headers: authHeaders("GET"), credentials: "same-origin"});
  if (r.status === 401) throw new AuthError("401");
  if (!r.ok) { const err = new Error(`${r.status} ${await r.text()}`); err.status = r.status; throw err; }
  const cd = r.headers.get("content-disposition") || "";
  const utf8 = /filename\*=UTF-8''([^;]+)/.exec(cd), plain = /filename="([^"]+)"/.exec(cd);
  const name = utf8 ? decodeURIComponent(utf8[1]) : plain ? plain[1] : fallback;
  const a = h("a", {href: URL.createObjectURL(await r.blob()), download: name});
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  return name;
}
function reportCard() {
  const m = ctx.month.label;
  const pick = h("input", {type: "month", id: "report-month", value: m, max: m});
  const county = h("input", {type: "text", id: "report-county", placeholder: t("county")});
  const status = h("span", {class: "muted", id: "report-status"});
  const go = fmt => async () => {
    status.textContent = "…";
    try {
      status.textContent = await download("/api/v1/reports/ops", {month: pick.value || m, format: fmt, lang,
        ...(county.value.trim() ? {county: county.value.trim()} : {})}, `ops.${fmt}`);
    } catch (err) { status.textContent = err.message; }
  };
  // the reports the server made on its own ([reports.schedule]): listed with their delivery, downloaded as kept
  // (the province's: a county user downloads its county's report above, decision 031)
  const stored = scoped() ? null : h("div", {id: "stored-reports"}, h("span", {class: "muted"}, "…"));
  if (stored) api("/api/v1/reports/stored", {limit: 24}).then(page => {
    if (!page.items.length) { stored.replaceChildren(h("span", {class: "muted"}, t("stored_none"))); return; }
    const rows = page.items.map(r => h("tr", {"data-name": r.name}, h("td", {}, r.period), h("td", {}, r.format.toUpperCase()),
      h("td", {}, when(r.made)), h("td", {}, Object.keys(r.delivered).map(c => t("via_" + c)).join("、") || "—"),
      h("td", {}, h("button", {type: "button", "data-stored": r.name, onclick: async () => {
        try { status.textContent = await download(r.url, null, r.name); } catch (err) { status.textContent = err.message; }
      }}, t("download")))));
    stored.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, ...["period", "format", "made", "delivered", ""].map(k => h("th", {}, k ? t(k) : "")))),
      h("tbody", {}, ...rows)));
  }).catch(err => stored.replaceChildren(h("span", {class: "muted"}, err.message)));
  const c = card(t("report"), h("div", {class: "row"}, h("label", {}, t("month"), " ", pick), county,
    ...["pdf", "xlsx", "csv", "html"].map(f => h("button", {type: "button", "data-report": f, onclick: go(f)}, `${t("download")} ${f.toUpperCase()}`)), status),
    stored ? h("h3", {}, t("stored_reports")) : null, stored);
  c.id = "report";
  return c;
}

function trendSwitch(box, scope) {
  const seg = h("div", {class: "seg row"});
  const load = async days => {
    seg.querySelectorAll("button").forEach(b => b.classList.toggle("on", b.dataset.days === String(days)));
    box.dataset.state = "loading";
    const tr = await api("/dashboard/api/trend", {days, ...scope});
    const x = p => Date.parse(p.date + "T00:00:00Z") / 86400000;
    box.replaceChildren(Charts.line([
      {name: "device", color: "#1565c0", points: tr.points.map(p => [x(p), p.device_rate === null ? null : p.device_rate * 100])},
      {name: "network", color: "#00897b", points: tr.points.map(p => [x(p), p.network_rate === null ? null : p.network_rate * 100])},
    ], {label: `${t("trend")} ${days}`, height: 200, width: Math.max(480, Math.min(1400, box.clientWidth || 900)), refs: [{y: ctx.threshold * 100, label: t("threshold", {t: pct(ctx.threshold)})}],
        fmtY: v => v.toFixed(1) + "%", fmtX: v => new Date(v * 86400000).toISOString().slice(5, 10)}),
      h("div", {class: "legend"}, h("span", {}, h("i", {class: "sw-line1"}), t("device_rate")), h("span", {}, h("i", {class: "sw-line2"}), t("network_rate"))));
    Charts.fit(box);
    box.dataset.state = "ready";
    box.dataset.days = String(days);
    box.dataset.points = String(tr.points.filter(p => p.device_rate !== null).length);
  };
  for (const d of [7, 30, 90]) seg.append(h("button", {type: "button", "data-days": d, onclick: () => load(d).catch(showError)}, t("days", {n: d})));
  setTimeout(() => load(30).catch(showError), 0);
  return seg;
}
function showError(err) {
  if (err instanceof AuthError) { location.hash = "#/login"; return; }
  document.getElementById("main").prepend(h("p", {class: "error"}, `${t("server_error")}: ${err.message}`));
}

// units list ------------------------------------------------------------------------------------------
const UNIT_FILTERS = ["county", "institution", "model", "online", "flagged"];
async function viewUnits(r) {
  const q = r.q.get("q") || "", offset = Number(r.q.get("offset") || 0), limit = 50;
  const chosen = Object.fromEntries(UNIT_FILTERS.map(k => [k, r.q.get(k) || ""]));
  const data = await api("/dashboard/api/units", {q, limit, offset, ...chosen});
  const input = h("input", {type: "search", id: "unit-search", value: q, placeholder: t("search")});
  const selects = {};
  const yesNo = k => [["", t("all")], ["true", k === "online" ? t("online") : t("flagged")], ["false", k === "online" ? t("offline") : t("no")]];
  for (const k of UNIT_FILTERS) {
    const opts = k === "online" || k === "flagged" ? yesNo(k) : [["", t("all")], ...data.options[k].map(v => [v, k === "county" ? word(v) : v])];
    selects[k] = h("select", {id: `filter-${k}`, "data-filter": k, onchange: () => go(0)},
      opts.map(([v, label]) => h("option", {value: v, selected: v === chosen[k]}, label)));
  }
  const go = off => {
    const p = new URLSearchParams({q: input.value.trim(), offset: String(off)});
    for (const k of UNIT_FILTERS) if (selects[k].value) p.set(k, selects[k].value);
    location.hash = `#/units?${p}`;
  };
  const form = h("form", {class: "row", onsubmit: ev => { ev.preventDefault(); go(0); }}, input,
    h("button", {type: "submit", id: "search-button"}, t("search_btn")),
    ...UNIT_FILTERS.map(k => h("label", {}, t(k === "online" ? "online" : k === "flagged" ? "flagged" : k), " ", selects[k])),
    h("button", {type: "button", id: "filter-reset", onclick: () => { location.hash = "#/units"; }}, t("reset")),
    h("span", {class: "muted", "data-k": "units.total"}, t("of_total", {n: data.total})),
    offset > 0 ? h("button", {type: "button", onclick: () => go(Math.max(0, offset - limit))}, t("prev")) : null,
    offset + limit < data.total ? h("button", {type: "button", id: "next-page", onclick: () => go(offset + limit)}, t("next")) : null);
  const rows = data.items.map(u => h("tr", {"data-row": u.sn}, td(unitLink(u.sn)), td(u.insurance_sn || "—"),
    td(instLink(u.institution, u.institution_name)), td(word(u.county)), td(u.model || "—"), td(word(u.status)),
    td(h("span", {class: `pill ${u.online ? "online" : "offline"}`}, u.online ? t("online") : t("offline"))),
    td(carrierName(u.sim.carrier)), td(when(u.last_seen))));
  return h("div", {}, h("h1", {}, t("units_title")), form, registryTools(),
    h("div", {class: "card"}, table([t("sn"), t("insurance_sn"), t("institution"), t("county"), t("model"), t("status"), t("online"), t("carrier"), t("last_seen")], rows, {id: "units"})));
}

// registry export (CSV / XLSX) and import with a preview (admins) ------------------------------------------
function registryTools() {
  const status = h("span", {class: "muted", id: "registry-status"});
  const exp = fmt => async () => {
    try { status.textContent = await download("/api/v1/registry/units.csv", {format: fmt, lang}, `units.${fmt}`); }
    catch (err) { status.textContent = err.message; }
  };
  const kids = [h("button", {type: "button", "data-export": "csv", onclick: exp("csv")}, `${t("export")} CSV`),
    h("button", {type: "button", "data-export": "xlsx", onclick: exp("xlsx")}, `${t("export")} XLSX`)];
  const preview = h("div", {id: "import-preview"});
  if (ctx.user.role === "admin") {
    const file = h("input", {type: "file", id: "import-file", accept: ".csv,.xlsx,text/csv"});
    const send = async dry => {
      const f = file.files[0];
      if (!f) return;
      status.textContent = "…";
      try {
        const rep = await api("/api/v1/registry/units/import", dry ? {dry_run: true} : null, {method: "POST", body: f});
        status.textContent = "";
        preview.replaceChildren(importReport(rep, dry, () => send(false)));
        if (!dry) preview.dataset.applied = "1";
      } catch (err) { status.textContent = err.message; }
    };
    kids.push(h("label", {}, `${t("import")} `, file), h("button", {type: "button", id: "import-preview-btn", onclick: () => send(true)}, t("preview")));
  }
  return h("div", {class: "card", id: "registry-tools"}, h("div", {class: "row"}, ...kids, status), preview);
}
function importReport(rep, dry, apply) {
  // the server answers codes (actions, field names, status codes): each is shown in the page's language
  const changes = rep.changes || [];
  const errors = rep.errors || [];
  const CODED = new Set(["status", "stock_type", "link_type", "type", "level"]);  // fields whose values are codes
  const value = (k, v) => CODED.has(k) ? word(v) : String(v);
  const field = k => k ? word(k) : "";
  const head = h("p", {"data-k": "import.summary"}, ["imported", "added", "changed", "unchanged"].filter(k => typeof rep[k] === "number")
    .map(k => `${t("import_" + k)} ${rep[k]}`).join(" · "));
  const ch = table([t("sn"), t("what"), t("message")], changes.map(c => h("tr", {"data-row": c.key || c.sn || "", "data-action": c.action || ""},
    td(c.key || c.sn || ""), td(c.action ? t("import_" + c.action) : ""), td(Object.entries(c.fields || {}).map(([k, v]) => `${field(k)}: ${v[0] === null || v[0] === undefined ? "—" : value(k, v[0])} → ${v[1] === null || v[1] === "" ? t("emptied") : value(k, v[1])}`).join("; "), {class: "wrap"}))), {id: "import-changes"});
  const er = table([t("import_line"), t("import_field"), t("message")], errors.map(e => h("tr", {"data-row": String(e.line), "data-field": e.field || ""},
    td(String(e.line)), td(field(e.field)), td(e.error || e.message || "", {class: "wrap"}))), {id: "import-errors"});
  return h("div", {}, head, ch, er, dry && changes.length ? h("button", {type: "button", id: "import-apply", onclick: apply}, t("apply")) : null);
}

// institutions ----------------------------------------------------------------------------------------
const LEVEL_CODES = ["provincial", "prefectural", "county_level", "township", "village"];
const levelWord = v => v ? word(v) : t("level_unset");
async function viewInstitutions(r) {
  const level = (r && r.q.get("level")) || "";
  const [insts, avail] = await Promise.all([api("/api/v1/institutions", {level, limit: 100000}), api("/api/v1/availability", {...month(), group_by: "institution", limit: 100000})]);
  const fig = Object.fromEntries(avail.items.map(i => [i.institution, i]));
  const rows = insts.items.map(i => {
    const a = fig[i.code] || {};
    return h("tr", {"data-row": i.code, "data-level": i.level || ""}, td(i.code), td(instLink(i.code, i.name)), td(word(i.county)), td(word(i.type)),
      td(levelWord(i.level), {"data-k": "inst.level"}),
      tdn(a.units === undefined ? "0" : a.units), tdn(pct(a.device_rate), {class: "num " + rateCls(a.device_rate)}),
      tdn(pct(a.network_rate), {class: "num " + rateCls(a.network_rate)}), tdn(a.flagged_units === undefined ? "0" : a.flagged_units));
  });
  // the level filter (issue 18): the institutions of one level
  const pick = h("form", {class: "row", id: "inst-filter", onsubmit: ev => { ev.preventDefault();
      const v = ev.target.level.value; location.hash = v ? `#/institutions?level=${v}` : "#/institutions"; }},
    h("label", {}, `${t("level")} `, h("select", {name: "level"}, ["", ...LEVEL_CODES].map(c => h("option", {value: c, selected: c === level}, c ? word(c) : t("all"))))),
    h("button", {type: "submit"}, t("filter")), h("span", {class: "muted", "data-k": "inst.total"}, t("n_items", {n: insts.total})));
  return h("div", {}, h("h1", {}, `${t("institutions_title")} · ${ctx.month.label}`),
    h("div", {class: "card"}, pick, table([t("code"), t("name"), t("county"), t("type"), t("level"), {label: t("units"), num: 1}, {label: t("device_rate"), num: 1},
      {label: t("network_rate"), num: 1}, {label: t("flagged"), num: 1}], rows, {id: "institutions"})));
}

async function viewInstitution(r) {
  const code = r.arg;
  const [inst, avail] = await Promise.all([api(`/api/v1/institutions/${encodeURIComponent(code)}`),
    api("/api/v1/availability", {...month(), group_by: "unit", institution: code, limit: 100000})]);
  const online = Object.fromEntries(inst.units.map(u => [u.sn, u]));
  const rows = avail.items.map(u => h("tr", {"data-row": u.sn}, td(unitLink(u.sn)), td(word((online[u.sn] || {}).status)),
    td(h("span", {class: `pill ${(online[u.sn] || {}).online ? "online" : "offline"}`}, (online[u.sn] || {}).online ? t("online") : t("offline"))),
    tdn(pct(u.device_rate), {class: "num " + rateCls(u.device_rate), "data-k": "unit.device_rate"}),
    tdn(pct(u.network_rate), {class: "num " + rateCls(u.network_rate), "data-k": "unit.network_rate"}),
    tdn(u.no_data_slots), td(u.flagged ? t("yes") : t("no"))));
  const f = avail.fleet;
  const trendBox = h("div", {id: "trend"});
  const tc = card(t("trend"), trendSwitch(trendBox, {institution: code}), trendBox);
  tc.classList.add("wide");
  const unitsCard = card(t("inst_units"), table([t("sn"), t("status"), t("online"), {label: t("device_rate"), num: 1}, {label: t("network_rate"), num: 1},
    {label: t("slot_nodata"), num: 1}, t("flagged")], rows, {id: "inst-units"}));
  unitsCard.classList.add("wide");
  return h("div", {}, h("h1", {}, t("inst_title", {name: inst.name})),
    h("div", {class: "kpis"},
      kpi(t("device_rate"), pct(f.device_rate), `${t("month")} ${ctx.month.label}`, "inst.device_rate", f.device_rate, rateCls(f.device_rate)),
      kpi(t("network_rate"), pct(f.network_rate), `${t("month")} ${ctx.month.label}`, "inst.network_rate", f.network_rate, rateCls(f.network_rate)),
      kpi(`${t("online")} / ${t("units")}`, `${inst.units.filter(u => u.online).length} / ${inst.units.length}`, "", "inst.online")),
    h("div", {class: "grid"},
      card(t("identity"), h("dl", {class: "kv"}, kv(t("code"), inst.code), kv(t("name"), inst.name), kv(t("county"), inst.county),
        kv(t("region"), inst.region), kv(t("type"), word(inst.type)), kv(t("level"), levelWord(inst.level), "inst.level"), kv(t("hours"), inst.hours || t("default_hours")), kv(t("contact"), inst.contact || "—"))),
      tc, unitsCard));
}
const kv = (k, v, key) => [h("dt", {}, k), h("dd", {"data-k": key || null}, v === null || v === undefined || v === "" ? "—" : v)];

// unit view -------------------------------------------------------------------------------------------
async function viewUnit(r) {
  const sn = r.arg;
  let day = r.q.get("date") || ctx.today;
  const [u, samples, avail, slots_, alerts, net, cmds] = await Promise.all([
    api(`/api/v1/registry/units/${encodeURIComponent(sn)}`),
    api(`/api/v1/units/${encodeURIComponent(sn)}/samples`, {limit: 240}).catch(() => ({items: []})),
    api("/api/v1/availability", {...month(), group_by: "unit", sn, limit: 1}),
    api(`/api/v1/units/${encodeURIComponent(sn)}/slots`, {date: day}).catch(e => ({error: e.message})),
    api("/api/v1/alerts", {sn, open: true, limit: 50}),
    api(`/api/v1/units/${encodeURIComponent(sn)}/network`, {hours: 24}).catch(() => null),
    ctx.features.commands ? api("/api/v1/commands", {sn, limit: 20}).catch(() => null) : Promise.resolve(null),
  ]);
  const closedAlerts = await api("/api/v1/alerts", {sn, open: false, limit: 20})
    .then(r => r.items.filter(a => a.closed_ts !== null && a.closed_ts !== undefined)).catch(() => []);
  let slots = slots_;
  if (!r.q.get("date") && !slots.error && !slots.slots.some(s => s.counted && Date.parse(s.start) / 1000 < epoch(ctx.now))) {
    // nothing counted yet today (early morning): show yesterday, the last day with something to see
    const y = new Date(Date.parse(ctx.today + "T00:00:00Z") - 86400000).toISOString().slice(0, 10);
    const prev = await api(`/api/v1/units/${encodeURIComponent(sn)}/slots`, {date: y}).catch(() => null);
    if (prev) { slots = prev; day = y; }
  }
  const fig = avail.items[0] || {};
  const ident = u.identity || {};
  const latest = samples.items[0];
  const identity = card(t("identity"), h("dl", {class: "kv"},
    kv(t("sn"), u.sn, "unit.sn"), kv(t("insurance_sn"), u.insurance_sn), kv(t("terminal_type"), u.terminal_type), kv(t("model"), u.model),
    kv(t("vendor"), u.vendor), kv(t("institution"), instLink(u.institution, u.institution_name)), kv(t("county"), u.county),
    kv(t("status"), word(u.status), "unit.status"), kv(t("stock_type"), word(u.stock_type)), kv(t("link_type"), word(u.link_type)),
    kv(t("online"), h("span", {class: `pill ${u.online ? "online" : "offline"}`, "data-k": "unit.online"}, u.online ? t("online") : t("offline"))),
    kv(t("last_seen"), when(u.last_seen))));
  const sim = card(t("sim"), h("dl", {class: "kv"},
    kv(t("carrier"), carrierName(u.sim.carrier), "sim.carrier"), kv(t("imsi"), u.sim.imsi, "sim.imsi"), kv(t("iccid"), u.sim.iccid, "sim.iccid"),
    kv(t("first_report"), when(u.sim.first_report)), kv(t("last_report"), when(u.sim.last_report)),
    kv(t("modem_model"), ident.modem_model), kv(t("modem_firmware"), ident.modem_firmware)));
  const sw = card(t("software"), h("dl", {class: "kv"}, h("dt", {class: "head"}, t("component")), h("dd", {class: "head"}, t("version")),
    Object.entries(u.software || {}).map(([k, v]) => kv(word(k), v, `sw.${k}`))));

  const checks = latest ? Object.entries(latest.checks || {}) : [];
  const stateName = s => ["check_ok", "check_fault", "check_unknown"][s] || "check_unknown";
  const periph = card(t("peripherals"), h("p", {class: "muted"}, latest ? `${t("latest_sample")} ${when(latest.ts)}` : t("none")),
    table([t("what"), t("status"), t("reason")], checks.map(([name, [state, reason]]) => h("tr", {"data-row": name}, td(checkName(name), {"data-k": "check.name"}),
      td(h("span", {class: `pill ${["ok", "fault", "unknown"][state] || "unknown"}`, "data-k": `check.${name}`}, t(stateName(state)))),
      td(reasonWord(reason), {class: "wrap", "data-k": "check.reason"}))), {id: "checks"}));

  const month_ = h("div", {class: "kpis"},
    kpi(t("device_rate"), pct(fig.device_rate), `${t("month")} ${ctx.month.label}`, "unit.device_rate", fig.device_rate, rateCls(fig.device_rate)),
    kpi(t("network_rate"), pct(fig.network_rate), `${t("month")} ${ctx.month.label}`, "unit.network_rate", fig.network_rate, rateCls(fig.network_rate)),
    kpi(t("nodata_minutes"), String(fig.no_data_slots === undefined ? "—" : fig.no_data_slots), `${t("month")} ${ctx.month.label}`, "unit.no_data"),
    net ? kpi(t("network_24h"), `${num(net.latency_ms, 0)} ms`, `${t("jitter")} ${num(net.jitter_ms, 0)} ms · ${t("loss")} ${net.loss === null ? "—" : net.loss}`, "unit.latency") : null);

  const asc = samples.items.slice().reverse();
  const chart = (label, pick, extra) => h("div", {class: "card"}, h("h2", {}, label),
    Charts.line([{name: label, color: "#1565c0", points: asc.map(s => [epoch(s.ts), pick(s)])}],
      Object.assign({label, height: 150, width: 420, ticks: 3, fmtX: v => when(v).slice(5), empty: t("none")}, extra || {})));
  const diskPct = s => (s.fs && s.fs.length) ? Math.round(1000 * s.fs[0].used_mb / Math.max(1, s.fs[0].size_mb)) / 10 : null;
  const health = h("div", {class: "grid", id: "health"},
    chart(t("cpu"), s => s.cpu === undefined ? null : s.cpu, {yMin: 0, yMax: 100}),
    chart(t("mem"), s => s.mem_used_mb === undefined ? null : s.mem_used_mb),
    chart(t("disk"), diskPct, {yMin: 0, yMax: 100, refs: [{y: 90, label: "90%"}]}),
    chart(t("signal"), s => s.signal_dbm === undefined ? null : s.signal_dbm),
    ...signal3g(samples.items, chart),
    chart(t("rtt"), s => s.rtt_ms === undefined ? null : s.rtt_ms, {yMin: 0, refs: [{y: 400, label: "400 ms"}]}));

  const slotCard = card(t("day_slots"), slotsView(sn, day, slots));
  slotCard.classList.add("wide");
  const hist = card(t("status_history"), table([t("from"), t("status"), t("message")],
    (u.status_history || []).map(s => h("tr", {}, td(when(s.from_ts)), td(word(s.status)), td(`${L("by." + s.by) || s.by}${s.note ? (lang === "zh" ? "：" : ": ") + noteText(s.note) : ""}`, {class: "wrap", "data-k": "history.note"}))), {id: "status-history"}));
  const al = card(`${t("alerts")} (${alerts.total})`, alertTable(alerts.items, {id: "unit-alerts"}));
  const alLog = card(t("alert_log"), alertTable(closedAlerts, {id: "unit-alerts-closed", closed: true}));
  let cmdCard = null;
  if (ctx.features.commands) {
    const items = cmds && Array.isArray(cmds.items) ? cmds.items : [];
    cmdCard = card(t("commands"), table(["id", t("kind"), t("status"), t("opened")], items.map(c => h("tr", {},
      td(String(c.id || "")), td(String(c.type || "")), td(String(c.state || c.status || "")), td(when(c.issued || c.created || null))))),
      h("p", {}, h("a", {href: `/docs#/commands`}, "API")));
    cmdCard.id = "commands";
  }
  return h("div", {}, h("h1", {}, t("unit_title", {sn})), month_,
    h("div", {class: "grid"}, identity, sim, sw, periph), health,
    h("div", {class: "grid"}, slotCard), h("div", {class: "grid two"}, al, hist, alLog, cmdCard));
}

// WCDMA (3G) signal: RSCP and Ec/Io, only for a unit whose samples carry them (absent on LTE and wired links)
function signal3g(newestFirst, chart) {
  const pick = k => s => s[k] === undefined || s[k] === null ? null : s[k];
  return [["rscp", "rscp_dbm"], ["ecio", "ecio_db"]].flatMap(([key, field]) => {
    const latest = newestFirst.find(s => pick(field)(s) !== null);
    if (!latest) return [];
    const c = chart(t(key), pick(field));
    c.dataset.k = `health.${key}`;
    c.insertBefore(h("p", {class: "muted", "data-k": `health.${key}.latest`}, fill(t("latest_value"), {v: String(latest[field])})),
      c.children[1]);
    return [c];
  });
}

function problemText(p) {
  const v = p.vars || {};
  const what = v.what ? t("cert_" + v.what) : "";
  if (p.check === "disk") return v.error ? fill(t("problem_disk_error"), v) : fill(t("problem_disk"), v);
  if (p.check === "backup") return v.age_h === null || v.age_h === undefined ? t("problem_backup_none")
    : fill(t("problem_backup"), {age: Math.round(v.age_h), line: v.line});
  if (p.check === "broker") return fill(t("problem_broker"), {address: v.address, error: v.error || ""});
  if (p.check === "certificate") return v.error ? fill(t("problem_cert_error"), {what, error: v.error})
    : fill(t(v.days >= 0 ? "problem_cert" : "problem_cert_expired"), {what, days: Math.round(v.days)});
  if (p.check === "time") return fill(t("problem_time"), {ms: v.max_error_ms});
  if (p.check === "renewal") return fill(t("problem_renewal"), {n: v.n, days: Math.round(v.days)});
  if (p.check === "report") return fill(t("problem_report"), {period: v.period, days: v.days});
  return p.message;
}
async function viewServer() {
  const s = await api("/api/v1/server/inspection");
  const yes = v => v === true ? t("yes") : v === false ? t("no") : "—";
  const gb = b => b === null || b === undefined ? "—" : (b / 1e9).toFixed(1) + " GB";
  const mb = b => b === null || b === undefined ? "—" : (b / 1e6).toFixed(1) + " MB";
  const bad = flag => flag ? "bad" : null;
  const status = h("p", {class: s.problems.length ? "error" : "good", "data-k": "inspect.status"},
    s.problems.length ? fill(t("inspect_problems"), {n: s.problems.length}) : t("inspect_ok"));
  const problems = h("ul", {id: "inspect-problems"}, s.problems.map(p =>
    h("li", {"data-check": p.check}, `${L("inspect." + p.check) || p.check}${lang === "zh" ? "：" : ": "}${problemText(p)}`)));
  const disks = card(`${t("disks")} (${fill(t("alert_line"), {p: s.disk_alert_pct})})`,
    table([t("path"), t("what"), {label: t("used"), num: 1}, {label: t("size"), num: 1}],
      s.disks.map(d => h("tr", {"data-row": d.path}, td(d.path), td(d.what.map(w => w === "database" ? t("db") : t("nav_server")).join("、")),
        tdn(d.used_pct === undefined ? (d.error || "—") : d.used_pct.toFixed(1) + "%", {"data-k": "disk.used_pct", class: "num " + (bad(d.alert) || "")}),
        tdn(gb(d.size_bytes)))), {id: "disks"}));
  const b = s.backup;
  const dbCard = card(t("db"), h("dl", {class: "kv"}, kv(t("backend"), s.database.backend),
    kv(t("size"), mb(s.database.bytes), "db.bytes"), kv(t("used"), s.database.fill_pct === null ? "—" : s.database.fill_pct + "%")));
  const backup = card(t("backup"), h("dl", {class: "kv"},
    kv(t("last_backup"), b.last ? when(b.last) : t("never"), "backup.last"),
    kv(t("age_h"), b.age_h === null ? "—" : h("span", {class: bad(b.alert)}, String(b.age_h)), "backup.age_h"),
    kv(t("file"), b.file)));
  const rej = Object.entries(s.ingest.rejected_messages || {}).concat(Object.entries(s.ingest.rejected_items || {}));
  const broker = card(`${t("broker")} / ${t("ingest")}`, h("dl", {class: "kv"},
    kv(t("connected"), h("span", {class: s.broker.connected ? "good" : "bad"}, yes(s.broker.connected)), "broker.connected"),
    kv(t("address"), s.broker.address), kv(t("error"), s.broker.error),
    kv(t("lag_s"), String(s.ingest.lag_s), "ingest.lag_s"), kv(t("queued"), String(s.ingest.queued)),
    kv(t("rejected"), rej.length ? rej.map(([k, n]) => `${reasonWord(k)} ${n}`).join("，") : "0", "ingest.rejected"),
    kv(t("dead_letters"), String(s.ingest.dead_letters))));
  const c = s.certificates;
  const certs = card(`${t("certificates")} (${fill(t("cert_alert_line"), {d: c.alert_days})})`,
    table([t("what"), t("subject"), t("not_after"), {label: t("days_left"), num: 1}],
      c.items.map(x => h("tr", {"data-row": x.what}, td(t("cert_" + x.what)), td(x.subject || x.error || "—"), td(x.not_after ? when(x.not_after) : "—"),
        tdn(x.days_left === undefined ? "—" : String(Math.round(x.days_left)), {"data-k": "cert.days_left", class: "num " + (bad(x.alert) || "")}))), {id: "certs"}),
    h("h3", {}, t("terminal_certs")),
    h("p", {"data-k": "terminals.summary"}, `${t("units")} ${c.terminals.total}，${fill(t("expiring"), {d: c.alert_days})} ${c.terminals.expiring}，${t("expired")} ${c.terminals.expired}`),
    table([t("sn"), t("not_after"), {label: t("days_left"), num: 1}],
      c.terminals.soonest.map(x => h("tr", {"data-row": x.sn}, td(unitLink(x.sn)), td(when(x.not_after)),
        tdn(String(Math.round(x.days_left)), {class: "num bad"}))), {id: "terminal-certs"}),
    h("h3", {}, t("renewals")),
    h("p", {"data-k": "renewals.summary"}, `${fill(t("renewal_waiting"), {n: c.renewals.waiting})}${lang === "zh" ? "，" : ", "}` +
      fill(t("renewal_states"), Object.assign({signed: 0, switched: 0, done: 0, refused: 0}, c.renewals.by_state))));
  const clock = card(t("time_sync"), h("dl", {class: "kv"},
    kv(t("synchronised"), h("span", {class: s.time_sync.synchronised === false ? "bad" : null}, yes(s.time_sync.synchronised)), "time.synchronised"),
    kv(t("max_error_ms"), s.time_sync.max_error_ms === undefined ? "—" : String(s.time_sync.max_error_ms))));
  return h("div", {}, h("h1", {}, t("server_title")), h("div", {class: "card"}, status, problems),
    h("div", {class: "grid two"}, disks, dbCard, backup, broker, clock), certs);
}

function slotsView(sn, day, data) {
  const picker = h("input", {type: "date", id: "slot-date", value: day, max: ctx.today,
    onchange: ev => { location.hash = `#/unit/${encodeURIComponent(sn)}?date=${ev.target.value}`; }});
  if (data.error) return h("div", {}, h("div", {class: "row"}, h("label", {}, t("date"), " ", picker)), h("p", {class: "error"}, data.error));
  const kindOf = s => Date.parse(s.start) / 1000 >= epoch(ctx.now) ? "future" : !s.counted ? "off" : s.device === "no_data" ? "nodata" :
    s.device === "not_intact" && s.network === "not_ok" ? "both" : s.device === "not_intact" ? "dev" : s.network === "not_ok" ? "net" : "ok";
  const colors = {future: "#ffffff", ok: "#2e7d32", dev: "#c62828", net: "#ef6c00", both: "#6a1b9a", nodata: "#9e9e9e", off: "#eceff1"};
  const runs = [];
  data.slots.forEach((s, i) => {
    const kind = kindOf(s);
    const why = [...(s.device_reasons || []), ...(s.network_reasons || [])].map(reasonText).join(", ") + (s.likely_carrier_outage ? ` (${t("carrier_outage")})` : "");
    const last = runs[runs.length - 1];
    if (last && last.kind === kind && last.why === why && last.to === i) { last.to = i + 1; last.end = s.start; return; }
    runs.push({from: i, to: i + 1, kind, why, start: s.start, end: s.start, excluded: s.excluded, outage: !!s.likely_carrier_outage});
  });
  for (const r of runs) {
    r.color = colors[r.kind];
    r.title = `${hhmm(r.start)}–${r.to >= data.slots.length ? "24:00" : hhmm(data.slots[r.to].start)} ${t("slot_" + r.kind)} ${r.why}`;
  }
  const bad = runs.filter(r => !["ok", "off", "future"].includes(r.kind));
  const endOf = r => r.to >= data.slots.length ? "24:00" : hhmm(data.slots[r.to].start);
  const failures = table([t("from"), t("to"), {label: "min", num: 1}, t("what"), t("reasons")],
    bad.map(r => h("tr", {"data-kind": r.kind}, td(hhmm(r.start)), td(endOf(r)), tdn(r.to - r.from), td(t("slot_" + r.kind)),
      td(r.why, {class: r.outage ? "warn" : null}))), {id: "failures"});
  const legend = h("div", {class: "legend"}, ...["ok", "dev", "net", "both", "nodata", "off", "future"].map(k =>
    h("span", {}, h("i", {class: `sw-${k}`}), t("slot_" + k))));
  return h("div", {id: "slots", "data-date": data.date},
    h("div", {class: "row"}, h("label", {}, t("date"), " ", picker),
      h("span", {class: "muted", "data-k": "slots.figures"}, t("figures_day", {d: pct(data.figures.device_rate), n: pct(data.figures.network_rate)}))),
    Charts.strip(runs, {label: t("day_slots"), width: 1300}), legend, h("h2", {}, t("failures")), failures);
}

// auto-refresh: the current view again every REFRESH_S (not while someone types in it) ------------------------
const REFRESH_KEY = "posfleet.refresh", REFRESH_S = 60;
let refreshTimer = null;
function scheduleRefresh() {
  clearInterval(refreshTimer);
  refreshTimer = null;
  if (localStorage.getItem(REFRESH_KEY) !== "1") return;
  refreshTimer = setInterval(() => {
    const main = document.getElementById("main");
    const typing = document.activeElement && main.contains(document.activeElement) &&
      ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
    if (!typing && main.dataset.state === "ready" && main.dataset.view !== "login" && !main.querySelector("form.inline, #import-preview > *")) render();
  }, (window.POSFLEET_REFRESH_S || REFRESH_S) * 1000);
}
let resizeTimer = null;
window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => Charts.fit(document.getElementById("main")), 200); });

// boot ------------------------------------------------------------------------------------------------
window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem(LANG_KEY, lang);
    render();
  });
  const auto = document.getElementById("auto-refresh");
  auto.checked = localStorage.getItem(REFRESH_KEY) === "1";
  auto.addEventListener("change", () => { localStorage.setItem(REFRESH_KEY, auto.checked ? "1" : "0"); scheduleRefresh(); });
  scheduleRefresh();
  document.getElementById("change-password").addEventListener("click", () => {
    const main = document.getElementById("main");
    main.replaceChildren(newPasswordForm(sessionStorage.getItem(CSRF_KEY), null, () => signedOut(main, t("password_changed"))));
    main.dataset.view = "new-password";
    main.dataset.state = "ready";
  });
  document.getElementById("logout").addEventListener("click", async () => {
    const csrf = sessionStorage.getItem(CSRF_KEY);
    if (csrf) await fetch("/api/v1/session", {method: "DELETE", credentials: "same-origin", headers: {"X-CSRF-Token": csrf}}).catch(() => null);
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(CSRF_KEY);
    location.hash = "#/login";
  });
  render();
});
