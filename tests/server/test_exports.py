"""Spreadsheet exports (issue 14): ICCIDs, IMSIs and codes with leading zeros survive Excel and WPS as text in the
CSV (a leading tab), the XLSX has typed cells (read back with openpyxl), and both import back unchanged."""

from __future__ import annotations

import csv
import io
import re

from openpyxl import load_workbook

from tests.server.conftest import Api, at, sample
from wire.messages import Event

ICCID = "89860012345678901234"  # 20 digits: a spreadsheet would keep 15 and show 8.98600E+19
IMSI = "460001234567890"


async def _unit_with_sim(api: Api) -> None:
    r = await api.req("PUT", "/api/v1/institutions/0042", json={"name": "石山镇卫生院", "county": "秀英区"})
    assert r.status_code == 200, r.text
    r = await api.req("PUT", "/api/v1/registry/units/HN00050001",
                      json={"institution": "0042", "insurance_sn": "460100000000000123", "note": "=1+1"})
    assert r.status_code == 200, r.text
    t = at("2025-03-03 10:00")
    await api.feed("HN00050001", [sample(0, t)],
                   [Event(seq=1, ts=t, kind="identity", data={"iccid": ICCID, "imsi": IMSI, "carrier": "中国移动"})])


async def test_csv_keeps_digit_strings_as_text_and_imports_back(api: Api) -> None:
    await _unit_with_sim(api)
    r = await api.get("/api/v1/registry/units.csv", lang="en")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
    row = next(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    # what Excel and WPS take as text: a tab before the digits (shown without it), never a bare digit string
    assert row["iccid"] == "\t" + ICCID and row["imsi"] == "\t" + IMSI
    assert row["insurance_sn"] == "\t460100000000000123" and row["institution"] == "\t0042"
    assert row["note"] == "'=1+1"  # a would-be formula stays neutralised (decision 013)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00", row["last_seen"])  # times carry their offset
    back = await api.client.post("/api/v1/registry/units/import", content=r.content, headers=api.h())
    assert (back.json()["imported"], back.json()["errors"]) == (1, []), back.text
    unit = (await api.get("/api/v1/registry/units/HN00050001")).json()
    assert unit["institution"] == "0042" and unit["insurance_sn"] == "460100000000000123" and unit["note"] == "=1+1"
    inst = await api.get("/api/v1/registry/institutions.csv")
    assert inst.content.decode("utf-8-sig").splitlines()[1].startswith("\t0042,石山镇卫生院,")


async def test_xlsx_has_typed_cells_and_imports_back(api: Api) -> None:
    await _unit_with_sim(api)
    r = await api.get("/api/v1/registry/units.xlsx")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert 'filename="units.xlsx"' in r.headers["content-disposition"]
    ws = load_workbook(io.BytesIO(r.content)).worksheets[0]
    head = [c.value for c in ws[1]]
    cells = dict(zip(head, ws[2], strict=True))
    assert cells["ICCID"].value == ICCID and cells["ICCID"].data_type == "s" and cells["ICCID"].number_format == "@"
    assert cells["所属机构编码"].value == "0042" and cells["IMSI"].value == IMSI
    assert cells["备注"].value == "=1+1" and cells["备注"].data_type == "s"  # text, not a formula
    seen = cells["最后上报时间 (UTC+08:00)"]
    assert seen.is_date and seen.value.tzinfo is None
    assert cells["状态"].value == "在用"
    same = await api.get("/api/v1/registry/units.csv", format="xlsx")
    assert same.headers["content-type"] == r.headers["content-type"] and same.content[:2] == b"PK"
    # the same file imports back: the first sheet, headers in Chinese, the time header with its zone ignored
    await api.req("PATCH", "/api/v1/registry/units/HN00050001", json={"note": "changed"})
    back = await api.client.post("/api/v1/registry/units/import", content=r.content, headers=api.h())
    assert (back.json()["imported"], back.json()["errors"]) == (1, []), back.text
    unit = (await api.get("/api/v1/registry/units/HN00050001")).json()
    assert unit["note"] == "=1+1" and unit["institution"] == "0042"


async def test_an_unreadable_xlsx_upload_is_named_not_a_500(api: Api) -> None:
    r = await api.client.post("/api/v1/registry/units/import", content=b"PK\x03\x04 not really a zip",
                              headers=api.h())
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == 0 and "not an XLSX workbook" in r.json()["errors"][0]["error"]
