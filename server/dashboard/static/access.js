/* posfleet dashboard, issue 18: network access (IP pools, applications, combined query), business access
   (interface register, access monitoring) and service statistics with the province map. Loaded after app.js and
   written with its helpers (h, card, table, api, t...); its views are added to app.js's router through
   window.ACCESS_VIEWS. Every figure comes from one API answer (docs/api.md). */
"use strict";

Object.assign(I18N.zh, {
  nav_applications: "接入申请", nav_pools: "IP 地址池", nav_interfaces: "业务接口", nav_statistics: "服务统计",
  applications_title: "网络与业务接入申请", new_application: "新申请", domain: "类别", action: "事项", network: "网络接入",
  business: "业务接入", register: "接入", change: "变更", deregister: "注销", state: "状态", ip: "IP 地址",
  app_pending_county: "待区县审核", app_pending_province: "待省级审批", app_approved: "已通过", app_rejected: "已驳回",
  approve: "通过", reject: "驳回", submit: "提交", reject_needs_reason: "驳回须填写原因", updated: "更新时间",
  history: "办理记录", interface: "接口", applicant_note: "申请说明",
  pools_title: "IP 地址池", add_pool: "新增地址池", cidr: "网段", first_ip: "起始地址", last_ip: "结束地址",
  allocated: "已分配", reserved: "已保留", free: "可用", use: "使用率", network_query: "网络信息综合查询",
  reported_ip: "上报地址", query: "查询",
  interfaces_title: "医保业务接口", add_interface: "登记接口", request_address: "请求地址", inputs: "输入",
  outputs: "输出", description: "说明", active: "启用", suspended: "暂停", granted: "已授权", reached: "访问正常",
  monitoring: "接入监测", working: "正常", failing: "失败", last_reached: "最近成功", reported: "上报时间",
  statistics_title: "服务统计", week: "近一周", month_p: "近一月", half_year: "近半年", year: "近一年", by_day: "按日",
  by_month: "按月", services: "服务人次", people: "服务人数", identity_checks: "身份核验方式", face: "人脸",
  idcard: "身份证", evoucher: "医保电子凭证", other: "其他", share: "占比", top_institutions: "服务量前 10 的机构",
  coverage: "部署覆盖", covered: "已覆盖", coverage_rate: "覆盖率", by_type: "按机构类型", ranking: "区县覆盖排名",
  new_deployments: "每月新增部署", province_map: "全省终端分布", map_note: "颜色越深终端越多；示意图，非测绘边界",
  not_on_map: "不在地图上的地区", times: "次数", n_items: "共 {n} 条", coverage_trend: "覆盖率（近 12 个月）",
  services_by_level: "按机构级别的服务人次", by_level_k: "按机构级别",
});
Object.assign(I18N.en, {
  nav_applications: "Applications", nav_pools: "IP pools", nav_interfaces: "Interfaces", nav_statistics: "Statistics",
  applications_title: "Network and business access applications", new_application: "New application",
  domain: "Domain", action: "Action", network: "network", business: "business", register: "register",
  change: "change", deregister: "deregister", state: "State", ip: "IP address", app_pending_county: "county review",
  app_pending_province: "province approval", app_approved: "approved", app_rejected: "rejected", approve: "Approve",
  reject: "Reject", submit: "Submit", reject_needs_reason: "a rejection needs a reason", updated: "Updated",
  history: "Steps", interface: "Interface", applicant_note: "Note",
  pools_title: "IP pools", add_pool: "Add pool", cidr: "Network", first_ip: "First", last_ip: "Last",
  allocated: "Allocated", reserved: "Reserved", free: "Free", use: "Use", network_query: "Network information query",
  reported_ip: "Reported address", query: "Query",
  interfaces_title: "Insurance business interfaces", add_interface: "Register interface", request_address: "Address",
  inputs: "Inputs", outputs: "Outputs", description: "Description", active: "active", suspended: "suspended",
  granted: "Granted", reached: "Working", monitoring: "Access monitoring", working: "working", failing: "failing",
  last_reached: "Last success", reported: "Reported",
  statistics_title: "Service statistics", week: "week", month_p: "month", half_year: "half year", year: "year",
  by_day: "by day", by_month: "by month", services: "Services", people: "People served",
  identity_checks: "Identity checks by method", face: "face", idcard: "ID card", evoucher: "e-voucher",
  other: "other", share: "Share", top_institutions: "Top 10 institutions by services", coverage: "Deployment coverage",
  covered: "Covered", coverage_rate: "Coverage", by_type: "By institution type", ranking: "Counties ranked",
  new_deployments: "New deployments per month", province_map: "Terminals across the province",
  map_note: "darker: more terminals; a schematic map, not surveyed boundaries", not_on_map: "Regions not on the map", times: "Count", n_items: "{n} in all", coverage_trend: "Coverage (12 months)",
  services_by_level: "Services by institution level", by_level_k: "By institution level",
});

