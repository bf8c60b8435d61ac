"""What an administrator meets on the dashboard (issue 14), in a real headless Chromium against a running server:
open alerts only where it says so, tables that fit their cards, labels in Chinese, legible charts, rankings that
differ, filters, auto-refresh, acknowledging and closing alerts with a note, downloads."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path

import openpyxl

from tests.dashboard.cdp import Browser
from tests.dashboard.conftest import POWER_CUT, Fleet, goto, sign_in, wait_trend

# every table column whose text is long: it must be inside its card, not cut off or scrolled out of sight
FITS = """(sel => {
  const t = document.querySelector(sel);
  if (!t) return {missing: sel};
  const card = t.closest('.card').getBoundingClientRect();
  const scroll = t.closest('.scroll');
  const cells = [...t.querySelectorAll('tbody td.wrap')].map(c => c.getBoundingClientRect());
  return {rows: t.querySelectorAll('tbody tr[data-row], tbody tr:not(:only-child)').length,
          overflow: scroll.scrollWidth - scroll.clientWidth,
          cells: cells.map(r => ({left: r.left - card.left, right: card.right - r.right, width: r.width}))};
})"""


def evaluate_alerts(fleet: Fleet) -> list[dict]:
    r = fleet.server.request("POST", "/api/v1/alerts/evaluate")
    assert r.status_code == 200, r.text[:300]
    return fleet.api("/api/v1/alerts", open="true")["items"]


def assert_fits(b: Browser, selector: str, min_rows: int = 1) -> None:
    m = b.eval(f"{FITS}({json.dumps(selector)})")
    assert "missing" not in m, m
    assert m["cells"] and len(m["cells"]) >= min_rows, (selector, m)
    assert m["overflow"] <= 1, f"{selector}: the table is {m['overflow']} px wider than what shows of it"
    for c in m["cells"]:
        assert c["left"] >= 0 and c["right"] >= 0, f"{selector}: the message column is cut off by its card: {c}"
        assert c["width"] >= 120, f"{selector}: the message column is squeezed to {c['width']} px"


def test_alert_tables_fit_their_cards_and_the_unit_page_asks_open_alerts_only(fleet: Fleet, browser: Browser) -> None:
    b = browser
    open_ = evaluate_alerts(fleet)
    flagged = [a for a in open_ if a["kind"] == "flagged"]
    assert [a["sn"] for a in flagged] == [POWER_CUT[0]], open_
    sign_in(b, fleet)
    assert_fits(b, "#alerts")
    msg = b.eval("document.querySelector('#alerts td[data-k=\"alert.message\"]').textContent")
    assert msg.startswith(f"{POWER_CUT[0]} 本月低于 95%：完好率 ") and "below" not in msg, msg
    assert b.texts("#alerts tbody td:nth-child(2)") == ["低于阈值"]

    # closed by hand: the unit's 未处理告警 card no longer lists it; the recent-alerts card shows when it closed
    r = fleet.server.request("POST", f"/api/v1/alerts/{flagged[0]['id']}/close", role="engineer",
                             json={"note": "停电两天，已恢复供电"})
    assert r.status_code == 200, r.text
    closed = next(a for a in fleet.api("/api/v1/alerts", open="false", sn=POWER_CUT[0])["items"] if a["id"] == flagged[0]["id"])
    goto(b, fleet, f"#/unit/{POWER_CUT[0]}", "unit")
    assert b.eval("document.querySelectorAll('#unit-alerts tbody tr[data-row]').length") == 0
    assert b.texts("#unit-alerts-closed tbody tr[data-row] [data-k=\"alert.closed\"]") == \
        [b.eval(f"when({json.dumps(closed['closed_ts'])})")]
    assert "停电两天，已恢复供电" in b.text("#unit-alerts-closed tbody")
    assert_fits(b, "#unit-alerts-closed")
    assert_fits(b, "#status-history")
    evaluate_alerts(fleet)  # still below: the rule opens it again
    goto(b, fleet, f"#/unit/{POWER_CUT[0]}?date=2025-03-20", "unit")
    assert b.eval("document.querySelectorAll('#unit-alerts tbody tr[data-row]').length") == 1
    assert_fits(b, "#unit-alerts")


def test_engineer_acknowledges_and_closes_an_alert_with_a_note_audited(fleet: Fleet, browser: Browser) -> None:
    b = browser
    evaluate_alerts(fleet)
    sign_in(b, fleet, "viewer")
    assert b.eval("document.querySelectorAll('#alerts button[data-act]').length") == 0, "a viewer changes nothing"
    sign_in(b, fleet, "engineer")
    alert = next(a for a in fleet.api("/api/v1/alerts", open="true")["items"] if a["kind"] == "flagged")
    row = f'#alerts tr[data-row="{alert["id"]}"]'
    b.click(f"{row} button[data-act=ack]")
    b.eval(f"document.querySelector('{row} input.note').value = '已派工程师 张工'")
    b.eval("document.getElementById('main').dataset.state = 'x'")
    b.click(f"{row} button[data-act=save]")
    b.ready("fleet")
    after = next(a for a in fleet.api("/api/v1/alerts", open="true")["items"] if a["id"] == alert["id"])
    assert after["acked_by"] == "test-engineer" and after["note"] == "已派工程师 张工"
    assert "已确认：test-engineer · 已派工程师 张工" in b.text(f"{row} [data-k=\"alert.acked\"]")
    audit = fleet.api("/api/v1/audit", action="alert.ack", target=f"alert:{alert['id']}")["items"]
    assert [(a["actor"], a["detail"]["note"]) for a in audit][:1] == [("test-engineer", "已派工程师 张工")]
    # closing asks for its own note, through the API as well
    b.click(f"{row} button[data-act=close]")
    b.eval(f"document.querySelector('{row} input.note').value = '现场确认供电恢复'")
    b.eval("document.getElementById('main').dataset.state = 'x'")
    b.click(f"{row} button[data-act=save]")
    b.ready("fleet")
    assert b.eval(f"document.querySelector('{row}')") is None
    audit = fleet.api("/api/v1/audit", action="alert.close", target=f"alert:{alert['id']}")["items"]
    assert audit[0]["detail"]["note"] == "现场确认供电恢复" and audit[0]["actor"] == "test-engineer"
    # what the API refuses: a viewer, an unknown alert, a closed one, a field it does not know
    assert fleet.server.request("POST", f"/api/v1/alerts/{alert['id']}/close", role="viewer", json={"note": ""}).status_code == 403
    assert fleet.server.request("POST", "/api/v1/alerts/999999/close", json={"note": "x"}).status_code == 404
    assert fleet.server.request("POST", f"/api/v1/alerts/{alert['id']}/close", json={"note": "x"}).status_code == 409
    bad = fleet.server.request("POST", f"/api/v1/alerts/{alert['id']}/ack", json={"note": "x", "by": "someone"})
    assert bad.status_code == 422 and "by" in bad.text


def test_labels_versions_search_and_chart_text_are_for_a_chinese_reader(fleet: Fleet, browser: Browser) -> None:
    b = browser
    sign_in(b, fleet)
    heads = b.eval("[...document.querySelectorAll('.card')].filter(c => c.querySelector('h2') && c.querySelector('h2').textContent === '软件版本')"
                   ".map(c => [...c.querySelectorAll('thead th')].map(th => th.textContent))")
    assert heads == [["组件", "版本", "终端数"]]
    wait_trend(b)
    small = b.eval("""[...document.querySelectorAll('svg.chart')].flatMap(s => {
        const k = s.getBoundingClientRect().width / s.viewBox.baseVal.width;
        return [...s.querySelectorAll('text')].map(t => parseFloat(getComputedStyle(t).fontSize) * k);
      }).filter(px => px < 11)""")
    assert small == [], f"chart labels smaller than 11 px on the fleet page: {small[:5]}"
    carriers = b.eval("[...document.querySelectorAll('#carriers rect')].map(r => r.dataset.label)")
    assert carriers and all(re.fullmatch(r"中国(移动|联通|电信|广电)", c) for c in carriers), carriers
    goto(b, fleet, f"#/unit/{POWER_CUT[0]}?date=2025-03-11", "unit")
    small = b.eval("""[...document.querySelectorAll('svg.chart')].flatMap(s => {
        const k = s.getBoundingClientRect().width / s.viewBox.baseVal.width;
        return [...s.querySelectorAll('text')].map(t => parseFloat(getComputedStyle(t).fontSize) * k);
      }).filter(px => px < 11)""")
    assert small == [], f"chart labels smaller than 11 px on the unit page: {small[:5]}"
    assert sorted(b.texts('#checks [data-k="check.name"]')) == sorted(["打印机", "身份证读卡器", "4G 模块", "存储"])
    goto(b, fleet, "#/units", "units")
    assert b.text("#search-button") == "搜索"
    text = b.eval("document.body.innerText")
    assert not re.search("[\U0001F000-\U0001FFFF\u2600-\u27BF]", text), "no emoji (an empty box without an emoji font)"


def test_best_and_worst_institutions_differ_when_online_rates_tie(fleet: Fleet, browser: Browser) -> None:
    b = browser
    live = fleet.api("/api/v1/analytics/live")
    assert live["ranking"]["tied"] and {i["online_rate"] for i in live["institutions_best"]} == {1.0}, "all online"
    sign_in(b, fleet)
    best = b.eval("[...document.querySelectorAll('#best tbody tr')].map(r => r.dataset.row)")
    worst = b.eval("[...document.querySelectorAll('#worst tbody tr')].map(r => r.dataset.row)")
    assert len(best) == len(worst) == len(live["institutions_best"]) <= 10
    assert worst == best[::-1] and best != worst, "one ranking, read from either end"
    power_cut_inst = fleet.plan.by_sn[POWER_CUT[0]].institution
    assert worst[0] == power_cut_inst, "the second figure (this month's availability) decides"
    assert "各机构在线率相同（100.00%）" in b.text('[data-k="ranking.tied"]')


def test_units_list_filters(fleet: Fleet, browser: Browser) -> None:
    b = browser
    sign_in(b, fleet)
    goto(b, fleet, "#/units", "units")
    county = fleet.plan.units[0].county
    model = fleet.plan.units[1].model

    def choose(sel: str, value: str) -> list[str]:
        b.eval(f"document.getElementById('main').dataset.state = 'x'; {{ const s = document.getElementById({sel!r}); "
               f"s.value = {value!r}; s.dispatchEvent(new Event('change')); }}")
        b.ready("units")
        return b.eval("[...document.querySelectorAll('#units tbody tr[data-row]')].map(r => r.dataset.row)")

    assert choose("filter-county", county) == sorted(u.sn for u in fleet.plan.units if u.county == county)
    assert choose("filter-model", model) == sorted(u.sn for u in fleet.plan.units if u.county == county and u.model == model)
    goto(b, fleet, "#/units", "units")
    assert choose("filter-flagged", "true") == [POWER_CUT[0]]
    assert choose("filter-online", "false") == [] and b.text('[data-k="units.total"]') == "共 0 台"
    inst = fleet.plan.units[3].institution
    goto(b, fleet, f"#/units?institution={inst}", "units")
    assert b.eval("[...document.querySelectorAll('#units tbody tr[data-row]')].map(r => r.dataset.row)") == \
        sorted(u.sn for u in fleet.plan.units if u.institution == inst)


def test_auto_refresh_reloads_the_view(fleet: Fleet, browser: Browser) -> None:
    b = browser
    sign_in(b, fleet)
    b.eval("window.POSFLEET_REFRESH_S = 0.3")
    first = b.eval("document.getElementById('main').dataset.refreshed")
    b.click("#auto-refresh")
    try:
        b.wait(f"document.getElementById('main').dataset.refreshed !== {first!r}", timeout=5, what="a refresh")
        assert b.eval("localStorage.getItem('posfleet.refresh')") == "1"
    finally:
        b.click("#auto-refresh")
    assert b.eval("localStorage.getItem('posfleet.refresh')") == "0"
    time.sleep(0.5)
    still = b.eval("document.getElementById('main').dataset.refreshed")
    time.sleep(0.8)
    assert b.eval("document.getElementById('main').dataset.refreshed") == still, "off means off"


def _downloads(b: Browser, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    b.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(folder))


def _wait_file(folder: Path, name: str, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = folder / name
        if p.exists() and p.stat().st_size and not (folder / (name + ".crdownload")).exists():
            return p.read_bytes()
        time.sleep(0.1)
    raise AssertionError(f"{name} not downloaded; folder has {[p.name for p in folder.iterdir()]}")


def test_report_and_registry_downloads_are_the_apis_files(fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    b = browser
    _downloads(b, tmp_path)
    sign_in(b, fleet)
    b.click('#report button[data-report="csv"]')
    b.wait("document.getElementById('report-status').textContent.endsWith('.csv')", timeout=20, what="the report")
    name = b.text("#report-status")
    got = _wait_file(tmp_path, name)
    api = fleet.server.get("/api/v1/reports/ops", month=fleet.month["from"][:7], format="csv", lang="zh")
    assert api.status_code == 200
    differ = [(a, b_) for a, b_ in zip(got.decode("utf-8-sig").splitlines(), api.content.decode("utf-8-sig").splitlines(),
                                       strict=True) if a != b_]
    assert len(differ) <= 1 and all(a.startswith("生成时间") and b_.startswith("生成时间") for a, b_ in differ), differ
    # the XLSX the bureau's staff open, and the list of reports the server made on its own (none scheduled here)
    b.click('#report button[data-report="xlsx"]')
    b.wait("document.getElementById('report-status').textContent.endsWith('.xlsx')", timeout=20, what="the XLSX")
    book = openpyxl.load_workbook(io.BytesIO(_wait_file(tmp_path, b.text("#report-status"))))
    assert "全省（本范围）汇总" in book.sheetnames and "网络服务水平" in book.sheetnames
    assert "暂无" in b.text("#stored-reports")
    goto(b, fleet, "#/units", "units")
    b.click('#registry-tools button[data-export="csv"]')
    b.wait("document.getElementById('registry-status').textContent.endsWith('.csv')", timeout=20, what="the export")
    got = _wait_file(tmp_path, b.text("#registry-status"))
    rows = list(csv.reader(io.StringIO(got.decode("utf-8-sig"))))
    assert len(rows) == 1 + fleet.api("/api/v1/registry/units")["total"]


def test_registry_import_shows_a_preview_and_applies_only_when_confirmed(fleet: Fleet, browser: Browser) -> None:
    b = browser
    sign_in(b, fleet, "viewer")
    goto(b, fleet, "#/units", "units")
    assert b.eval("document.getElementById('import-file')") is None, "importing is for admins"
    sign_in(b, fleet, "admin")
    goto(b, fleet, "#/units", "units")
    u = fleet.plan.units[0]
    text = ("终端SN,型号,厂商,所属机构编码,状态\r\n"
            f"{u.sn},{u.model},新大陆,{u.institution},在用\r\n"   # line 2: the vendor changes
            f"HN47000001,A930,百富,{u.institution},备用\r\n"     # line 3: a new unit
            "HN47000002,A930,百富,X999,在用\r\n")                  # line 4: unknown institution
    b.eval("(() => { const dt = new DataTransfer(); dt.items.add(new File([" + json.dumps(text) + "], 'units.csv', "
           "{type: 'text/csv'})); document.getElementById('import-file').files = dt.files; })()")
    b.click("#import-preview-btn")
    assert b.eval("document.getElementById('import-file').files.length") == 1
    b.wait("!!document.querySelector('#import-changes')", timeout=10, what="the import preview")
    changes = b.eval("[...document.querySelectorAll('#import-changes tbody tr[data-row]')].map(r => [...r.cells].map(c => c.textContent))")
    # in Chinese, as the rest of the page (issue 14: every code the UI shows has a Chinese label): the action, the
    # field's name, a status code's value, the summary and the error table's columns; the codes stay in data-*
    assert [c[:2] for c in changes] == [[u.sn, "修改"], ["HN47000001", "新增"]]
    assert b.eval("[...document.querySelectorAll('#import-changes tbody tr[data-row]')].map(r => r.dataset.action)") == \
        ["change", "add"]
    assert "厂商: " in changes[0][2] and "新大陆" in changes[0][2] and "vendor" not in changes[0][2]
    assert "状态: — → 备用" in changes[1][2] and "spare" not in changes[1][2], changes[1]
    summary = b.text('[data-k="import.summary"]')
    assert "新增 1" in summary and "修改 1" in summary and not re.search("[a-z]", summary), summary
    assert b.texts("#import-errors thead th") == ["行号", "字段", "说明"]
    assert b.texts("#import-errors tbody td:nth-child(2)") == ["机构"]
    before = fleet.api(f"/api/v1/registry/units/{u.sn}")
    assert before["insurance_sn"] and "医保 SN" not in changes[0][2], \
        "a column the file lacks is left as it is, and the preview does not say it would be blanked"
    assert b.eval("[...document.querySelectorAll('#import-errors tbody tr[data-row]')].map(r => r.dataset.row)") == ["4"]
    assert b.eval("[...document.querySelectorAll('#import-errors tbody tr[data-row]')].map(r => r.dataset.field)") == \
        ["institution"]
    reg = fleet.api(f"/api/v1/registry/units/{u.sn}")
    assert reg["vendor"] != "新大陆" and fleet.server.get("/api/v1/registry/units/HN47000001").status_code == 404, \
        "a preview changes nothing"
    b.click("#import-apply")
    b.wait("document.getElementById('import-preview').dataset.applied === '1'", timeout=10, what="the import")
    after = fleet.api(f"/api/v1/registry/units/{u.sn}")
    assert after["vendor"] == "新大陆"
    assert {k: after[k] for k in ("insurance_sn", "terminal_type", "link_type", "stock_type")} == \
        {k: before[k] for k in ("insurance_sn", "terminal_type", "link_type", "stock_type")}
    assert fleet.api("/api/v1/registry/units/HN47000001")["status"] == "spare"
    # an empty cell in a column the file has empties that field, and the preview says so
    text = f"终端SN,医保终端编号\r\n{u.sn},\r\n"
    b.eval("(() => { const dt = new DataTransfer(); dt.items.add(new File([" + json.dumps(text) + "], 'units.csv', "
           "{type: 'text/csv'})); document.getElementById('import-file').files = dt.files; })()")
    b.click("#import-preview-btn")
    b.wait(f"(document.querySelector('#import-changes tbody tr[data-row]') || {{}}).textContent.includes("
           f"{json.dumps(before['insurance_sn'])})", timeout=10, what="the second preview's row")
    cells = b.eval("[...document.querySelectorAll('#import-changes tbody tr[data-row]')].map(r => [...r.cells].map(c => c.textContent))")
    assert cells == [[u.sn, "修改", f"医保 SN: {before['insurance_sn']} → （清空）"]]


def test_registry_xlsx_export_keeps_iccids_as_text(fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    b = browser
    _downloads(b, tmp_path)
    sign_in(b, fleet)
    goto(b, fleet, "#/units", "units")
    b.click('#registry-tools button[data-export="xlsx"]')
    b.wait("document.getElementById('registry-status').textContent.endsWith('.xlsx')", timeout=20, what="the export")
    got = _wait_file(tmp_path, b.text("#registry-status"))
    rows = list(load_workbook(io.BytesIO(got)).active.iter_rows(values_only=True))
    assert len(rows) == 1 + fleet.api("/api/v1/registry/units")["total"]
    cells = {str(c) for r in rows[1:] for c in r if c is not None}
    assert {u.iccid for u in fleet.plan.units} <= cells, "every ICCID whole, as text"


def test_english_page_shows_codes_in_english_not_chinese(fleet: Fleet, browser: Browser) -> None:
    b = browser
    sign_in(b, fleet)
    goto(b, fleet, f"#/unit/{fleet.plan.units[0].sn}?date=2025-03-19", "unit")
    b.eval("document.getElementById('main').dataset.state = 'x'")
    b.click("#lang")
    b.ready("unit")
    try:
        assert b.eval("[...document.querySelectorAll('#failures tbody tr')].map(r => r.cells[4].textContent)") == \
            ["printer: paper_out"]
        assert sorted(b.texts('#checks [data-k="check.name"]')) == sorted(["printer", "ID card reader", "modem", "storage"])
    finally:
        b.eval("document.getElementById('main').dataset.state = 'x'")
        b.click("#lang")
        b.ready("unit")
