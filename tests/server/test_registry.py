"""Registry API through the real app: institutions, units, CSV in and out, status history, swap, roles."""

from __future__ import annotations

import csv
import io

from tests.server.conftest import Api, at, sample

INSTITUTIONS_CSV = (
    "\ufeff机构编码,机构名称,区县,统筹区,机构类型,服务时间,联系人\r\n"
    "H001,石山镇卫生院,秀英区,海口市,乡镇卫生院,08:00-18:00,王医生\r\n"
    "V001,美安村卫生室,秀英区,海口市,村卫生室,mon-fri=08:00-17:30;sat=08:00-12:00,李医生\r\n"
    "V002,永兴村卫生室,龙华区,海口市,village_clinic,,\r\n"
).encode()


async def _institutions(api: Api) -> None:
    r = await api.client.post("/api/v1/registry/institutions/import", content=INSTITUTIONS_CSV, headers=api.h())
    assert r.status_code == 200, r.text
    assert r.json() == {"imported": 3, "errors": []}


async def test_csv_import_keeps_good_rows_and_names_each_bad_line_and_field(api: Api) -> None:
    await _institutions(api)
    units = (
        "\ufeff终端SN,医保终端编号,终端类型,型号,厂商,所属机构编码,库存类型,状态,接入方式,备注\r\n"
        "HN00010001,YB460100001,医保POS,P10,百富,H001,已部署,在用,4G,\r\n"
        "HN00010002,YB460100002,医保POS,P10,百富,V001,已部署,在用,有线专网,\r\n"
        "HN00010003,YB460100003,医保POS,P10,百富,V001,已部署,坏了,4G,\r\n"           # line 4: bad status
        "HN00010004,YB460100004,医保POS,P10,百富,X999,已部署,在用,4G,\r\n"           # line 5: unknown institution
        "HN0001/005,YB460100005,医保POS,P10,百富,V001,已部署,在用,4G,\r\n"          # line 6: bad SN
        "HN00010006,YB460100006,医保POS,P10,百富,,备机,备用,4G,县备机\r\n"
        "HN00010001,YB460100007,医保POS,P10,百富,V002,已部署,在用,4G,\r\n"          # line 8: duplicate SN
    ).encode()
    r = await api.client.post("/api/v1/registry/units/import", content=units, headers=api.h())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["imported"] == 3
    assert [(e["line"], e["field"]) for e in body["errors"]] == [
        (4, "status"), (5, "institution"), (6, "sn"), (8, "sn")]
    listing = (await api.get("/api/v1/registry/units")).json()
    assert [u["sn"] for u in listing["items"]] == ["HN00010001", "HN00010002", "HN00010006"]
    u2 = (await api.get("/api/v1/registry/units/HN00010002")).json()
    assert u2["link_type"] == "wired" and u2["county"] == "秀英区" and u2["institution_name"] == "美安村卫生室"
    assert u2["status_history"][0]["status"] == "in_service"
    spare = (await api.get("/api/v1/registry/units/HN00010006")).json()
    assert spare["status"] == "spare" and spare["stock_type"] == "spare" and spare["institution"] is None
    # filters
    by_county = (await api.get("/api/v1/registry/units", county="秀英区")).json()
    assert by_county["total"] == 2
    assert (await api.get("/api/v1/registry/units", status="spare")).json()["total"] == 1