const canEdit = () => ctx && ctx.user && ["engineer", "admin"].includes(ctx.user.role);
const isAdmin = () => ctx && ctx.user && ctx.user.role === "admin";
const sel = (name, options, value, label) => h("select", {name}, options.map(o => h("option", {value: o, selected: o === (value || "")},
  o ? (label ? label(o) : word(o)) : t("all"))));
const stateName = s => t("app_" + s);
const inp = (name, ph, attrs) => h("input", Object.assign({name, placeholder: ph || "", autocomplete: "off"}, attrs || {}));
const formData = f => Object.fromEntries([...new FormData(f).entries()].map(([k, v]) => [k, String(v).trim()]));
const errorLine = id => h("p", {class: "error", id});
const hashWith = (view, q) => `#/${view}?${new URLSearchParams(Object.entries(q).filter(([, v]) => v))}`;

async function post(path, body, errId, method) {
  try {
    return await api(path, null, {method: method || "POST", body});
  } catch (err) {
    if (err instanceof AuthError) throw err;
    document.getElementById(errId).textContent = err.message;
    return null;
  }
}

// --- applications ---------------------------------------------------------------------------------------
async function viewApplications(r) {
  const q = {state: r.q.get("state") || "", domain: r.q.get("domain") || ""};
  const page = await api("/api/v1/access/applications", {...q, limit: 200});
  const rows = page.items.map(a => {
    const pending = a.state.startsWith("pending_");
    const note = inp("note", t("note"), {class: "note"});
    const decide = decision => async ev => {
      ev.preventDefault();
      if (decision === "reject" && !note.value.trim()) { document.getElementById("app-error").textContent = t("reject_needs_reason"); return; }
      if (await post(`/api/v1/access/applications/${a.id}/decision`, {decision, note: note.value.trim()}, "app-error")) render();
    };
    const actions = pending && canEdit() ? h("form", {class: "inline decide", "data-id": a.id}, note,
      h("button", {type: "button", class: "approve", onclick: decide("approve")}, t("approve")),
      h("button", {type: "button", class: "reject", onclick: decide("reject")}, t("reject"))) : (a.reject_reason || "");
    return h("tr", {"data-row": a.id, "data-state": a.state}, tdn(a.id), td(t(a.domain)), td(t(a.action)), td(a.institution),
      td(a.sn ? unitLink(a.sn) : "—"), td(a.domain === "network" ? word(a.link_type) : a.interface), td(h("span", {class: "pill " + (a.state === "approved" ? "online" : a.state === "rejected" ? "offline" : "")}, stateName(a.state))),
      td(a.ip || "—", {"data-k": "ip"}), td(when(a.updated)), td(actions, {class: "wrap"}));
  });
  const filters = h("form", {class: "row", id: "app-filters", onsubmit: ev => { ev.preventDefault(); location.hash = hashWith("applications", formData(ev.target)); }},
    sel("state", ["", "pending_county", "pending_province", "approved", "rejected"], q.state, stateName),
    sel("domain", ["", "network", "business"], q.domain, t), h("button", {type: "submit"}, t("filter")));
  const kids = [h("h1", {}, t("applications_title")), card(`${t("filter")} · ${t("n_items", {n: page.total})}`, filters, errorLine("app-error"),
    table(["#", t("domain"), t("action"), t("institution"), t("sn"), `${t("link_type")} / ${t("interface")}`, t("state"), t("ip"), t("updated"), ""], rows, {id: "applications"}))];
  if (canEdit()) {
    const form = h("form", {id: "apply-form", class: "row", onsubmit: async ev => {
      ev.preventDefault();
      const d = formData(ev.target);
      if (await post("/api/v1/access/applications", d, "apply-error")) render();
    }}, sel("domain", ["network", "business"], "", t), sel("action", ["register", "change", "deregister"], "", t),
      inp("institution", t("institution")), inp("sn", t("sn")), sel("link_type", ["", "4g_vpdn", "wired"]),
      inp("carrier", t("carrier")), inp("interface", t("interface")), inp("note", t("applicant_note")),
      h("button", {type: "submit"}, t("submit")));
    kids.push(card(t("new_application"), form, errorLine("apply-error")));
  }
  return h("div", {}, ...kids);
}

