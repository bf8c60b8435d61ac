"""The dashboard in a real headless Chromium against a running server: what a person sees equals the API."""

from __future__ import annotations

import json
from pathlib import Path

from tests.dashboard.cdp import Browser
from tests.dashboard.conftest import (
    OUTAGE,
    PAPER_OUT,
    POWER_CUT,
    Fleet,
    client,
    goto,
    pct,
    shots_dir,
    sign_in,
    wait_trend,
)


def test_login_refuses_an_unknown_token_and_keeps_a_good_one_in_the_tab_only(fleet: Fleet, browser: Browser) -> None:
    b = browser
    b.goto(f"{fleet.base}/dashboard/#/fleet")
    b.wait("document.getElementById('main').dataset.state === 'ready'")
    b.eval("sessionStorage.clear(); document.getElementById('main').dataset.state = 'x'; location.reload()")
    b.ready("login")  # not signed in: the login page, whatever was asked for
    assert b.eval("document.getElementById('nav').hidden") is True
    b.eval("document.getElementById('token').value = 'pf_not-a-real-token'")
    b.click("#sign-in")
    b.wait("document.getElementById('login-error').textContent.length > 0", what="the login error")
    assert b.text("#login-error") == "令牌无效或已吊销"
    assert b.eval("sessionStorage.getItem('posfleet.token')") is None
    sign_in(b, fleet, "viewer")
    assert b.eval("sessionStorage.getItem('posfleet.token')") == fleet.server.token("viewer")
    assert b.eval("localStorage.getItem('posfleet.token')") is None
    assert "pf_" not in b.eval("location.href")


