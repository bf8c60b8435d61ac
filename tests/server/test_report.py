"""Operations report: same figures as the API to the slot, Chinese by default, A4 print CSS, CSV, and the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pypdf

from tests.backend import storage_url
from tests.server.conftest import at, make_api
from tests.server.test_availability import DAY, _setup, _unit_a_day, _unit_a_day_counted


async def test_report_matches_the_api_and_lists_flagged_units_and_swaps(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _setup(api)
        await _unit_a_day(api)
        await api.req("PUT", "/api/v1/registry/units/HNS0000009", json={"status": "spare", "stock_type": "spare"})
        api.clock.t = at("2025-03-03 18:30")
        r = await api.req("POST", "/api/v1/units/HNC0000001/swap", json={"spare_sn": "HNS0000009", "note": "主板故障"})
        assert r.status_code == 200, r.text
        api.clock.t = at("2025-03-04 00:00")
        await api.settle()
        fleet = (await api.get("/api/v1/availability", **DAY)).json()["fleet"]
        counties = {c["county"]: c for c in (await api.get("/api/v1/availability", group_by="county", **DAY)).json()["items"]}

        html = await api.get("/api/v1/reports/ops", role="viewer", **DAY)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        text = html.text
        assert "运维服务报告" in text and "设备完好率" in text and "网络通畅率" in text and "网络可用率" not in text
        assert "@page" in text and "size: A4" in text
        assert f"{fleet['device_rate'] * 100:.2f} %" in text and f"{fleet['network_rate'] * 100:.2f} %" in text
        assert "HNA0000001" in text and "打印机：缺纸: 30" in text and "paper_out" not in text
        assert "HNS0000009" in text and "换上备机" in text and "主板故障" in text

        en = (await api.get("/api/v1/reports/ops", lang="en", **DAY)).text
        assert "Device intact rate" in en and "spare swapped in" in en

        r = await api.get("/api/v1/reports/ops", format="csv", **DAY)
        assert r.content.startswith(b"\xef\xbb\xbf")
        rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        i = next(k for k, row in enumerate(rows) if row == ["全省（本范围）汇总"])
        head, vals = rows[i + 1], rows[i + 2]
        got = dict(zip(head, vals, strict=True))
        assert int(got["服务时隙"]) == fleet["service_slots"] and int(got["完好时隙"]) == fleet["intact_slots"]
        assert int(got["网络通畅时隙"]) == fleet["network_ok_slots"] and int(got["无数据时隙"]) == fleet["no_data_slots"]
        # rates as percent columns (97.5 = 97.5 %), not fractions
        assert float(got["设备完好率(%)"]) == round(fleet["device_rate"] * 100, 4) and got["合同档次"] == str(fleet["tier"])
        j = next(k for k, row in enumerate(rows) if row == ["分区县"])
        xy = dict(zip(rows[j + 1], next(row for row in rows[j + 2:] if row[0] == "秀英区"), strict=True))
        assert int(xy["服务时隙"]) == counties["秀英区"]["service_slots"]
        assert int(xy["未达标终端"]) == counties["秀英区"]["flagged_units"]
        bad = await api.get("/api/v1/reports/ops", **{"from": "2025-03-3", "to": DAY["to"]})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "from"

    # the CLI reads the same database and writes the same figures
    cfg = tmp_path / "server.toml"
    cfg.write_text(f'[storage]\nurl = "{storage_url(tmp_path)}"\n', encoding="utf-8")
    out = tmp_path / "ops.csv"
    run = subprocess.run([sys.executable, "-c", "from posfleet.cli_report import command; command()",
                          "--config", str(cfg), "--from", DAY["from"], "--to", DAY["to"], "--format", "csv",
                          "--county", "秀英区", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    rows = list(csv.reader(io.StringIO(out.read_bytes().decode("utf-8-sig"))))
    i = next(k for k, row in enumerate(rows) if row == ["全省（本范围）汇总"])
    got = dict(zip(rows[i + 1], rows[i + 2], strict=True))
    assert int(got["服务时隙"]) == counties["秀英区"]["service_slots"]
    assert int(got["完好时隙"]) == counties["秀英区"]["intact_slots"]
    bad = subprocess.run([sys.executable, "-c", "from posfleet.cli_report import command; command()",
                          "--config", str(cfg), "--from", "2025-03-03T00:30:00+08:00", "--to", DAY["to"]],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--from" in bad.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
    return " Z " not in stat  # a zombie waiting for init to reap it is dead


def _pdf_facts(content: bytes) -> tuple[list[tuple[float, float]], set[str], str]:
    """Page sizes (pt), embedded font names and extracted text of a PDF."""
    reader = pypdf.PdfReader(io.BytesIO(content))
    sizes, fonts, text = [], set(), []
    for page in reader.pages:
        sizes.append((float(page.mediabox.width), float(page.mediabox.height)))
        for font in (page.get("/Resources", {}).get("/Font") or {}).values():
            font = font.get_object()
            fonts.add(str(font.get("/BaseFont", "")))
            for desc in font.get("/DescendantFonts") or []:
                fonts.add(str(desc.get_object().get("/BaseFont", "")))
        text.append(page.extract_text())
    return sizes, fonts, "\n".join(text)


async def test_pdf_report_is_the_a4_html_printed_by_chromium(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _unit_a_day_counted(api)
        fleet = (await api.get("/api/v1/availability", **DAY)).json()["fleet"]
        rate = f"{fleet['device_rate'] * 100:.2f} %"
        html = (await api.get("/api/v1/reports/ops", **DAY)).text
        assert rate in html and "设备完好率" in html

        r = await api.get("/api/v1/reports/ops", role="viewer", format="pdf", **DAY)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/pdf"
        assert r.headers["content-disposition"] == 'attachment; filename="ops-2025-03-03_2025-03-03.pdf"'
        assert r.content.startswith(b"%PDF")
        sizes, fonts, text = _pdf_facts(r.content)
        assert sizes and all(abs(w - 595.3) < 2 and abs(h - 841.9) < 2 for w, h in sizes), sizes
        assert any("wenquanyi" in f.lower() or "wqy" in f.lower() for f in fonts), fonts
        assert "运维服务报告" in text and "设备完好率" in text and "网络通畅率" in text and "网络可用率" not in text and "未达标终端明细" in text
        assert rate in text and "HNA0000001" in text

        # no browser: 503 naming the setting and the package; a browser that fails: 500 with what it said
        api.app.state.settings.reports.chromium = str(tmp_path / "no-such-chromium")
        r = await api.get("/api/v1/reports/ops", format="pdf", **DAY)
        assert r.status_code == 503 and r.json()["errors"][0]["field"] == "reports.chromium"
        assert "reports.chromium" in r.json()["detail"] and "'chromium'" in r.json()["detail"]
        fake = tmp_path / "broken-chromium"
        fake.write_text("#!/bin/sh\necho 'cannot open display: simulated failure' >&2\nexit 3\n", encoding="utf-8")
        fake.chmod(0o755)
        api.app.state.settings.reports.chromium = str(fake)
        r = await api.get("/api/v1/reports/ops", format="pdf", **DAY)
        assert r.status_code == 500 and "status 3" in r.json()["detail"]
        assert "simulated failure" in r.json()["detail"]
        # one that hangs: killed at the deadline with the helper it started (its process group), stderr kept
        hung = tmp_path / "hung-chromium"
        hung.write_text(f"#!/bin/sh\necho 'stuck loading' >&2\nsleep 30 &\necho $! > {tmp_path / 'child.pid'}\n"
                        "wait\n", encoding="utf-8")
        hung.chmod(0o755)
        api.app.state.settings.reports.chromium = str(hung)
        api.app.state.settings.reports.pdf_timeout_s = 0.5
        r = await api.get("/api/v1/reports/ops", format="pdf", **DAY)
        assert r.status_code == 500 and "within 0.5 s" in r.json()["detail"] and "stuck loading" in r.json()["detail"]
        child = int((tmp_path / "child.pid").read_text())
        for _ in range(50):
            if not _alive(child):
                break
            await asyncio.sleep(0.05)
        assert not _alive(child), "the browser's child outlived the deadline"
        # prints at once are limited ([reports] pdf_concurrency = 1): a browser that fails when another one runs
        lone = tmp_path / "lone-chromium"
        lone.write_text(f"#!/bin/sh\nmkdir {tmp_path / 'running'} || {{ echo 'another print is running' >&2; exit 9; }}\n"
                        "sleep 0.2\nfor a in \"$@\"; do case $a in --print-to-pdf=*) out=${a#--print-to-pdf=};; esac; done\n"
                        f"printf '%%PDF-1.4 test' > \"$out\"\nrmdir {tmp_path / 'running'}\n", encoding="utf-8")
        lone.chmod(0o755)
        api.app.state.settings.reports.chromium = str(lone)
        api.app.state.settings.reports.pdf_timeout_s = 30
        many = await asyncio.gather(*(api.get("/api/v1/reports/ops", format="pdf", **DAY) for _ in range(3)))
        assert [m.status_code for m in many] == [200] * 3, [m.text for m in many]

    # the CLI prints the same PDF; with a bogus browser path it stops with exit 2 naming the setting
    cfg = tmp_path / "server.toml"
    cfg.write_text(f'[storage]\nurl = "{storage_url(tmp_path)}"\n', encoding="utf-8")
    out = tmp_path / "ops.pdf"
    cli = [sys.executable, "-c", "from posfleet.cli_report import command; command()",
           "--config", str(cfg), "--from", DAY["from"], "--to", DAY["to"], "--format", "pdf"]
    run = subprocess.run([*cli, "--out", str(out)], capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    sizes, fonts, text = _pdf_facts(out.read_bytes())
    assert out.read_bytes().startswith(b"%PDF") and all(abs(w - 595.3) < 2 for w, _h in sizes)
    assert rate in text and "运维服务报告" in text
    cfg.write_text(cfg.read_text(encoding="utf-8") + f'[reports]\nchromium = "{tmp_path / "no-such-chromium"}"\n',
                   encoding="utf-8")
    bad = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "reports.chromium" in bad.stderr and "'chromium'" in bad.stderr, bad.stderr
    assert bad.stdout == ""