// --- IP pools and the combined query ---------------------------------------------------------------------
async function viewPools(r) {
  const q = Object.fromEntries(["ip", "institution", "sn", "link_type", "carrier"].map(k => [k, r.q.get(k) || ""]));
  const [pools, net] = await Promise.all([api("/api/v1/access/pools", {limit: 1000}), api("/api/v1/access/network", {...q, limit: 200})]);
  const rows = pools.items.map(p => {
    const used = p.size ? (p.allocated + p.reserved) / p.size : 0;
    return h("tr", {"data-row": p.id}, td(p.region), td(word(p.link_type)), td(p.cidr), td(`${p.first_ip} – ${p.last_ip}`),
      tdn(p.size), tdn(p.allocated, {"data-k": "allocated"}), tdn(p.reserved), tdn(p.free, {"data-k": "free"}),
      td(h("progress", {max: 100, value: Math.round(used * 100)}), " ", pct(used)), td(p.note || ""));
  });
  const kids = [h("h1", {}, t("pools_title")), card(t("pools_title"), table([t("region"), t("link_type"), t("cidr"), `${t("first_ip")} – ${t("last_ip")}`,
    {label: t("size"), num: 1}, {label: t("allocated"), num: 1}, {label: t("reserved"), num: 1}, {label: t("free"), num: 1}, t("use"), t("note")], rows, {id: "pools"}))];
  if (isAdmin()) {
    kids.push(card(t("add_pool"), h("form", {id: "pool-form", class: "row", onsubmit: async ev => {
      ev.preventDefault();
      const d = formData(ev.target);
      for (const k of ["first", "last"]) if (!d[k]) delete d[k];
      if (await post("/api/v1/access/pools", d, "pool-error")) render();
    }}, inp("region", `${t("county")} / ${t("region")}`), sel("link_type", ["4g_vpdn", "wired"]), inp("cidr", "10.61.1.0/24"),
      inp("first", t("first_ip")), inp("last", t("last_ip")), inp("note", t("note")), h("button", {type: "submit"}, t("save"))), errorLine("pool-error")));
  }
  const netRows = net.items.map(n => h("tr", {"data-row": n.sn}, td(unitLink(n.sn)), td(instLink(n.institution, n.institution_name)),
    td(n.county || "—"), td(word(n.link_type)), td(n.ip || "—", {"data-k": "ip"}), td(n.reported_ip || "—", {class: n.reported_ip && n.ip && n.reported_ip !== n.ip ? "bad" : null}),
    td(carrierName(n.carrier))));
  const query = h("form", {id: "net-query", class: "row", onsubmit: ev => { ev.preventDefault(); location.hash = hashWith("pools", formData(ev.target)); }},
    inp("ip", t("ip"), {value: q.ip}), inp("institution", t("institution"), {value: q.institution}), inp("sn", t("sn"), {value: q.sn}),
    sel("link_type", ["", "4g_vpdn", "wired"], q.link_type), inp("carrier", t("carrier"), {value: q.carrier}), h("button", {type: "submit"}, t("query")));
  const netCard = card(`${t("network_query")} · ${t("n_items", {n: net.total})}`, query, table([t("sn"), t("institution"), t("county"), t("link_type"), t("ip"), t("reported_ip"), t("carrier")], netRows, {id: "network"}));
  kids.push(netCard);
  return h("div", {}, ...kids);
}

