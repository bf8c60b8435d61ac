"""The issue 18 pages in a real headless Chromium against a running server (real broker, terminals publishing over
MQTT with their certificates): an application approved through the county and province steps on the page with its
address shown, a rejection refused without a reason, the IP pool's use and the combined query, the interface
register, and the statistics page with its figures and the province map shaded by terminals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from posfleet.demo import publish_history
from tests.dashboard.cdp import Browser, chromium_path
from tests.dashboard.conftest import Fleet, at, goto, shots_dir, sign_in
from tests.fleet import Broker, Pki, Server, wait_for
from wire.messages import Event, Sample

NOW = "2025-03-20T15:30:00+08:00"
UNITS = {"SX0001": "XA01", "SX0002": "XA01", "SX0003": "XA02", "SX0004": "YL01"}
INSTITUTIONS = {"XA01": ("长安区韦曲街道卫生院", "长安区", "西安市", "health_centre"),
                "XA02": ("长安区东大村卫生室", "长安区", "西安市", "village_clinic"),
                "YL01": ("榆阳区鱼河镇卫生院", "榆阳区", "榆林市", "health_centre"),
                "YL02": ("榆阳区古塔村卫生室", "榆阳区", "榆林市", "village_clinic")}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if chromium_path() is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; ./dev installs it)")
    root = tmp_path_factory.mktemp("dash-access")
    pki = Pki(root / "pki")
    broker = Broker(pki, root / "broker").start()
    server = Server(pki, broker, root / "server", clock={"speed": 1.0, "start": NOW, "anchor": time.time()}).start()
    try:
        for code, (name, county, region, kind) in INSTITUTIONS.items():
            r = server.request("PUT", f"/api/v1/institutions/{code}",
                               json={"name": name, "county": county, "region": region, "type": kind})
            assert r.status_code == 200, r.text
        for sn, inst in UNITS.items():
            r = server.request("PUT", f"/api/v1/registry/units/{sn}", json={"institution": inst})
            assert r.status_code == 200, r.text
        hour = at("2025-03-20 09:00")
        samples = {sn: [Sample(seq=1, ts=hour, interval=60)] for sn in UNITS}
        events = {sn: [Event(seq=2, ts=hour + 3600, kind="svc", data={
            "hour": hour, "services": 10 * (i + 1), "face": 5 * (i + 1), "idcard": 3 * (i + 1), "evoucher": 2 * (i + 1)})]
            for i, sn in enumerate(UNITS)}
        publish_history(pki, broker.port, samples, events)
        wait_for(lambda: server.get("/api/v1/statistics/services", period="week").json()["totals"]["services"] == 100,
                 30, "the service counts at the server")
        yield Fleet(server, None, f"http://127.0.0.1:{server.http_port}", {})  # type: ignore[arg-type]
    finally:
        server.stop()
        broker.stop()
        log = root / "server" / "server.log"
        if log.exists():
            assert "Traceback" not in log.read_text(), log.read_text()[-4000:]


def _state_of(b: Browser, app_id: int) -> str:
    return str(b.eval(f"document.querySelector('#applications tr[data-row=\"{app_id}\"]').dataset.state"))


def test_application_approved_on_the_page_through_both_steps_gets_its_address(fleet: Fleet, browser: Browser,
                                                                             tmp_path: Path) -> None:
    srv, b = fleet.server, browser
    r = srv.request("POST", "/api/v1/access/pools", json={"region": "长安区", "link_type": "4g_vpdn",
                                                           "cidr": "10.61.8.0/29"})
    assert r.status_code == 200, r.text
    apps = []
    for sn in ("SX0001", "SX0002"):
        r = srv.request("POST", "/api/v1/access/applications", role="engineer", json={
            "domain": "network", "action": "register", "institution": "XA01", "sn": sn, "link_type": "4g_vpdn"})
        assert r.status_code == 200, r.text
        apps.append(r.json()["id"])
    sign_in(b, fleet, "admin")
    goto(b, fleet, "#/applications", "applications")
    assert _state_of(b, apps[0]) == "pending_county"
    assert "待区县审核" in b.text(f'#applications tr[data-row="{apps[0]}"]')

    def approve(app_id: int, expect: str) -> None:
        b.eval("document.getElementById('main').dataset.state = 'navigating'")
        b.click(f'form.decide[data-id="{app_id}"] button.approve')
        b.ready("applications")
        b.wait(f"document.querySelector('#applications tr[data-row=\"{app_id}\"]').dataset.state === {expect!r}",
               what=f"application {app_id} {expect}")

    approve(apps[0], "pending_province")
    approve(apps[0], "approved")
    row = b.text(f'#applications tr[data-row="{apps[0]}"]')
    assert "已通过" in row and "10.61.8.1" in row
    # a rejection without a reason is refused on the page; with one, it is kept and shown
    b.click(f'form.decide[data-id="{apps[1]}"] button.reject')
    b.wait("document.getElementById('app-error').textContent.length > 0", what="the reason asked for")
    assert b.text("#app-error") == "驳回须填写原因"
    assert _state_of(b, apps[1]) == "pending_county"
    b.eval(f"document.querySelector('form.decide[data-id=\"{apps[1]}\"] input.note').value = '终端不属于本机构'")
    b.eval("document.getElementById('main').dataset.state = 'navigating'")
    b.click(f'form.decide[data-id="{apps[1]}"] button.reject')
    b.ready("applications")
    b.wait(f"document.querySelector('#applications tr[data-row=\"{apps[1]}\"]').dataset.state === 'rejected'")
    assert "终端不属于本机构" in b.text(f'#applications tr[data-row="{apps[1]}"]')
    b.screenshot(shots_dir(tmp_path) / "access-applications.png")

    # the pool's use and the combined query by address
    goto(b, fleet, "#/pools?ip=10.61.8.1", "pools")
    assert b.texts("#pools td[data-k=allocated]") == ["1"] and b.texts("#pools td[data-k=free]") == ["5"]
    assert b.texts("#network tbody tr td:first-child") == ["SX0001"]
    b.screenshot(shots_dir(tmp_path) / "access-pools.png")


def test_interface_register_and_statistics_with_the_province_map(fleet: Fleet, browser: Browser,
                                                                 tmp_path: Path) -> None:
    srv, b = fleet.server, browser
    r = srv.request("PUT", "/api/v1/access/interfaces/settle-2101", json={
        "name": "门诊结算", "address": "https://ybj.example/settle", "inputs": "就诊登记号", "outputs": "结算单",
        "description": "门诊实时结算"})
    assert r.status_code == 200, r.text
    sign_in(b, fleet, "viewer")
    goto(b, fleet, "#/interfaces", "interfaces")
    assert b.texts("#interfaces tbody tr td:first-child") == ["settle-2101"]
    assert b.eval("document.getElementById('iface-form') === null"), "a viewer gets no register form"

    goto(b, fleet, "#/statistics?period=week&by=day", "statistics")
    assert b.text('[data-k="stat.services"]') == "100" and b.text('[data-k="stat.people"]') == "100"
    shares = dict(zip(b.texts("#methods tbody td:first-child"), b.texts("#methods td[data-k=share]"), strict=True))
    assert shares == {"人脸": "50.00%", "身份证": "30.00%", "医保电子凭证": "20.00%", "其他": "0.00%"}, shares
    # 榆阳区's one terminal served 40; 长安区's two institutions 30 each (tied: by code)
    assert b.texts("#top10 tbody tr td:nth-child(2)") == ["榆阳区鱼河镇卫生院", "长安区韦曲街道卫生院", "长安区东大村卫生室"]
    shade = b.eval("Object.fromEntries([...document.querySelectorAll('#province-map path')]"
                   ".map(p => [p.dataset.name, +p.dataset.units]))")
    assert shade["西安市"] == 3 and shade["榆林市"] == 1 and shade["汉中市"] == 0 and len(shade) == 12
    fills = b.eval("Object.fromEntries([...document.querySelectorAll('#province-map path')]"
                   ".map(p => [p.dataset.name, p.getAttribute('fill')]))")
    assert fills["汉中市"] == "#eceff1" and fills["西安市"] != fills["榆林市"]
    assert b.eval("document.getElementById('not-on-map') === null")
    rank = b.texts("#cov-rank tbody tr td:first-child")
    assert rank == ["长安区", "榆阳区"]  # 2 of 2 institutions covered before 1 of 2
    b.screenshot(shots_dir(tmp_path) / "access-statistics.png")