async def test_csv_export_is_utf8_with_bom_in_chinese_and_imports_back(api: Api) -> None:
    await _institutions(api)
    r = await api.req("PUT", "/api/v1/registry/units/HN00020001",
                      json={"insurance_sn": "YB1", "institution": "V001", "vendor": "新大陆", "link_type": "wired"})
    assert r.status_code == 200, r.text
    r = await api.get("/api/v1/registry/units.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0]["终端SN"] == "HN00020001" and rows[0]["厂商"] == "新大陆"
    assert rows[0]["状态"] == "在用" and rows[0]["接入方式"] == "有线专网" and rows[0]["所属机构"] == "美安村卫生室"
    # the exported file imports back without errors and without changes
    back = await api.client.post("/api/v1/registry/units/import", content=r.content, headers=api.h())
    assert {k: back.json()[k] for k in ("imported", "errors", "added", "changed", "unchanged")} == \
        {"imported": 1, "errors": [], "added": 0, "changed": 0, "unchanged": 1}
    again = (await api.get("/api/v1/registry/units/HN00020001")).json()
    assert again["link_type"] == "wired" and again["vendor"] == "新大陆" and len(again["status_history"]) == 1
    inst = await api.get("/api/v1/registry/institutions.csv", lang="en")
    assert inst.content.decode("utf-8-sig").splitlines()[0] == "code,name,county,region,type,hours,contact,level"


async def test_swap_records_both_status_changes_at_one_instant(api: Api) -> None:
    await _institutions(api)
    await api.req("PUT", "/api/v1/registry/units/HN00030001", json={"institution": "H001"})
    await api.req("PUT", "/api/v1/registry/units/HN00030009", json={"status": "spare", "stock_type": "spare"})
    api.clock.t = at("2025-03-03 14:07")
    r = await api.req("POST", "/api/v1/units/HN00030001/swap", json={"spare_sn": "HN00030009", "note": "读卡器故障"})
    assert r.status_code == 200, r.text
    old = (await api.get("/api/v1/registry/units/HN00030001")).json()
    new = (await api.get("/api/v1/registry/units/HN00030009")).json()
    assert old["status"] == "in_repair" and new["status"] == "in_service"
    assert new["institution"] == "H001" and new["stock_type"] == "deployed"
    assert old["status_history"][-1]["from_ts"] == new["status_history"][-1]["from_ts"] == "2025-03-03T14:07:00+08:00"
    assert "读卡器故障" in old["status_history"][-1]["note"]
    # the unit is no longer in service: a second swap is refused and nothing changes
    again = await api.req("POST", "/api/v1/units/HN00030001/swap", json={"spare_sn": "HN00030009"})
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "sn"
    assert len((await api.get("/api/v1/registry/units/HN00030009")).json()["status_history"]) == 2


async def test_viewer_reads_but_cannot_write(api: Api) -> None:
    await _institutions(api)
    assert (await api.get("/api/v1/registry/units", role="viewer")).status_code == 200
    assert (await api.get("/api/v1/institutions", role="viewer")).json()["total"] == 3
    # paged in SQL, the same pages as before: by code, the total of the filtered list whatever the page
    got = (await api.get("/api/v1/institutions", role="viewer", limit=1, offset=1)).json()
    assert (got["total"], [i["code"] for i in got["items"]]) == (3, ["V001"])
    got = (await api.get("/api/v1/institutions", role="viewer", county="秀英区", limit=1, offset=5)).json()
    assert (got["total"], got["items"]) == (2, [])
    for method, path, kw in [
        ("PUT", "/api/v1/registry/units/HN00040001", {"json": {}}),
        ("POST", "/api/v1/registry/units/import", {"content": b"sn\r\nHN00040001\r\n"}),
        ("PUT", "/api/v1/institutions/X1", {"json": {"name": "x"}}),
        ("POST", "/api/v1/units/HN00040001/swap", {"json": {"spare_sn": "HN00040002"}}),
        ("POST", "/api/v1/registry/units/HN00040001/status", {"json": {"status": "retired"}}),
    ]:
        for role in ("viewer", "engineer"):
            r = await api.req(method, path, role=role, **kw)
            assert r.status_code == 403, (method, path, role, r.text)
    assert (await api.get("/api/v1/registry/units")).json()["total"] == 0


async def test_bad_input_is_refused_naming_the_field(api: Api) -> None:
    r = await api.req("PUT", "/api/v1/institutions/H9", json={"name": "某卫生院", "hours": "18:00-08:00"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "hours"
    r = await api.req("PUT", "/api/v1/registry/units/HN00050001", json={"institution": "NOPE"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "institution"
    r = await api.req("PUT", "/api/v1/registry/units/HN00050001", json={"link_type": "satellite"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "link_type"
    r = await api.client.post("/api/v1/registry/units/import", content=b"sn,colour\r\nHN1,red\r\n", headers=api.h())
    assert r.json()["errors"] == [{"line": 1, "field": "colour", "error": "unknown column"}]


async def test_unit_heard_by_ingest_appears_in_service_without_institution(api: Api) -> None:
    await api.minutes("HN00060001", at("2025-03-03 09:00"), 3)
    await api.settle()
    unit = (await api.get("/api/v1/registry/units/HN00060001")).json()
    assert unit["status"] == "in_service" and unit["institution"] is None
    assert unit["status_history"] == [{"from_ts": "2025-03-03T09:00:00+08:00", "status": "in_service", "by": "ingest",
                                       "note": "first seen"}]
    # an older sample delivered late moves the automatic start back
    await api.feed("HN00060001", [sample(99, at("2025-03-03 08:30"))])
    await api.settle()
    unit = (await api.get("/api/v1/registry/units/HN00060001")).json()
    assert unit["status_history"][0]["from_ts"] == "2025-03-03T08:30:00+08:00"


def test_registry_accepts_every_institution_type_a_scenario_may_name() -> None:
    from typing import get_args

    from server.registry.models import LABELS_ZH, InstitutionType
    from simulator.scenario import INSTITUTION_TYPES

    assert set(get_args(InstitutionType)) == set(INSTITUTION_TYPES)
    assert all(t in LABELS_ZH for t in INSTITUTION_TYPES), "every type has its Chinese label"


async def test_import_preview_stores_nothing_and_says_what_each_line_would_do(api: Api) -> None:
    await _institutions(api)
    await api.req("PUT", "/api/v1/registry/units/HN00050001", json={"institution": "V001", "vendor": "百富", "model": "P10"})
    units = (
        "终端SN,型号,厂商,所属机构编码,状态\r\n"
        "HN00050001,P10,新大陆,V001,在用\r\n"     # line 2: the vendor changes
        "HN00050002,A930,百富,H001,在用\r\n"      # line 3: a new unit
        "HN00050003,A930,百富,X999,在用\r\n"      # line 4: unknown institution
    ).encode()
    r = await api.client.post("/api/v1/registry/units/import", params={"dry_run": "true"}, content=units, headers=api.h())
    assert r.status_code == 200, r.text
    pre = r.json()
    assert (pre["dry_run"], pre["imported"], pre["added"], pre["changed"], pre["unchanged"]) == (True, 0, 1, 1, 0)
    assert [(c["line"], c["sn"], c["action"]) for c in pre["changes"]] == [(2, "HN00050001", "change"), (3, "HN00050002", "add")]
    assert pre["changes"][0]["fields"] == {"vendor": ["百富", "新大陆"]}
    assert [(e["line"], e["field"]) for e in pre["errors"]] == [(4, "institution")]
    listing = (await api.get("/api/v1/registry/units")).json()
    assert [u["sn"] for u in listing["items"]] == ["HN00050001"], "a preview stores nothing"
    assert (await api.get("/api/v1/registry/units/HN00050001")).json()["vendor"] == "百富"
    r = await api.client.post("/api/v1/registry/units/import", content=units, headers=api.h())
    assert (r.json()["imported"], r.json()["dry_run"]) == (2, False)
    assert (await api.get("/api/v1/registry/units/HN00050001")).json()["vendor"] == "新大陆"


async def test_import_with_fewer_columns_changes_only_those_columns(api: Api) -> None:
    """A file holding some columns leaves the others as stored: no blanked insurance SN, no spare put back in
    service; an empty cell in a column the file has empties that field, and the preview says exactly that."""
    await _institutions(api)
    full = (
        "终端SN,医保终端编号,终端类型,型号,厂商,所属机构编码,库存类型,状态,接入方式,备注\r\n"
        "HN00060001,YB460100061,医保POS,P10,百富,H001,已部署,在用,有线专网,柜台左\r\n"
        "HN00060002,YB460100062,医保POS,P10,百富,,备机,备用,4G,县备机\r\n"
    ).encode()
    r = await api.client.post("/api/v1/registry/units/import", content=full, headers=api.h())
    assert r.json()["imported"] == 2, r.text
    partial = (
        "终端SN,厂商,备注\r\n"
        "HN00060001,新大陆,\r\n"       # vendor changes, the note is emptied on purpose
        "HN00060002,百富,县备机\r\n"    # nothing changes
    ).encode()
    r = await api.client.post("/api/v1/registry/units/import", params={"dry_run": "true"}, content=partial,
                              headers=api.h())
    pre = r.json()
    assert (pre["added"], pre["changed"], pre["unchanged"], pre["errors"]) == (0, 1, 1, [])
    assert pre["changes"][0]["fields"] == {"vendor": ["百富", "新大陆"], "note": ["柜台左", ""]}
    r = await api.client.post("/api/v1/registry/units/import", content=partial, headers=api.h())
    assert r.json()["imported"] == 2
    u1 = (await api.get("/api/v1/registry/units/HN00060001")).json()
    assert (u1["vendor"], u1["note"], u1["insurance_sn"], u1["institution"], u1["link_type"], u1["model"]) == \
        ("新大陆", "", "YB460100061", "H001", "wired", "P10")
    u2 = (await api.get("/api/v1/registry/units/HN00060002")).json()
    assert (u2["status"], u2["stock_type"], u2["insurance_sn"], u2["link_type"]) == ("spare", "spare", "YB460100062", "4g_vpdn")
    assert [h["status"] for h in u2["status_history"]] == ["spare"], "no status change recorded"
    # an empty cell in a column that may not be empty (status) keeps the stored value; the institution empties
    r = await api.client.post("/api/v1/registry/units/import", content="终端SN,状态,所属机构编码\r\nHN00060002,,\r\n"
                              "HN00060001,,\r\n".encode(), headers=api.h())
    assert r.json()["changes"] == [{"line": 3, "sn": "HN00060001", "action": "change",
                                    "fields": {"institution": ["H001", None]}}]
    assert (await api.get("/api/v1/registry/units/HN00060002")).json()["status"] == "spare"
    u1 = (await api.get("/api/v1/registry/units/HN00060001")).json()
    assert (u1["status"], u1["institution"], u1["insurance_sn"]) == ("in_service", None, "YB460100061")


async def test_institution_import_with_fewer_columns_keeps_the_others(api: Api) -> None:
    await _institutions(api)
    r = await api.client.post("/api/v1/registry/institutions/import",
                              content="机构编码,服务时间\r\nH001,07:30-17:30\r\nN001,08:00-12:00\r\n".encode(),
                              headers=api.h())
    assert r.json()["imported"] == 1
    assert [(e["line"], e["field"]) for e in r.json()["errors"]] == [(3, "name")], "a new institution needs a name"
    h = {i["code"]: i for i in (await api.get("/api/v1/institutions")).json()["items"]}
    assert (h["H001"]["hours"], h["H001"]["name"], h["H001"]["county"], h["H001"]["type"], h["H001"]["contact"]) == \
        ("07:30-17:30", "石山镇卫生院", "秀英区", "health_centre", "王医生")
    assert "N001" not in h
    r = await api.client.post("/api/v1/registry/institutions/import",
                              content="机构编码,机构名称\r\nN001,新村卫生室\r\n".encode(), headers=api.h())
    assert r.json() == {"imported": 1, "errors": []}
    h = {i["code"]: i for i in (await api.get("/api/v1/institutions")).json()["items"]}
    assert (h["N001"]["name"], h["N001"]["type"], h["N001"]["hours"]) == ("新村卫生室", "village_clinic", "")