// --- business interfaces and access monitoring ---------------------------------------------------------------
async function viewInterfaces(r) {
  const state = r.q.get("state") || "";
  const [reg, mon] = await Promise.all([api("/api/v1/access/interfaces", {limit: 1000}), api("/api/v1/access/monitoring", {state, limit: 500})]);
  const rows = reg.items.map(i => h("tr", {"data-row": i.code}, td(i.code), td(i.name), td(i.address, {class: "wrap"}), td(i.inputs, {class: "wrap"}),
    td(i.outputs, {class: "wrap"}), td(i.description, {class: "wrap"}), td(t(i.state)), tdn(i.granted), tdn(i.reached, {"data-k": "reached"})));
  const kids = [h("h1", {}, t("interfaces_title")), card(t("interfaces_title"), table([t("code"), t("name"), t("request_address"), t("inputs"), t("outputs"),
    t("description"), t("state"), {label: t("granted"), num: 1}, {label: t("reached"), num: 1}], rows, {id: "interfaces"}))];
  if (isAdmin()) {
    kids.push(card(t("add_interface"), h("form", {id: "iface-form", class: "row", onsubmit: async ev => {
      ev.preventDefault();
      const d = formData(ev.target);
      const code = d.code; delete d.code;
      if (await post(`/api/v1/access/interfaces/${encodeURIComponent(code)}`, d, "iface-error", "PUT")) render();
    }}, inp("code", t("code")), inp("name", t("name")), inp("address", t("request_address")), inp("inputs", t("inputs")),
      inp("outputs", t("outputs")), inp("description", t("description")), sel("state", ["active", "suspended"], "", t),
      h("button", {type: "submit"}, t("save"))), errorLine("iface-error")));
  }
  const monRows = mon.items.map(m => h("tr", {"data-row": `${m.sn}/${m.interface}`, "data-reached": String(m.reached)}, td(unitLink(m.sn)), td(m.institution || "—"),
    td(m.interface), td(m.granted ? t("yes") : t("no")),
    td(h("span", {class: "pill " + (m.reached ? "online" : m.reached === false ? "offline" : "")}, m.reached === null ? t("unknown") : t(m.reached ? "working" : "failing"))),
    td(m.detail || ""), td(when(m.reached_ts)), td(when(m.reported_ts))));
  const filter = h("form", {class: "row", id: "mon-filter", onsubmit: ev => { ev.preventDefault(); location.hash = hashWith("interfaces", formData(ev.target)); }},
    sel("state", ["", "working", "failing", "unknown"], state, t), h("button", {type: "submit"}, t("filter")));
  kids.push(card(`${t("monitoring")} · ${t("n_items", {n: mon.total})}`, filter, table([t("sn"), t("institution"), t("interface"), t("granted"), t("state"),
    t("reason"), t("last_reached"), t("reported")], monRows, {id: "monitoring"})));
  return h("div", {}, ...kids);
}

// --- statistics, coverage, map -------------------------------------------------------------------------------
async function viewStatistics(r) {
  const period = r.q.get("period") || "month", by = r.q.get("by") || (period === "half_year" || period === "year" ? "month" : "day");
  const [s, cov, fig, geo] = await Promise.all([api("/api/v1/statistics/services", {period, by}), api("/api/v1/statistics/coverage"),
    api("/api/v1/statistics/map"), fetch("/dashboard/static/province-map.json").then(x => x.ok ? x.json() : null).catch(() => null)]);
  const pick = h("form", {class: "row", id: "stat-period", onsubmit: ev => { ev.preventDefault(); location.hash = hashWith("statistics", formData(ev.target)); }},
    h("select", {name: "period"}, ["week", "month", "half_year", "year"].map(p => h("option", {value: p, selected: p === period}, t(p === "month" ? "month_p" : p)))),
    h("select", {name: "by"}, ["day", "month"].map(b => h("option", {value: b, selected: b === by}, t("by_" + b)))), h("button", {type: "submit"}, t("query")));
  const series = Charts.bars(s.series.map(p => ({label: p.date, value: p.services})), {label: t("services"), width: 560, labelWidth: 90});
  const methods = table([t("identity_checks"), {label: t("times"), num: 1}, {label: t("share"), num: 1}],
    s.identity_checks.map(m => h("tr", {"data-row": m.method}, td(t(m.method)), tdn(m.count), tdn(pct(m.share), {"data-k": "share"}))), {id: "methods"});
  const top = table(["#", t("institution"), t("county"), {label: t("services"), num: 1}],
    s.top_institutions.map((i, n) => h("tr", {"data-row": i.institution}, tdn(n + 1), td(instLink(i.institution, i.name)), td(i.county || "—"), tdn(i.services))), {id: "top10"});
  const group = (id, rows, name) => table([t("name"), {label: t("institution"), num: 1}, {label: t("covered"), num: 1}, {label: t("coverage_rate"), num: 1}],
    rows.map(g => h("tr", {"data-row": g.key}, td((name || word)(g.key)), tdn(g.institutions), tdn(g.covered), tdn(pct(g.rate)))), {id});
  // by the institutions' level (issue 18): services over the period's whole months, and coverage
  const levels = table([t("level"), {label: t("services"), num: 1}, {label: t("share"), num: 1}],
    (s.by_level || []).map(l => h("tr", {"data-row": l.level}, td(levelWord(l.level)), tdn(l.services, {"data-k": "level.services"}),
      tdn(pct(l.share), {"data-k": "level.share"}))), {id: "services-level"});
  const wide = c => { c.classList.add("wide"); return c; };
  return h("div", {}, h("h1", {}, t("statistics_title")),
    h("div", {class: "kpis"}, kpi(t("services"), String(s.totals.services), `${s.first_day} – ${s.last_day}`, "stat.services", s.totals.services),
      kpi(t("people"), String(s.totals.people), `${s.first_day} – ${s.last_day}`, "stat.people", s.totals.people)),
    h("div", {class: "grid"},
      wide(card(t("services"), pick, h("div", {id: "stat-series"}, series))), card(t("identity_checks"), methods), wide(card(t("top_institutions"), top)),
      wide(card(t("province_map"), provinceMap(geo, fig), h("p", {class: "muted"}, t("map_note")))),
      card(t("services_by_level"), levels),
      card(`${t("coverage")} · ${t("by_type")}`, group("cov-type", cov.by_type)),
      card(`${t("coverage")} · ${t("by_level_k")}`, group("cov-level", cov.by_level || [], levelWord)),
      card(`${t("coverage")} · ${t("ranking")}`, group("cov-rank", cov.ranking)),
      card(t("coverage_trend"), Charts.line([{color: "#1565c0", points: cov.over_time.map((o, i) => [i, o.rate === null ? null : o.rate * 100])}],
        {label: t("coverage_trend"), width: 420, height: 180, yMin: 0, yMax: 100, ticks: 3, fmtY: v => v.toFixed(0) + "%",
         fmtX: i => (cov.over_time[Math.round(i)] || {}).month || ""})),
      card(t("new_deployments"), Charts.bars(cov.new_deployments.map(m => ({label: m.month, value: m.units})), {label: t("new_deployments"), width: 420, labelWidth: 70}))));
}

