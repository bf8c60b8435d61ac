/* posfleet dashboard, issue 18: the audit trail (auditors and administrators). Loaded after app.js and access.js
   and written with their helpers (h, card, table, api, t, sel, inp, formData, errorLine, hashWith, post...); its
   views join app.js's router through window.ACCESS_VIEWS. What a scoped user sees is what the API gives them
   (docs/api.md: a county auditor reads the rows about its units). */
"use strict";

Object.assign(I18N.zh, {
  nav_audit: "审计日志", audit_title: "审计日志", actor: "操作人", role: "角色", client: "来源地址", action_k: "操作",
  target: "对象", audit_time: "时间", result: "结果", detail: "详情", since: "开始", until: "结束", all_actions: "全部操作",
  audit_scope_note: "按区县或地市授权的账号只看到与本辖区终端有关的记录（对终端的命令及其状态、批量任务）。",
  "role.admin": "管理员", "role.engineer": "工程师", "role.viewer": "查看员", "role.auditor": "审计员",
});
Object.assign(I18N.en, {
  nav_audit: "Audit", audit_title: "Audit trail", actor: "Actor", role: "Role", client: "From", action_k: "Action",
  target: "Target", audit_time: "Time", result: "Result", detail: "Detail", since: "Since", until: "Until", all_actions: "all actions",
  audit_scope_note: "An account with a county or city scope sees the rows about its own units (commands to them, their states, jobs).",
  "role.admin": "admin", "role.engineer": "engineer", "role.viewer": "viewer", "role.auditor": "auditor",
});

// audit actions as the server writes them -> words; a prefix ("user.*") stands for its family in the filter
const AUDIT_WORDS = {
  zh: {"session.signin": "登录", "session.signout": "退出登录", "session.*": "登录与退出", "user.*": "用户管理",
    "user.add": "新增用户", "user.change": "修改角色或范围", "user.disable": "停用用户", "user.enable": "启用用户",
    "user.reset_2fa": "重置两步验证", "user.password": "设置密码", "user.reset_password": "重置密码（一次性密码）",
    "user.password_change": "修改本人密码", "user.end_sessions": "结束会话", "user.enrol_2fa": "启用两步验证",
    "user.recovery_code_used": "使用恢复码", "token.*": "访问令牌", "token.create": "创建令牌", "token.revoke": "吊销令牌",
    "command.*": "远程命令", "job.*": "批量任务", "alert.*": "告警处理", "alert.ack": "确认告警", "alert.close": "关闭告警",
    "access.*": "接入管理", "api.*": "接口写操作", "api.post": "接口写操作（POST）", "api.put": "接口写操作（PUT）",
    "api.patch": "接口写操作（PATCH）", "api.delete": "接口写操作（DELETE）", "auth.failed": "无效令牌请求",
    "auth.lockout": "地址被锁定", "command.create": "创建命令", "command.state": "命令状态变化", "job.create": "创建批量任务",
    "job.abort": "中止批量任务"},
  en: {},
};
const auditWord = a => (AUDIT_WORDS[lang] || {})[a] || a;
const AUDIT_FILTERS = ["", "session.*", "user.*", "token.*", "command.*", "job.*", "alert.*", "access.*", "api.*"];
const canAudit = () => ctx && ctx.user && ["auditor", "admin"].includes(ctx.user.role);
const roleWord = r => t("role." + r);

// one audit row's detail, compact: what changed (before -> after), a result, a note; never more than the row has
function auditDetail(d) {
  if (!d || typeof d !== "object") return "";
  const parts = [];
  if (d.before && d.after) {
    for (const k of Object.keys(d.after)) {
      if (JSON.stringify(d.before[k]) !== JSON.stringify(d.after[k])) parts.push(`${k}: ${fmtValue(d.before[k])} → ${fmtValue(d.after[k])}`);
    }
  }
  for (const [k, v] of Object.entries(d)) if (k !== "before" && k !== "after") parts.push(`${k}: ${fmtValue(v)}`);
  return parts.join("; ");
}
const fmtValue = v => v === null || v === undefined || v === "" ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v);

async function viewAudit(r) {
  const q = {actor: r.q.get("actor") || "", action: r.q.get("action") || "", target: r.q.get("target") || "",
    since: r.q.get("since") || "", until: r.q.get("until") || ""};
  const offset = Number(r.q.get("offset") || 0), limit = 100;
  const page = await api("/api/v1/audit", {...q, limit, offset});
  const rows = page.items.map(a => h("tr", {"data-row": a.id, "data-action": a.action}, td(when(a.ts)), td(a.actor, {"data-k": "audit.actor"}),
    td(a.role ? roleWord(a.role) : "—"), td(a.client || "—"), td(auditWord(a.action), {"data-k": "audit.action", title: a.action}),
    td(a.target || "—", {class: "wrap", "data-k": "audit.target"}), tdn(a.status === null ? "—" : String(a.status)),
    td(auditDetail(a.detail), {class: "wrap", "data-k": "audit.detail"})));
  const go = off => { location.hash = hashWith("audit", {...q, offset: off ? String(off) : ""}); };
  const filters = h("form", {class: "row", id: "audit-filters", onsubmit: ev => { ev.preventDefault(); location.hash = hashWith("audit", formData(ev.target)); }},
    inp("actor", t("actor"), {value: q.actor}),
    h("select", {name: "action"}, AUDIT_FILTERS.map(a => h("option", {value: a, selected: a === q.action}, a ? auditWord(a) : t("all_actions")))),
    inp("target", t("target"), {value: q.target}),
    h("label", {}, `${t("since")} `, h("input", {type: "date", name: "since", value: q.since})),
    h("label", {}, `${t("until")} `, h("input", {type: "date", name: "until", value: q.until})),
    h("button", {type: "submit"}, t("filter")));
  const pager = h("div", {class: "row"}, h("span", {class: "muted", "data-k": "audit.total"}, t("n_items", {n: page.total})),
    offset > 0 ? h("button", {type: "button", onclick: () => go(Math.max(0, offset - limit))}, t("prev")) : null,
    offset + limit < page.total ? h("button", {type: "button", id: "audit-next", onclick: () => go(offset + limit)}, t("next")) : null);
  const note = ctx.user.scope && !ctx.user.scope.province ? h("p", {class: "muted", id: "audit-scope-note"}, t("audit_scope_note")) : null;
  return h("div", {}, h("h1", {}, t("audit_title")), card(t("filter"), filters, note, pager,
    table([t("audit_time"), t("actor"), t("role"), t("client"), t("action_k"), t("target"), {label: t("status"), num: 1}, t("detail")], rows, {id: "audit"})));
}

window.ACCESS_VIEWS = Object.assign(window.ACCESS_VIEWS || {}, {audit: viewAudit});
