/* posfleet dashboard, issue 18: the users (administrators manage, auditors read) and the audit trail (auditors and
   administrators). Loaded after app.js and access.js
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

// --- users -------------------------------------------------------------------------------------------------
Object.assign(I18N.zh, {
  nav_users: "用户", users_title: "用户管理", new_user: "新增用户", user_name_k: "用户名", scope: "范围",
  two_factor: "两步验证", enrolled: "已启用", not_enrolled: "未启用", state_k: "状态", sessions: "会话",
  last_login: "最近登录", active_user: "正常", disabled_user: "已停用", locked_until_t: "锁定至 {t}",
  one_time_pending: "待修改一次性密码", edit: "修改", disable: "停用", enable: "启用", reset_password: "重置密码",
  reset_2fa: "重置两步验证", end_sessions: "结束会话", create: "创建", confirm_q: "确认{what}？",
  province_scope: "全省", city_scope: "地市：{n}", county_scope: "区县：{n}",
  scope_hint: "province（全省），或用逗号分隔的 city:地市名 / county:区县名，如 county:长安区",
  users_scoped_note: "您的范围是 {scope}：只列出并管理本范围内的用户，授予的范围也不能超出。",
  one_time_title: "一次性密码（仅显示这一次）", one_time_for: "用户 {user} 的一次性密码：",
  one_time_hint: "请当面或电话告知用户（不要用邮件）。有效期至 {t}；用户首次登录时必须改为自己的密码。",
  noted: "已记下", ended_n: "已结束 {n} 个会话", self_note: "（本人：请在右上角修改自己的密码）",
  new_password_title: "设置新密码", new_password_hint: "您使用的是管理员发放的一次性密码，请先设置自己的密码（至少 10 个字符）。",
  new_password: "新密码", new_password_again: "再次输入新密码", passwords_differ: "两次输入的密码不一致",
  password_changed: "密码已修改，请用新密码登录。", change_password: "修改密码",
});
Object.assign(I18N.en, {
  nav_users: "Users", users_title: "Users", new_user: "New user", user_name_k: "User", scope: "Scope",
  two_factor: "Two-factor", enrolled: "enrolled", not_enrolled: "not enrolled", state_k: "State", sessions: "Sessions",
  last_login: "Last sign-in", active_user: "active", disabled_user: "disabled", locked_until_t: "locked until {t}",
  one_time_pending: "one-time password to replace", edit: "Edit", disable: "Disable", enable: "Enable",
  reset_password: "Reset password", reset_2fa: "Reset two-factor", end_sessions: "End sessions", create: "Create",
  confirm_q: "Confirm: {what}?", province_scope: "province", city_scope: "city: {n}", county_scope: "county: {n}",
  scope_hint: "province, or comma-separated city:NAME / county:NAME, e.g. county:长安区",
  users_scoped_note: "Your scope is {scope}: you see and manage the users within it and grant nothing wider.",
  one_time_title: "One-time password (shown this once)", one_time_for: "One-time password of {user}: ",
  one_time_hint: "Tell the user in person or by phone (not by e-mail). Good until {t}; it must be replaced at the first sign-in.",
  noted: "Noted", ended_n: "{n} sessions ended", self_note: " (you: change your own password at the top right)",
  new_password_title: "Set a new password", new_password_hint: "You signed in with a one-time password from an administrator: set your own (10 characters or more) first.",
  new_password: "New password", new_password_again: "New password again", passwords_differ: "The two passwords differ",
  password_changed: "Password changed: sign in with the new one.", change_password: "Change password",
});

const ROLE_NAMES = ["admin", "engineer", "viewer", "auditor"];
// a scope as stored ("province", "city:西安市,county:长安区") in words
function scopeWord(text) {
  if (!text || text === "province") return t("province_scope");
  return text.split(",").map(p => {
    const [kind, name] = p.split(":");
    return t(kind === "city" ? "city_scope" : "county_scope", {n: name});
  }).join(lang === "zh" ? "、" : ", ");
}
let oneTime = null;  // the one-time password just made: shown until the administrator says it is noted

function oneTimeBox() {
  if (!oneTime) return null;
  return h("section", {class: "card", id: "one-time"}, h("h2", {}, t("one_time_title")),
    h("p", {}, t("one_time_for", {user: oneTime.user}), h("code", {id: "one-time-password", "data-user": oneTime.user}, oneTime.password)),
    h("p", {class: "muted"}, t("one_time_hint", {t: when(oneTime.expires)})),
    h("button", {type: "button", id: "one-time-noted", onclick: () => { oneTime = null; render(); }}, t("noted")));
}

// a button that asks once more before it acts (a second click within the row)
function armed(label, act, attrs) {
  const b = h("button", Object.assign({type: "button"}, attrs || {}), label);
  b.addEventListener("click", async () => {
    if (b.dataset.armed !== "1") { b.dataset.armed = "1"; b.textContent = t("confirm_q", {what: label}); return; }
    b.disabled = true;
    await act();
  });
  return b;
}

async function viewUsers(r) {
  const role = r.q.get("role") || "";
  const page = await api("/api/v1/users", {role, limit: 1000});
  const me = ctx.user.name, admin = isAdmin();
  const act = (path, method, after) => async () => {
    const got = await post(path, undefined, "users-error", method);
    if (got && after) after(got);
    if (got) render();
  };
  const stateOf = u => u.disabled ? t("disabled_user") : u.locked_until ? t("locked_until_t", {t: when(u.locked_until)})
    : u.one_time_password ? t("one_time_pending") : t("active_user");
  const rows = page.items.map(u => {
    const path = `/api/v1/users/${encodeURIComponent(u.name)}`;
    const actions = [];
    if (admin && u.name !== me) {
      actions.push(h("button", {type: "button", "data-act": "edit", onclick: ev => {
        const tr = ev.target.closest("tr");
        const form = h("form", {class: "inline edit", "data-user": u.name, onsubmit: async e => {
          e.preventDefault();
          const d = formData(e.target);
          const body = {};
          if (d.role !== u.role) body.role = d.role;
          if (d.scope && d.scope !== u.scope) body.scope = d.scope;
          if (!Object.keys(body).length) return render();
          if (await post(path, body, "users-error", "PATCH")) render();
        }}, sel("role", ROLE_NAMES, u.role, roleWord), inp("scope", t("scope_hint"), {value: u.scope, size: 28}),
          h("button", {type: "submit", "data-act": "save"}, t("save")), h("button", {type: "button", onclick: () => render()}, t("cancel")));
        tr.querySelector("td.actions").replaceChildren(form);
      }}, t("edit")));
      actions.push(u.disabled ? h("button", {type: "button", "data-act": "enable", onclick: act(`${path}/enable`)}, t("enable"))
        : armed(t("disable"), act(`${path}/disable`), {"data-act": "disable"}));
      actions.push(armed(t("reset_password"), act(`${path}/password`, "POST", got => { oneTime = {user: u.name, password: got.password, expires: got.expires}; }),
        {"data-act": "password"}));
      if (u.two_factor) actions.push(armed(t("reset_2fa"), act(`${path}/reset-2fa`), {"data-act": "reset-2fa"}));
    }
    if (admin && u.sessions) actions.push(armed(t("end_sessions"), act(`${path}/sessions`, "DELETE"), {"data-act": "sessions"}));
    return h("tr", {"data-row": u.name, "data-disabled": String(u.disabled)}, td(u.name + (u.name === me ? t("self_note") : "")),
      td(roleWord(u.role), {"data-k": "user.role"}), td(scopeWord(u.scope), {class: "wrap", "data-k": "user.scope", title: u.scope}),
      td(u.two_factor ? t("enrolled") : t("not_enrolled"), {"data-k": "user.two_factor"}), td(stateOf(u), {"data-k": "user.state"}),
      tdn(u.sessions, {"data-k": "user.sessions"}), td(when(u.last_login)), td(actions, {class: "actions"}));
  });
  const filter = h("form", {class: "row", id: "users-filter", onsubmit: ev => { ev.preventDefault(); location.hash = hashWith("users", formData(ev.target)); }},
    sel("role", ["", ...ROLE_NAMES], role, roleWord), h("button", {type: "submit"}, t("filter")));
  const scopedNote = ctx.user.scope && !ctx.user.scope.province ?
    h("p", {class: "muted", id: "users-scope-note"}, t("users_scoped_note", {scope: scopeWord(scopeText(ctx.user.scope))})) : null;
  const kids = [h("h1", {}, t("users_title")), oneTimeBox(),
    card(`${t("users_title")} · ${t("n_items", {n: page.total})}`, scopedNote, filter, errorLine("users-error"),
      table([t("user_name_k"), t("role"), t("scope"), t("two_factor"), t("state_k"), {label: t("sessions"), num: 1}, t("last_login"), ""], rows, {id: "users"}))];
  if (admin) {
    const form = h("form", {id: "new-user", class: "row", onsubmit: async ev => {
      ev.preventDefault();
      const d = formData(ev.target);
      const got = await post("/api/v1/users", {name: d.name, role: d.role, scope: d.scope || "province"}, "new-user-error");
      if (got) { oneTime = {user: got.user.name, password: got.password, expires: got.expires}; render(); }
    }}, inp("name", t("user_name_k")), sel("role", ROLE_NAMES, "viewer", roleWord),
      inp("scope", t("scope_hint"), {size: 40, value: ctx.user.scope && !ctx.user.scope.province ? scopeText(ctx.user.scope) : "province"}),
      h("button", {type: "submit", id: "new-user-create"}, t("create")));
    kids.push(card(t("new_user"), form, h("p", {class: "muted"}, `${t("scope")}: ${t("scope_hint")}`), errorLine("new-user-error")));
  }
  return h("div", {}, ...kids);
}
// the context's scope ({province, cities, counties}) in the stored form
const scopeText = s => s.province ? "province" : [...s.cities.map(c => "city:" + c), ...s.counties.map(c => "county:" + c)].join(",");

window.ACCESS_VIEWS = Object.assign(window.ACCESS_VIEWS || {}, {audit: viewAudit, users: viewUsers});