// The province map: the GeoJSON shipped with the dashboard (one polygon per city or county, named as the
// institutions name their region or county), shaded by deployed terminals. Regions the map has no shape for are
// listed beside it, so no terminal is left out.
function provinceMap(geo, fig) {
  const NS = "http://www.w3.org/2000/svg";
  const byName = {};
  for (const a of [...fig.cities, ...fig.counties]) if (a.name) byName[a.name] = a;
  const box = h("div", {id: "province-map"});
  if (!geo || !geo.features) { box.append(t("none")); return box; }
  const rings = f => f.geometry.type === "Polygon" ? f.geometry.coordinates : f.geometry.coordinates.flat();
  const pts = geo.features.flatMap(f => rings(f).flat());
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const W = 420, H = Math.round(W * (y1 - y0) / Math.max(x1 - x0, 1e-9)) || 300;
  const X = x => (x - x0) / (x1 - x0) * (W - 4) + 2, Y = y => (1 - (y - y0) / (y1 - y0)) * (H - 4) + 2;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("width", W); svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", t("province_map"));
  const max = Math.max(1, ...geo.features.map(f => (byName[f.properties.name] || {}).units || 0));
  const shown = new Set();
  for (const f of geo.features) {
    const name = f.properties.name, a = byName[name] || {units: 0, online: 0, institutions: 0};
    shown.add(name);
    const shade = a.units ? 0.15 + 0.85 * a.units / max : 0;
    const p = document.createElementNS(NS, "path");
    p.setAttribute("d", rings(f).map(r => "M" + r.map(c => `${X(c[0]).toFixed(1)},${Y(c[1]).toFixed(1)}`).join("L") + "Z").join(""));
    p.setAttribute("fill", a.units ? `rgba(21,101,192,${shade.toFixed(3)})` : "#eceff1");
    p.setAttribute("stroke", "#fff");
    p.setAttribute("data-name", name); p.setAttribute("data-units", a.units); p.setAttribute("data-online", a.online);
    const title = document.createElementNS(NS, "title");
    title.textContent = `${name}：${t("units")} ${a.units}，${t("online")} ${a.online}，${t("institution")} ${a.institutions}`;
    p.append(title); svg.append(p);
    const ring = rings(f)[0].slice(0, -1), cx = ring.reduce((s, c) => s + X(c[0]), 0) / ring.length, cy = ring.reduce((s, c) => s + Y(c[1]), 0) / ring.length;
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", cx.toFixed(1)); label.setAttribute("y", cy.toFixed(1)); label.setAttribute("text-anchor", "middle");
    label.setAttribute("font-size", "12"); label.setAttribute("font-weight", "600");
    label.setAttribute("fill", shade > 0.55 ? "#fff" : "#263238");
    label.textContent = `${name} ${a.units}`;
    svg.append(label);
  }
  box.append(svg);
  const missing = fig.cities.filter(c => c.name && !shown.has(c.name) && !fig.counties.some(k => k.region === c.name && shown.has(k.name)));
  if (missing.length) box.append(h("p", {class: "muted", id: "not-on-map"}, `${t("not_on_map")}：`,
    missing.map(c => `${c.name} ${c.units}`).join("，")));
  return box;
}

window.ACCESS_VIEWS = {applications: viewApplications, pools: viewPools, interfaces: viewInterfaces, statistics: viewStatistics};
