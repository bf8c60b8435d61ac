"""The operations report as the contract's document (issue 17): cover, tier clause, every section, Chinese dates,
network service levels per clause, inspection appendix, fault list; periods as people name them; PDF read back
with pypdf and its cover and appendix pages rendered by pdftoppm; XLSX read back with openpyxl."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import openpyxl
import pypdf

from tests.server.conftest import Api, at, make_api, sample
from tests.server.test_availability import PAPER_OUT, _setup
from wire.messages import Event, FsStat

CONTRACT = {"reports": {"client": "海南省医疗保障局", "contractor": "琼州信息技术有限公司", "contract_no": "HNYB-2025-017",
                        "number_prefix": "HNYB-YW-"}}
MARCH = {"month": "2025-03"}
SECTIONS_ZH = ["合同付款条款", "全省（本范围）汇总", "趋势与分区县图表", "分区县", "分机构", "网络服务水平", "未达标终端明细",
               "故障记录", "外设故障", "疑似运营商网络故障", "换机与维修", "SIM流量", "备机库存", "服务器自检", "建议", "签章",
               "附录：终端巡检记录"]


async def _month_of_data(api: Api) -> None:
    """Two units on 2025-03-03: A with paper out 10:00-10:30 (a fault alert opened and closed), high latency,
    jitter and loss 12:00-13:00; D clean but without jitter and TCP counters. The clock then at 2025-04-01."""
    await _setup(api)
    a, d = "HNA0000001", "HND0000001"
    fs = [FsStat("/", 8000, 2000, True), FsStat("/var/lib/posfleet", 1000, 950, True)]
    t0 = at("2025-03-03 08:00")
    items = []
    for k in range(300):  # 08:00-13:00
        ts = t0 + 60 * k
        late = 240 <= k < 300  # 12:00-13:00
        items.append(sample(k, ts, rtt_ms=500 if late else 80, rtt_var_ms=80 if late else 10, retrans=5 * k if late else 0,
                            segs_out=1000 * k, checks=PAPER_OUT if 120 <= k < 150 else None, cpu=12.5,
                            mem_used_mb=300, mem_avail_mb=700, fs=fs))
    await api.feed(a, items[:150])  # to 10:30, paper out at the end
    await api.app.state.alerts.evaluate()  # the fault alert opens
    await api.feed(a, items[150:])
    await api.app.state.alerts.evaluate()  # ... and closes: paper put back
    await api.feed(d, [sample(k, t0 + 60 * k, rtt_ms=90, cpu=3.0, mem_used_mb=100, mem_avail_mb=900,
                              fs=[FsStat("/", 8000, 1000, True)]) for k in range(60)])
    await api.req("PUT", "/api/v1/registry/units/HNS0000009", json={"status": "spare", "stock_type": "spare"})
    api.clock.t = at("2025-04-01 00:00")
    await api.settle()


async def _days_pass(api: Api, first: str, last: str) -> None:
    """The clock moves to each midnight from ``first`` to ``last`` (``YYYY-MM-DD``) and the roll-ups close each day
    there, as a running server does; the retention pass runs at each."""
    from server.app import purge_raw_samples

    t, end = at(f"{first} 00:00"), at(f"{last} 00:00")
    while t <= end:
        api.clock.t = t
        await api.settle()
        await purge_raw_samples(api.app)
        t += 86400


def _pdf_text(content: bytes) -> list[str]:
    return [p.extract_text() for p in pypdf.PdfReader(io.BytesIO(content)).pages]


def _ink(pdf: Path, page: int, out: Path) -> float:
    """Share of non-white pixels of one page rendered by pdftoppm (grey, 40 dpi, PGM)."""
    subprocess.run(["pdftoppm", "-f", str(page), "-l", str(page), "-r", "40", "-gray", str(pdf), str(out)],
                   check=True, timeout=60)
    img = next(out.parent.glob(f"{out.name}-*{page}.pgm")).read_bytes()
    m = re.match(rb"P5\s+(\d+)\s+(\d+)\s+(\d+)\s", img)
    assert m, img[:20]
    w, h = int(m.group(1)), int(m.group(2))
    pixels = img[m.end():m.end() + w * h]
    assert len(pixels) == w * h
    return sum(1 for p in pixels if p < 200) / (w * h)


async def test_pdf_is_the_contracts_document(tmp_path: Path) -> None:
    async with make_api(tmp_path, CONTRACT, now="2025-03-03 07:00") as api:
        await _month_of_data(api)
        fleet = (await api.get("/api/v1/availability", **{"from": "2025-03-01", "to": "2025-03-31"})).json()["fleet"]
        r = await api.get("/api/v1/reports/ops", role="viewer", format="pdf", **MARCH)
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"] == 'attachment; filename="ops-2025-03.pdf"'
        pages = _pdf_text(r.content)
        cover, lines = pages[0].replace("\n", ""), "\n".join(pages)
        text = lines.replace("\n", "")  # pypdf breaks lines where the page does
        # the cover: title, parties, contract and report numbers, the period in Chinese dates with its last day
        for field in ("运维服务报告", "2025年3月", "海南省医疗保障局", "琼州信息技术有限公司", "HNYB-2025-017",
                      "HNYB-YW-2025-03", "2025年3月1日至2025年3月31日", "共 31 天，含最后一日", "2025年4月1日 00:00"):
            assert field in cover, (field, cover)
        assert "2025-04-01T00:00" not in cover  # no exclusive ISO end on the cover
        # the tier clause from the settings and its result
        assert "≥ 95%" in text and "60%" in text and "≥ 85% 且 < 95%" in text and "任一 < 85%" in text and "40%" in text
        assert f"第 {fleet['tier']} 档" in text and f"{fleet['final_payment'] * 100:.2f} %" in text
        for heading in SECTIONS_ZH:
            assert heading in text, heading
        assert "网络通畅率" in text and "网络可用率" not in text
        # reason codes in words, none raw
        assert "打印机：缺纸" in text and "paper_out" not in text and "link_down" not in text
        # network service levels: A's hour of high latency is outside, D's unmeasured jitter not counted as good
        assert "时延达标占比" in text and "误包率" in text
        # the fault: start, duration, cause, repair
        fault = next(line for line in lines.splitlines() if line.startswith("2025-03-03 10:30 HNA0000001")
                     and "打印机：缺纸" in line)
        assert fault.endswith(" 150 打印机：缺纸 自行恢复"), fault  # 10:30 to the next evaluation at 13:00
        # the inspection appendix: A's storage fill (95 % on /var/lib/posfleet), CPU, versions
        appx = "".join(p for p in pages if "附录：终端巡检记录" in p).replace("\n", "")
        assert "HNA0000001" in appx and "95%" in appx and "未打印" in appx
        # the server's self-inspection as the running server gives it (no backup made in this test: said), in the
        # report's language, not the server's English log message
        assert "最近备份" in text and "没有数据库备份记录（posfleet server db backup）" in text
        assert "no database backup" not in text and "not synchronised" not in text and "总体状态 alert" not in text
        assert re.search(r"总体状态 发现 \d 项问题", lines) and "证书 根证书（CA）" in lines
        # spare stock per county: the spare HNS0000009 (no institution) is counted, 秀英区 has none
        assert "\n— 1 1 0\n" in lines and "\n秀英区 4 0 0\n" in lines

        out = tmp_path / "march.pdf"
        out.write_bytes(r.content)
        appendix_page = next(i for i, p in enumerate(pages, 1) if "附录：终端巡检记录" in p)
        assert _ink(out, 1, tmp_path / "cover") > 0.005  # the cover page has text on it
        assert _ink(out, appendix_page, tmp_path / "appx") > 0.01

        # a county report: no tier, it exists province-wide only
        county = await api.get("/api/v1/reports/ops", format="pdf", county="秀英区", **MARCH)
        ctext = "".join(_pdf_text(county.content)).replace("\n", "")
        assert "区县报告不判定档次" in ctext and "第 1 档" not in ctext and "HNYB-YW-2025-03-秀英区" in ctext
        assert "filename*=UTF-8''ops-2025-03-%E7%A7%80" in county.headers["content-disposition"]

        # English on request: every reason in words too
        en = (await api.get("/api/v1/reports/ops", lang="en", **MARCH)).text
        assert "Operations service report" in en and "printer: paper out" in en and "1 March 2025 to 31 March 2025" in en
        assert "no database backup recorded (posfleet server db backup)" in en and "problems found" in en


async def test_recommendations_name_units_to_visit_sims_and_certificates(tmp_path: Path) -> None:
    """The recommendations are derived from the period's data: the units below the threshold to visit, the SIMs at
    80 % of their plan, the counties without spares, the terminal certificates near their end (from the running
    server's self-inspection of the CA's index), in Chinese and in English."""
    from tests.server.test_inspection import _ca

    ca_dir = _ca(tmp_path, {"HN00000007": 30, "HN00000008": 400})
    async with make_api(tmp_path, {**CONTRACT, "pki": {"ca_dir": str(ca_dir)}}, now="2025-03-03 07:00") as api:
        await _month_of_data(api)
        mb = 1_000_000  # D's SIM: 450 MB of its 500 MB plan in March (90 %); A's 10 MB
        await api.feed("HND0000001", [sample(100 + k, at("2025-03-04 09:00") + 60 * k, data_bytes=v * mb)
                                      for k, v in enumerate((0, 450))])
        await api.feed("HNA0000001", [sample(400 + k, at("2025-03-04 09:00") + 60 * k, data_bytes=v * mb)
                                      for k, v in enumerate((0, 10))])
        api.clock.t = at("2025-04-01 00:00")
        await api.settle()
        pages = _pdf_text((await api.get("/api/v1/reports/ops", format="pdf", **MARCH)).content)
        text = "".join(pages).replace("\n", "")
        recs = text[text.index("建议"):text.index("签章", text.index("建议"))]
        assert re.search(r"上门检修设备完好率低于达标线的终端：[^。]*HNA0000001", recs), recs
        assert "SIM 流量已达套餐 80% 以上，核查业务流量或调整套餐：HND0000001。" in recs, recs
        assert "以下区县无备机，建议补充：秀英区。" in recs, recs
        assert "1 台终端证书将在 30 天内到期，安排续期：HN00000007。" in recs, recs
        en = (await api.get("/api/v1/reports/ops", lang="en", **MARCH)).text
        assert "SIMs at 80 % of their plan or more (check the traffic or the plan): HND0000001." in en
        assert "1 terminal certificates expire within 30 days; renew: HN00000007." in en
        assert "Visit the units whose device intact rate is below the threshold:" in en


async def test_a_period_with_nothing_counted_does_not_say_every_target_was_met(tmp_path: Path) -> None:
    """A month before the server counted anything (what a new server's first scheduled report covers): no tier, and
    the recommendations do not claim every figure met its target."""
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _month_of_data(api)
        for lang, nothing, met in (("zh", "本期无服务时隙，无据以判断各项指标是否达标。", "本期各项指标均达标"),
                                   ("en", "No service slots were counted in the period", "Every figure met its target")):
            html = (await api.get("/api/v1/reports/ops", month="2025-02", lang=lang)).text
            assert nothing in html and met not in html, lang
        assert "本期无服务时隙，无法判定档次。" in (await api.get("/api/v1/reports/ops", month="2025-02")).text
    (tmp_path / "new").mkdir()
    async with make_api(tmp_path / "new", now="2025-03-03 07:00") as api:  # a new server: nothing registered yet
        html = (await api.get("/api/v1/reports/ops", month="2025-02")).text
        assert "本期无服务时隙，无据以判断各项指标是否达标。" in html and "本期各项指标均达标" not in html


async def test_periods_as_people_name_them(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _month_of_data(api)
        q = (await api.get("/api/v1/reports/ops", quarter="2025Q1")).text
        assert "2025年1月1日至2025年3月31日" in q and "2025年第一季度" in q
        days = (await api.get("/api/v1/reports/ops", **{"from": "2025-03-01", "to": "2025-03-03"})).text
        assert "2025年3月1日至2025年3月3日" in days and "共 3 天" in days
        # the hint of a refusal parses when followed
        bad = await api.get("/api/v1/reports/ops", month="2025-13")
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "month"
        assert "2026-11" in bad.json()["errors"][0]["error"]
        both = await api.get("/api/v1/reports/ops", month="2025-03", **{"from": "2025-03-01", "to": "2025-03-03"})
        assert both.status_code == 422 and "one period" in both.text
        tz_hint = await api.get("/api/v1/reports/ops", **{"from": "2025-03-01+08:00", "to": "2025-03-03"})
        assert tz_hint.status_code == 200, tz_hint.text
        # CSV: rates as percent columns
        rows = list(csv.reader(io.StringIO((await api.get("/api/v1/reports/ops", format="csv", **MARCH)).content
                                           .decode("utf-8-sig"))))
        i = next(k for k, row in enumerate(rows) if row == ["全省（本范围）汇总"])
        got = dict(zip(rows[i + 1], rows[i + 2], strict=True))
        fleet = (await api.get("/api/v1/availability", **{"from": "2025-03-01", "to": "2025-03-31"})).json()["fleet"]
        assert float(got["设备完好率(%)"]) == round(fleet["device_rate"] * 100, 4) != round(fleet["device_rate"], 4)

    cfg = tmp_path / "server.toml"
    cfg.write_text(f'[storage]\nurl = "sqlite:///{tmp_path / "fleet.sqlite"}"\n', encoding="utf-8")
    base = [sys.executable, "-c", "from posfleet.cli_report import command; command()", "--config", str(cfg)]
    run = subprocess.run([*base, "--quarter", "2025Q1"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "2025年1月1日至2025年3月31日" in run.stdout
    assert "本报告未取得（命令行生成" in run.stdout  # no running server to inspect: said, not left blank
    run = subprocess.run([*base, "--quarter", "2025Q5"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--quarter" in run.stderr and "2026Q4" in run.stderr


async def test_xlsx_typed_cells_and_iccid_as_text(tmp_path: Path) -> None:
    async with make_api(tmp_path, CONTRACT, now="2025-03-03 07:00") as api:
        await _month_of_data(api)
        await api.feed("HNA0000001", [], [Event(seq=1, ts=at("2025-03-03 08:00"), kind="identity",
                                                data={"iccid": "89860012345678901234", "carrier": "China Mobile"})])
        api.clock.t = at("2025-04-01 00:00")
        fleet = (await api.get("/api/v1/availability", **{"from": "2025-03-01", "to": "2025-03-31"})).json()["fleet"]
        r = await api.get("/api/v1/reports/ops", format="xlsx", **MARCH)
        assert r.status_code == 200 and r.content[:2] == b"PK"
        assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
        wb = openpyxl.load_workbook(io.BytesIO(r.content))
        assert {"全省（本范围）汇总", "分区县", "网络服务水平", "故障记录", "附录：终端巡检记录"} <= set(wb.sheetnames)
        ws = wb["全省（本范围）汇总"]
        rows = list(ws.iter_rows())
        head = next(k for k, row in enumerate(rows) if row[0].value == "设备完好率")
        rate = rows[head + 1][0]
        assert rate.data_type == "n" and rate.value == fleet["device_rate"] and "%" in rate.number_format
        assert any("HNYB-YW-2025-03" in str(row[0].value) for row in rows[:head])
        faults = list(wb["故障记录"].iter_rows(values_only=True))
        paper = next(f for f in faults[1:] if f[5] == "打印机：缺纸")
        assert paper[0] == datetime(2025, 3, 3, 10, 30) and paper[1] == "HNA0000001" and paper[4] == 150
        appx = wb["附录：终端巡检记录"]
        head = [c.value for c in next(r for r in appx.iter_rows() if r[0].value == "区县")]
        a_row = next(r for r in appx.iter_rows() if r[1].value == "HNA0000001")
        iccid = a_row[head.index("ICCID")]
        assert iccid.value == "89860012345678901234" and iccid.data_type == "s" and iccid.number_format == "@"
        assert a_row[head.index("运营商")].value == "中国移动"
        assert a_row[head.index("存储占用")].value == 0.95 and a_row[head.index("CPU(%)")].value == 12.5
        # the server's self-inspection, as the HTML's section gives it, in the spreadsheet and the CSV too
        server = {r[0]: r[1] for r in wb["服务器自检"].iter_rows(values_only=True) if r[0] != "项目"}
        assert server["最近备份"] == "无" and server["总体状态"].startswith("发现 "), server
        problems = [r[1] for r in wb["服务器自检"].iter_rows(values_only=True) if r[0] == "问题"]
        assert "没有数据库备份记录（posfleet server db backup）" in problems, problems
        text = (await api.get("/api/v1/reports/ops", format="csv", **MARCH)).content.decode("utf-8-sig")
        assert "服务器自检" in text and "没有数据库备份记录" in text


async def test_network_service_levels_count_what_was_measured(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _month_of_data(api)
        from server.reports.document import network_sla

        svc = api.app.state.availability
        a, b = svc.period("2025-03-01", "2025-03-31")
        sla = await network_sla(svc, api.app.state.storage, await svc.registry.index(), a, b, None)
        xy = next(c for c in sla["counties"] if c["county"] == "秀英区")
        # service time: A 300 min on a Monday (V001 08:00-17:30), D 60 min (H001: every day 08:00-18:00)
        assert xy["hours"] == 6.0
        # latency: 60 of 360 minutes over 400 ms
        assert xy["latency"] == round(300 / 360, 6)
        # jitter: only A measures it (300 min), 60 of them over 50 ms; D's 60 minutes are unmeasured, not good
        assert xy["jitter"] == round(240 / 300, 6) and xy["jitter_measured"] == round(300 / 360, 6)
        # loss: A's counters between samples (299 intervals), 5/1000 in the last hour; D has none
        assert xy["loss"] == round(239 / 299, 6)
        assert sla["jitter_measured"] and sla["loss_measured"]
        html = (await api.get("/api/v1/reports/ops", **MARCH)).text
        assert "83.33 %" in html and "80.00 %" in html

        # the daily trend (one query over the day roll-ups) says what the figures of each day say
        from server.reports.document import trend

        index = await svc.registry.index()
        for county in (None, "秀英区"):
            days = {t["day"]: t for t in await trend(svc, api.app.state.storage, index, a, b, county)}
            assert len(days) == 31
            for day in ("2025-03-03", "2025-03-04"):
                fig = (await svc.figures(*svc.period(day, day), "fleet", county=county))["fleet"]
                assert (days[day]["device_rate"], days[day]["network_rate"], days[day]["service_slots"]) == \
                    (fig["device_rate"], fig["network_rate"], fig["service_slots"])
            assert days["2025-03-03"]["device_rate"] > 0


async def test_large_fleet_appendix_in_per_county_files(tmp_path: Path) -> None:
    from server.reports.ops import build, documents

    async with make_api(tmp_path, {"reports": {"appendix_max_units": 2}}, now="2025-03-03 07:00") as api:
        await _month_of_data(api)
        html = (await api.get("/api/v1/reports/ops", **MARCH)).text
        assert "附录：终端巡检记录" not in html and "按区县另行成册" in html
        part = (await api.get("/api/v1/reports/ops", part="appendix", county="秀英区", **MARCH)).text
        assert "附录：终端巡检记录" in part and "HNA0000001" in part and "HNB0000001" not in part
        assert "合同付款条款" not in part
        svc = api.app.state.availability
        a, b = svc.period("2025-03-01", "2025-03-31")
        data = await build(svc, api.app.state.storage, a, b, appendix=True)
        names = [n for n, _d in documents(data, "pdf")]
        assert names == ["ops-2025-03-01_2025-03-31.pdf", "ops-2025-03-01_2025-03-31-appendix-未分配.pdf",
                         "ops-2025-03-01_2025-03-31-appendix-秀英区.pdf"], names
        assert [n for n, _d in documents(data, "xlsx")] == ["ops-2025-03-01_2025-03-31.xlsx"]  # one table


async def test_network_service_levels_cover_a_quarter_after_the_raw_samples_are_gone(tmp_path: Path) -> None:
    """The SLA section reads the per unit-day roll-up: a report over a quarter, long after the 14 days of raw
    samples were purged, gives the shares counted by hand from the samples; late data for a closed day is
    recounted into it."""
    from server.reports.document import network_sla

    async with make_api(tmp_path, {"retention_days": 14}, now="2025-03-03 07:00") as api:
        await _setup(api)
        a_sn, d_sn = "HNA0000001", "HND0000001"
        t0 = at("2025-03-03 08:00")
        await api.feed(a_sn, [sample(k, t0 + 60 * k, rtt_ms=500 if k >= 240 else 80, rtt_var_ms=80 if k >= 240 else 10,
                                     retrans=5 * k if k >= 240 else 0, segs_out=1000 * k) for k in range(300)])
        await api.feed(d_sn, [sample(k, t0 + 60 * k, rtt_ms=90) for k in range(60)])
        await _days_pass(api, "2025-03-04", "2025-03-04")
        svc, storage = api.app.state.availability, api.app.state.storage

        async def xiuying(period: tuple[str, str], covered: bool = True) -> dict:
            a, b = svc.period(*period)
            got = await network_sla(svc, storage, await svc.registry.index(), a, b, "秀英区")
            assert got["covers_period"] is covered, got
            return next(c for c in got["counties"] if c["county"] == "秀英区") | {"fleet": got["fleet"]}

        # counted by hand: A 300 min (60 of them at 500 ms, jitter 80 ms, 5 retransmitted per 1000 sent), D 60 min
        # without jitter or TCP counters
        first = await xiuying(("2025-03-01", "2025-03-31"))
        assert (first["hours"], first["latency"], first["jitter"], first["loss"]) == \
            (6.0, round(300 / 360, 6), round(240 / 300, 6), round(239 / 299, 6))

        # late data for the closed day: D's 09:00-10:00, every sample at 500 ms
        await api.feed(d_sn, [sample(60 + k, t0 + 3600 + 60 * k, rtt_ms=500) for k in range(60)])
        await api.settle()
        late = await xiuying(("2025-03-01", "2025-03-31"))
        assert (late["hours"], late["latency"], late["jitter"]) == (7.0, round(300 / 420, 6), round(240 / 300, 6))

        # a quarter later, the raw samples of March are gone; the quarter's section says the same
        await _days_pass(api, "2025-03-05", "2025-07-01")
        assert await storage.network_samples(at("2025-03-01 00:00"), at("2025-04-01 00:00")) == []
        assert await xiuying(("2025-03-03", "2025-03-31")) == late
        # (from March 1st or January: the server counted nothing before March 3rd, and says so)
        assert await xiuying(("2025-03-01", "2025-03-31"), covered=False) == late
        # (the quarter from January: the server counted nothing before March 3rd, and says so)
        assert await xiuying(("2025-01-01", "2025-03-31"), covered=False) == late
        html = (await api.get("/api/v1/reports/ops", quarter="2025Q1")).text
        assert "71.43 %" in html and "80.00 %" in html and "自 2025-03-03T00:00:00+08:00 起" in html


async def test_a_late_sample_before_midnight_recounts_the_next_days_loss(tmp_path: Path) -> None:
    """The loss of a day's first sample reads the previous sample's TCP counters, which may be the last of the day
    before: a late sample at 23:59 changes the next day's stored share, so that day is counted again too (the pass
    recounts a unit's hours from its earliest newly committed sample on)."""
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        r = await api.req("PUT", "/api/v1/institutions/N001", json={"name": "N001", "county": "秀英区",
                                                                     "hours": "mon-sun=00:00-24:00"})
        assert r.status_code == 200, r.text
        sn = "HNN0000001"
        assert (await api.req("PUT", f"/api/v1/registry/units/{sn}", json={"institution": "N001"})).status_code == 200
        t0 = at("2025-03-03 22:00")
        # minute m from 22:00; the 23:59 sample (m = 119) comes late; from midnight one segment in 2,000 is resent
        await api.feed(sn, [sample(m, t0 + 60 * m, retrans=0 if m < 120 else 1, segs_out=1000 * m)
                            for m in range(181) if m != 119])
        await _days_pass(api, "2025-03-05", "2025-03-05")
        storage, mar4 = api.app.state.storage, 739314  # 2025-03-04's ordinal

        async def loss_within() -> int:
            return (await storage.sla_sums(mar4, mar4, [sn]))[0][sn][5]

        assert await loss_within() == 61 * 60  # 00:00-01:00: 1 resent in 2,000 sent since 23:58 (within 1e-3)
        await api.feed(sn, [sample(1000, t0 + 60 * 119, retrans=0, segs_out=1000 * 120 - 10)])
        await api.settle()
        assert await loss_within() == 60 * 60  # 00:00 now reads 23:59's counters: 1 resent in 10 sent


def test_every_self_inspection_problem_is_worded_in_the_reports_language() -> None:
    """Each check the self-inspection raises (enumerated from server/inspection/service.py, not copied) has its own
    words in both languages; the server's English ``message`` is never what the report prints."""
    from server.reports.document import inspection_text
    from server.reports.ops import LABELS

    source = (Path(__file__).resolve().parents[2] / "server" / "inspection" / "service.py").read_text(encoding="utf-8")
    checks = set(re.findall(r'"check": "([a-z_]+)"', source))
    assert {"disk", "backup", "broker", "certificate", "time", "renewal"} <= checks, checks
    for lang in ("zh", "en"):
        for check in sorted(checks):
            for v in ({}, {"error": "E"}, {"age_h": 49.0, "line": 48}, {"what": "ca", "days": -1}):
                got = inspection_text({"problems": [{"check": check, "vars": v, "message": "SERVER'S MESSAGE"}]},
                                      LABELS[lang])
                assert got["problems"][0] and "SERVER'S MESSAGE" not in got["problems"][0], (lang, check, v)
    zh = inspection_text({"problems": [{"check": "certificate", "vars": {"what": "broker", "days": 29.6}}]}, LABELS["zh"])
    assert zh == {"status": "发现 1 项问题", "cert": zh["cert"], "problems": ["消息服务器证书30 天后到期"]}


async def test_tier_table_comes_from_the_settings_and_charts_are_drawn(tmp_path: Path) -> None:
    """Another contract's tier table in ``[availability]``: the clause and the result are that table's, not the
    Hainan defaults. The trend and by-county charts are inline SVG drawn from the figures: every day of the period
    on the axis, the threshold dashed, the county below it in red."""
    tiers = {"availability": {"tiers": [[0.98, 1, 0.7], [0.9, 2, 0.55]], "last_tier": [4, 0.25]}}
    async with make_api(tmp_path, {**CONTRACT, **tiers}, now="2025-03-03 07:00") as api:
        await _month_of_data(api)
        fleet = (await api.get("/api/v1/availability", **{"from": "2025-03-01", "to": "2025-03-31"})).json()["fleet"]
        assert (fleet["tier"], fleet["final_payment"]) == (4, 0.25)  # the fleet is far below 90 %
        html = (await api.get("/api/v1/reports/ops", **MARCH)).text
        clause = html[html.index("合同付款条款"):html.index("全省（本范围）汇总")]
        for cell in ("均 ≥ 98%", "70%", "均 ≥ 90% 且 &lt; 98%", "55%", "任一 &lt; 90%", "25%", "第 4 档", "25.00 %"):
            assert cell in clause, (cell, clause)
        assert "95%" not in clause and "60%" not in clause

        svgs = re.findall(r'<svg [^>]*aria-label="([^"]+)"[^>]*>(.*?)</svg>', html, re.S)
        assert [label for label, _ in svgs] == ["每日设备完好率与网络通畅率", "分区县设备完好率与网络通畅率"], svgs
        trend_svg, county_svg = svgs[0][1], svgs[1][1]
        assert ">03-01<" in trend_svg and ">03-31<" in trend_svg and "stroke-dasharray" in trend_svg
        assert "<polyline" in trend_svg or "<circle" in trend_svg
        assert ">秀英区<" in county_svg and 'fill="#c00"' in county_svg and "达标线 95%" in county_svg
        pdf = "".join(_pdf_text((await api.get("/api/v1/reports/ops", format="pdf", **MARCH)).content))
        assert "每日设备完好率与网络通畅率" in pdf.replace("\n", "") or "达标线 95%" in pdf


async def test_per_city_table_equals_the_availability_figures_by_region(tmp_path: Path) -> None:
    """The contract assesses per city/county: the province's report has a table per city (the institutions'
    region, 统筹区) besides the county table, each row the API's figures grouped by region; in HTML, PDF, XLSX and
    CSV. A county report has none (its county is in one city)."""
    async with make_api(tmp_path, CONTRACT, now="2025-03-03 07:00") as api:
        await _month_of_data(api)
        period = {"from": "2025-03-01", "to": "2025-03-31"}
        by_region = (await api.get("/api/v1/availability", group_by="region", **period)).json()["items"]
        haikou = next(r for r in by_region if r["region"] == "海口市")
        assert haikou["service_slots"] > 0

        text = "".join(_pdf_text((await api.get("/api/v1/reports/ops", format="pdf", **MARCH)).content))
        assert "分市（统筹区）" in text
        row = f"海口市 {haikou['device_rate'] * 100:.2f} % {haikou['network_rate'] * 100:.2f} % {haikou['service_slots']}"
        assert row in text, (row, text[text.index("分市（统筹区）"):][:400])

        wb = openpyxl.load_workbook(io.BytesIO((await api.get("/api/v1/reports/ops", format="xlsx", **MARCH)).content))
        rows = list(wb["分市（统筹区）"].iter_rows(values_only=True))
        head = next(k for k, r in enumerate(rows) if r[0] == "市（统筹区）")
        got = {r[0]: dict(zip(rows[head], r, strict=True)) for r in rows[head + 1:]}
        assert got["海口市"]["设备完好率"] == haikou["device_rate"] and got["海口市"]["服务时隙"] == haikou["service_slots"]

        csv_text = (await api.get("/api/v1/reports/ops", format="csv", **MARCH)).content.decode("utf-8-sig")
        assert "\r\n分市（统筹区）\r\n" in csv_text or "\n分市（统筹区）\n" in csv_text

        county = (await api.get("/api/v1/reports/ops", county="秀英区", **MARCH)).text
        assert "分市（统筹区）" not in county and "分区县" in county


async def test_appendix_gives_each_units_last_test_page_and_how_it_ended(tmp_path: Path) -> None:
    """The inspection appendix's last test page: the newest finished ``test_page`` command per unit (recorded in the
    real command store), with its time and how it ended in the report's language, never the command's state code."""
    from server.storage.commands import NewCommand

    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _month_of_data(api)
        store = api.app.state.storage
        pages = (("c1", "HNA0000001", "2025-03-02 09:00", "failed"), ("c2", "HNA0000001", "2025-03-03 10:05", "succeeded"),
                 ("c3", "HND0000001", "2025-03-04 16:30", "expired"))
        for cid, sn, when, state in pages:
            t = at(when)
            await store.add_commands(None, [NewCommand(cid, None, 0, sn, "test_page", {}, "admin", t - 60, t - 60,
                                                       t + 3600, b"", True, "queued")])
            assert await store.move_command(cid, "queued", state, finished=t)
        html = (await api.get("/api/v1/reports/ops", **MARCH)).text
        appx = html[html.index('id="appendix"'):]

        def row(sn: str) -> str:
            return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", appx[appx.index(f">{sn}<"):].split("</tr>")[0]))

        assert "2025-03-03 10:05 成功" in row("HNA0000001") and "失败" not in row("HNA0000001"), row("HNA0000001")
        assert "2025-03-04 16:30 超时未执行" in row("HND0000001") and "expired" not in appx, row("HND0000001")
        assert "未打印" in row("HNE0000001")
        en = (await api.get("/api/v1/reports/ops", lang="en", **MARCH)).text
        assert "2025-03-03 10:05 printed" in re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", en))
        wb = openpyxl.load_workbook(io.BytesIO((await api.get("/api/v1/reports/ops", format="xlsx", **MARCH)).content))
        sheet = wb["附录：终端巡检记录"]
        head = [c.value for c in next(r for r in sheet.iter_rows() if r[0].value == "区县")]
        a_row = next(r for r in sheet.iter_rows(values_only=True) if r[1] == "HNA0000001")
        assert str(a_row[head.index("最近测试页")]).endswith("成功"), a_row