def test_fleet_view_figures_equal_the_api(fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    b = browser
    sign_in(b, fleet)
    avail = fleet.api("/api/v1/availability", **fleet.month, group_by="county")
    live = fleet.api("/api/v1/analytics/live")
    flagged = fleet.api("/api/v1/availability/flagged", **fleet.month, limit=20)
    f = avail["fleet"]
    assert f["service_slots"] > 0 and f["units"] == 12, "the fixture's history was counted"
    assert b.text('[data-k="fleet.device_rate"]') == pct(f["device_rate"])
    assert b.text('[data-k="fleet.network_rate"]') == pct(f["network_rate"])
    assert b.text('[data-k="fleet.tier"]') == f"第{f['tier']}档"
    assert b.text('[data-k="fleet.flagged_units"]') == str(f["flagged_units"])
    assert b.text('[data-k="live.online_offline"]') == f"{live['online']} / {live['offline']}"
    # the unit with two days of power cut is flagged, and the page lists exactly the API's flagged units in order
    assert POWER_CUT[0] in [u["sn"] for u in flagged["items"]]
    assert b.eval("[...document.querySelectorAll('#flagged tbody tr')].map(r => r.dataset.row)") == \
        [u["sn"] for u in flagged["items"]]
    rows = b.eval("[...document.querySelectorAll('#counties tbody tr')].map(r => [r.dataset.row, "
                  "r.querySelector('[data-k=\"county.device_rate\"]').textContent, "
                  "r.querySelector('[data-k=\"county.network_rate\"]').textContent])")
    assert rows == [[c["county"], pct(c["device_rate"]), pct(c["network_rate"])] for c in avail["items"]]
    assert b.eval("[...document.querySelectorAll('#best tbody tr')].map(r => r.dataset.row)") == \
        [i["institution"] for i in live["institutions_best"]]
    assert b.eval("[...document.querySelectorAll('#worst tbody tr')].map(r => r.dataset.row)") == \
        [i["institution"] for i in live["institutions_worst"]]
    bars = b.eval("Object.fromEntries([...document.querySelectorAll('#carriers rect')].map(r => [r.dataset.label, +r.dataset.value]))")
    names = {"China Mobile": "中国移动", "China Unicom": "中国联通", "China Telecom": "中国电信"}
    assert bars == {names[k]: v for k, v in live["by_carrier"].items()} and sum(bars.values()) == 12
    assert len(bars) >= 2, "the plan spreads SIMs over carriers"
    links = b.eval("Object.fromEntries([...document.querySelectorAll('#link-types rect')].map(r => [r.dataset.label, +r.dataset.value]))")
    assert links == {"有线专网": live["by_link_type"]["wired"], "4G VPDN": live["by_link_type"]["4g_vpdn"]}
    wait_trend(b)
    b.screenshot(shots_dir(tmp_path) / "fleet.png")
    assert (shots_dir(tmp_path) / "fleet.png").stat().st_size > 10_000


def test_trend_buttons_show_the_days_the_api_counts(fleet: Fleet, browser: Browser) -> None:
    b = browser
    sign_in(b, fleet)
    wait_trend(b)
    for days in (7, 90, 30):
        b.eval("document.getElementById('trend').dataset.state = 'x'")
        b.click(f'button[data-days="{days}"]')
        wait_trend(b)
        tr = fleet.api("/dashboard/api/trend", days=days)
        counted = [p for p in tr["points"] if p["device_rate"] is not None]
        assert b.eval("document.getElementById('trend').dataset.days") == str(days)
        assert b.eval("document.getElementById('trend').dataset.points") == str(len(counted))
        assert len(tr["points"]) == days
    # 20 days of history (1-20 March, today counted so far): 90 days show exactly those
    assert len(counted) == 20
    # a trend point is the availability API's answer for that day
    day = fleet.api("/api/v1/availability", **{"from": "2025-03-19T00:00:00+08:00", "to": "2025-03-20T00:00:00+08:00"})
    point = next(p for p in tr["points"] if p["date"] == "2025-03-19")
    assert (point["device_rate"], point["network_rate"]) == (day["fleet"]["device_rate"], day["fleet"]["network_rate"])
    assert point["device_rate"] < 1, "the paper-out on the 19th shows in that day's rate"


def test_unit_view_shows_identity_sim_figures_and_what_failed_when(fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    b = browser
    sign_in(b, fleet)
    sn = PAPER_OUT[0]
    goto(b, fleet, f"#/unit/{sn}?date=2025-03-19", "unit")
    reg = fleet.api(f"/api/v1/registry/units/{sn}")
    fig = fleet.api("/api/v1/availability", **fleet.month, group_by="unit", sn=sn)["items"][0]
    assert b.text('[data-k="unit.sn"]') == sn
    assert b.text('[data-k="sim.iccid"]') == reg["sim"]["iccid"] == fleet.plan.by_sn[sn].iccid
    assert b.text('[data-k="sim.imsi"]') == reg["sim"]["imsi"]
    names = {"china mobile": "中国移动", "china unicom": "中国联通", "china telecom": "中国电信"}
    assert b.text('[data-k="sim.carrier"]') == names[reg["sim"]["carrier"].lower()], "the carrier in Chinese"
    assert b.text('[data-k="unit.device_rate"]') == pct(fig["device_rate"])
    assert b.text('[data-k="unit.network_rate"]') == pct(fig["network_rate"])
    # the peripherals of the newest sample, and health charts drawn from the samples
    assert b.eval("[...document.querySelectorAll('#checks tbody tr')].map(r => r.dataset.row).sort()") == \
        ["idcard", "modem", "printer", "storage"]
    assert b.eval("document.querySelectorAll('#health svg path').length") >= 4
    # the day's slots: the paper-out from 10:00 to 10:45, as the slots API says
    slots = fleet.api(f"/api/v1/units/{sn}/slots", date="2025-03-19")
    bad = [s for s in slots["slots"] if s["device"] == "not_intact"]
    assert (bad[0]["start"][11:16], len(bad)) == ("10:00", 45)
    rows = b.eval("[...document.querySelectorAll('#failures tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
    assert rows == [["10:00", "10:45", "45", "设备故障", "打印机：缺纸"]]  # printer=paper_out, in Chinese
    assert b.eval("document.querySelectorAll('#slots rect[data-kind=\"dev\"]').length") == 1
    assert b.text('[data-k="slots.figures"]') == \
        f"当日：完好率 {pct(slots['figures']['device_rate'])}，网络通畅率 {pct(slots['figures']['network_rate'])}"
    b.screenshot(shots_dir(tmp_path) / "unit.png")


def test_a_county_wide_link_cut_is_marked_as_a_likely_carrier_outage(fleet: Fleet, browser: Browser) -> None:
    b = browser
    sign_in(b, fleet)
    sn = next(u.sn for u in fleet.plan.units if u.county == fleet.plan.units[0].county and u.sn != PAPER_OUT[0])
    goto(b, fleet, f"#/unit/{sn}?date=2025-03-17", "unit")
    rows = b.eval("[...document.querySelectorAll('#failures tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
    assert rows == [[OUTAGE[0][11:], OUTAGE[1][11:], "75", "网络异常", "断网 (疑似运营商故障)"]]  # link_down
    # choosing another day with the date picker shows that day (a clean one)
    b.eval("document.getElementById('main').dataset.state = 'x'; const d = document.getElementById('slot-date'); "
           "d.value = '2025-03-18'; d.dispatchEvent(new Event('change'))")
    b.ready("unit")
    assert b.eval("document.getElementById('slots').dataset.date") == "2025-03-18"
    assert b.eval("document.querySelectorAll('#failures tbody tr[data-kind]').length") == 0


def test_navigation_fleet_to_institution_to_unit(fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    b = browser
    sign_in(b, fleet)
    live = fleet.api("/api/v1/analytics/live")
    code = live["institutions_best"][0]["institution"]
    b.eval("document.getElementById('main').dataset.state = 'x'")
    b.click(f'#best a[data-inst="{code}"]')
    b.ready("institution")
    assert b.eval("location.hash") == f"#/institution/{code}"
    inst = fleet.api(f"/api/v1/institutions/{code}")
    units = fleet.api("/api/v1/availability", **fleet.month, group_by="unit", institution=code)
    assert b.text("h1") == f"机构 {inst['name']}"
    assert b.text('[data-k="inst.device_rate"]') == pct(units["fleet"]["device_rate"])
    shown = b.eval("[...document.querySelectorAll('#inst-units tbody tr')].map(r => [r.dataset.row, "
                   "r.querySelector('[data-k=\"unit.device_rate\"]').textContent])")
    assert shown == [[u["sn"], pct(u["device_rate"])] for u in units["items"]]
    wait_trend(b)
    b.screenshot(shots_dir(tmp_path) / "institution.png")
    sn = units["items"][0]["sn"]
    b.eval("document.getElementById('main').dataset.state = 'x'")
    b.click(f'#inst-units a[data-sn="{sn}"]')
    b.ready("unit")
    assert b.text('[data-k="unit.sn"]') == sn
    # the unit's institution link leads back
    b.eval("document.getElementById('main').dataset.state = 'x'")
    b.click(f'a[data-inst="{code}"]')
    b.ready("institution")


def test_units_list_search_and_institutions_list(fleet: Fleet, browser: Browser) -> None:
    b = browser
    sign_in(b, fleet)
    b.eval("document.getElementById('main').dataset.state = 'x'")
    b.click('a[data-nav="units"]')
    b.ready("units")
    assert b.text('[data-k="units.total"]') == "共 12 台"
    b.eval("document.getElementById('main').dataset.state = 'x'; document.getElementById('unit-search').value = '0004'; "
           "document.querySelector('#main form').requestSubmit()")
    b.ready("units")
    assert b.eval("[...document.querySelectorAll('#units tbody tr')].map(r => r.dataset.row)") == [POWER_CUT[0]]
    goto(b, fleet, "#/institutions", "institutions")
    insts = fleet.api("/api/v1/institutions")
    assert sorted(b.eval("[...document.querySelectorAll('#institutions tbody tr')].map(r => r.dataset.row)")) == \
        sorted(i["code"] for i in insts["items"])


def test_language_switch_changes_labels_not_figures(fleet: Fleet, browser: Browser) -> None:
    b = browser
    sign_in(b, fleet)
    before = b.text('[data-k="fleet.device_rate"]')
    b.eval("document.getElementById('main').dataset.state = 'x'")
    b.click("#lang")
    b.ready("fleet")
    try:
        assert b.text('a[data-nav="fleet"]') == "Fleet"
        assert "Device intact rate" in b.eval("document.getElementById('main').innerText")
        assert b.text('[data-k="fleet.device_rate"]') == before
        assert b.eval("document.documentElement.lang") == "en"
    finally:
        b.eval("document.getElementById('main').dataset.state = 'x'")
        b.click("#lang")
        b.ready("fleet")
    assert b.text('a[data-nav="fleet"]') == "总览"


def test_sign_out_and_a_revoked_token_go_back_to_the_login(fleet: Fleet, browser: Browser) -> None:
    b = browser
    sign_in(b, fleet)
    b.click("#logout")
    b.ready("login")
    assert b.eval("sessionStorage.getItem('posfleet.token')") is None
    # a token that stops working mid-session (revoked): the next page load lands on the login
    b.eval("sessionStorage.setItem('posfleet.token', 'pf_revoked'); location.hash = '#/units'")
    b.ready("login")
    assert b.eval("sessionStorage.getItem('posfleet.token')") is None


def test_pages_and_helpers_need_no_build_and_leak_nothing(fleet: Fleet) -> None:
    with client(fleet) as c:
        page = c.get("/dashboard/")
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
        assert "http://" not in page.text and "https://" not in page.text, "everything served locally"
        for name in ("app.js", "charts.js", "style.css"):
            asset = c.get(f"/dashboard/static/{name}")
            assert asset.status_code == 200 and "https://" not in asset.text
        assert c.get("/dashboard/static/..%2Frouter.py").status_code == 404
        assert c.get("/dashboard/static/router.py").status_code == 404
        assert c.get("/dashboard/api/context").status_code == 401
        ctx = c.get("/dashboard/api/context", headers={"Authorization": f"Bearer {fleet.server.token('viewer')}"}).json()
    assert ctx["today"] == "2025-03-20" and ctx["month"]["from"] == fleet.month["from"]
    assert ctx["user"]["role"] == "viewer"
    assert json.dumps(ctx).count("pf_") == 0


def test_alert_evaluation_works_with_a_flagged_unit(fleet: Fleet) -> None:
    r = fleet.server.request("POST", "/api/v1/alerts/evaluate")
    assert r.status_code == 200, r.text[:200]
