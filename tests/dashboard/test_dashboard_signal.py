"""3G (WCDMA) signal on the unit page, in a real headless Chromium against a running server fed over MQTT by each
terminal's certificate: RSCP and Ec/Io charts with Chinese labels and the newest values for a 3G unit, none for an
LTE unit; and the modem's "SIM state unknown (+CME ERROR: …)" reason in Chinese."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from drivers.modem.device import SimQuery
from posfleet.demo import publish_history
from tests.dashboard.cdp import Browser
from tests.dashboard.conftest import Fleet, at, goto, running, sign_in
from tests.fleet import wait_for
from wire.messages import Check, Sample

NOW = "2025-03-20T15:30:00+08:00"
WCDMA, LTE = "HN33000001", "HN33000002"
RSCP = [-88, -91, -97, -102]  # oldest first; the newest is -102
ECIO = [-6, -8, -11, -13]
SIM_UNKNOWN = SimQuery("unknown", 100).reason()  # as the modem driver words it


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    clock = {"speed": 1.0, "start": NOW, "anchor": time.time()}
    with running(tmp_path_factory.mktemp("dash-3g"), clock=clock) as (pki, broker, server):
        r = server.request("PUT", "/api/v1/institutions/V001", json={"name": "美安村卫生室", "county": "秀英区"})
        assert r.status_code == 200, r.text
        for sn in (WCDMA, LTE):
            r = server.request("PUT", f"/api/v1/registry/units/{sn}", json={"institution": "V001"})
            assert r.status_code == 200, r.text
        first = at("2025-03-20 14:00")
        ok = {"printer": Check(0), "idcard": Check(0), "storage": Check(0)}
        samples = {
            WCDMA: [Sample(seq=i + 1, ts=first + 900 * i, interval=900, connected=True, rtt_ms=80, signal_dbm=-80 - i,
                           rscp_dbm=rscp, ecio_db=ecio, checks={**ok, "modem": Check(2, SIM_UNKNOWN)})
                    for i, (rscp, ecio) in enumerate(zip(RSCP, ECIO, strict=True))],
            LTE: [Sample(seq=i + 1, ts=first + 900 * i, interval=900, connected=True, rtt_ms=60, signal_dbm=-75,
                         checks={**ok, "modem": Check(0)}) for i in range(4)],
        }
        publish_history(pki, broker.port, samples)
        wait_for(lambda: all(len(server.get(f"/api/v1/units/{sn}/samples").json().get("items") or []) == 4
                             for sn in (WCDMA, LTE)), 30, "the samples at the server")
        yield Fleet(server, None, f"http://127.0.0.1:{server.http_port}", {})  # type: ignore[arg-type]


def test_a_3g_unit_shows_rscp_and_ecio_in_chinese_and_an_lte_unit_does_not(fleet: Fleet, browser: Browser) -> None:
    b = browser
    sign_in(b, fleet)
    newest = fleet.api(f"/api/v1/units/{WCDMA}/samples")["items"][0]
    assert (newest["rscp_dbm"], newest["ecio_db"]) == (RSCP[-1], ECIO[-1]), "the samples API carries them"
    goto(b, fleet, f"#/unit/{WCDMA}", "unit")
    assert b.texts("#health h2") == ["CPU %", "内存已用 MB", "磁盘已用 %", "信号 dBm", "3G 接收信号码功率 RSCP dBm",
                                     "3G 信号质量 Ec/Io dB", "往返时延 ms"], "beside the signal, in Chinese"
    assert b.text('[data-k="health.rscp.latest"]') == f"最新 {RSCP[-1]}"
    assert b.text('[data-k="health.ecio.latest"]') == f"最新 {ECIO[-1]}"
    # a line through the four samples, beside the signal chart
    assert b.eval("document.querySelectorAll('[data-k=\"health.rscp\"] svg circle').length") == 4
    assert b.eval("document.querySelectorAll('[data-k=\"health.ecio\"] svg path[data-series]').length") == 1
    # the modem's reason with its +CME ERROR code, in Chinese
    assert SIM_UNKNOWN.startswith("SIM state unknown (+CME ERROR: 100")
    assert b.text('#checks tr[data-row="modem"] [data-k="check.reason"]').startswith("SIM 卡状态未知")
    assert "+CME ERROR: 100" in b.text('#checks tr[data-row="modem"] [data-k="check.reason"]')
    goto(b, fleet, f"#/unit/{LTE}", "unit")
    assert b.texts("#health h2") == ["CPU %", "内存已用 MB", "磁盘已用 %", "信号 dBm", "往返时延 ms"], \
        "no 3G charts where the samples carry no 3G figures"
    assert b.eval("document.querySelectorAll('#health svg path[data-series]').length") == 2, "signal and round trip"
