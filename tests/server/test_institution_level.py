"""Institutions have a level (issue 18: the tender's and the bureau's statistics group by it): a closed set with
Chinese labels, read from the import's 机构级别 column (the words people write, the kinds that stand for a level),
refused naming the field when it is none of them, written back in the export, filtered on in the list and in
coverage, and counted in service statistics per level; a database from before the level serves it (the schema
step itself: tests/storage/test_institution_level_upgrade.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.exports import Column, Sheet, write_xlsx
from tests.server.conftest import Api, at, make_api
from wire.messages import Event

CSV = ("机构编码,机构名称,区县,统筹区,机构类型,机构级别\r\n"
       "V001,东村卫生室,长安区,西安市,村卫生室,村卫生室\r\n"       # the kind, standing for its level
       "T001,韦曲街道社区卫生服务中心,长安区,西安市,社区卫生服务中心,乡镇（街道）级\r\n"
       "H001,长安区医院,长安区,西安市,医院,县级\r\n"
       "H002,西安市中心医院,雁塔区,西安市,医院,市级\r\n"
       "X001,某诊所,长安区,西安市,村卫生室,\r\n"                    # not given
       "B001,某医院,长安区,西安市,医院,三甲\r\n")                  # not a level


async def _import(api: Api, body: bytes) -> dict:
    r = await api.req("POST", "/api/v1/registry/institutions/import", content=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_level_is_imported_validated_exported_and_filtered(api: Api) -> None:
    got = await _import(api, CSV.encode())
    assert got["imported"] == 5
    [err] = got["errors"]
    assert (err["line"], err["field"]) == (7, "level") and "三甲" in err["error"] and "村（社区）级" in err["error"]
    listed = {i["code"]: i["level"] for i in (await api.get("/api/v1/institutions")).json()["items"]}
    assert listed == {"V001": "village", "T001": "township", "H001": "county_level", "H002": "prefectural",
                      "X001": ""}
    village = (await api.get("/api/v1/institutions", level="village")).json()
    assert [i["code"] for i in village["items"]] == ["V001"] and village["total"] == 1
    bad = await api.get("/api/v1/institutions", level="三甲")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "level"

    put = await api.req("PUT", "/api/v1/institutions/X001", json={"name": "某诊所", "county": "长安区",
                                                                  "level": "provincial"})
    assert put.status_code == 200 and put.json()["level"] == "provincial"
    wrong = await api.req("PUT", "/api/v1/institutions/X001", json={"name": "某诊所", "level": "national"})
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "level"

    exported = (await api.get("/api/v1/registry/institutions.csv")).content.decode("utf-8-sig")
    head, *rows = exported.splitlines()
    assert "机构级别" in head.split(",")
    assert any(r.startswith("\tV001,") or r.startswith("V001,") for r in rows)
    assert "村（社区）级" in exported and "乡镇（街道）级" in exported and "县级" in exported
    # the export imports back unchanged; a file without the column leaves the levels as they are
    again = await _import(api, exported.encode("utf-8-sig"))
    assert again["errors"] == [] and again["imported"] == 5
    await _import(api, "机构编码,联系人\r\nV001,王医生\r\n".encode())
    after = {i["code"]: i["level"] for i in (await api.get("/api/v1/institutions")).json()["items"]}
    assert after == {**listed, "X001": "provincial"}

    # an XLSX upload: the level's English code is taken too
    book = write_xlsx([Sheet("机构", [Column("code", "机构编码", "code"), Column("name", "机构名称", "name"),
                                     Column("level", "机构级别", "level")],
                             [{"code": "V009", "name": "西村卫生室", "level": "Village"}])], "zh", "Asia/Shanghai")
    assert (await _import(api, book))["imported"] == 1
    assert (await api.get("/api/v1/institutions/V009")).json()["level"] == "village"


async def test_statistics_count_services_and_coverage_by_level(api: Api) -> None:
    await _import(api, CSV.encode())
    st = api.app.state.storage
    await st.upsert_registry_units([{"sn": "PV01", "institution": "V001"}, {"sn": "PT01", "institution": "T001"},
                                    {"sn": "PT02", "institution": "T001"}], at("2025-03-01 00:00"), "test")
    api.app.state.registry.invalidate()
    api.clock.t = at("2025-03-09 12:00")
    h = at("2025-03-03 09:00")
    for sn, n in (("PV01", 3), ("PT01", 10), ("PT02", 7)):
        await api.feed(sn, [], [Event(seq=1, ts=h + 3600, kind="svc", data={"hour": h, "services": n, "face": n})])
    await api.app.state.access.flush()
    s = (await api.get("/api/v1/statistics/services", period="week")).json()
    assert s["totals"]["services"] == 20
    assert s["by_level"] == [{"level": "township", "services": 17, "share": 0.85},
                             {"level": "village", "services": 3, "share": 0.15}]

    c = (await api.get("/api/v1/statistics/coverage")).json()
    by_level = {g["key"]: (g["institutions"], g["covered"]) for g in c["by_level"]}
    assert by_level == {"": (1, 0), "county_level": (1, 0), "prefectural": (1, 0), "township": (1, 1),
                        "village": (1, 1)}
    township = (await api.get("/api/v1/statistics/coverage", level="township")).json()
    assert [(g["key"], g["institutions"], g["covered"]) for g in township["by_county"]] == [("长安区", 1, 1)]
    assert (await api.get("/api/v1/statistics/coverage", level="三甲")).status_code == 422


async def test_a_database_made_before_the_level_serves_the_api(tmp_path: Path) -> None:
    """Through the app: an institution stored before the column existed lists with level '' and takes one."""
    db = tmp_path / "fleet.sqlite"
    from server.storage.schema import MIGRATIONS

    con = sqlite3.connect(db)
    for n, _what, scripts in MIGRATIONS:
        if n < 12:
            for script in scripts:
                con.executescript(script)
    con.execute("PRAGMA user_version = 11")
    con.execute("INSERT INTO institutions(code, name, county, updated) VALUES ('I1', '东村卫生室', '长安区', 1)")
    con.commit()
    con.close()
    from tests import backend

    if backend.NEW_DATABASE[0] is not None:
        pytest.skip("a SQLite file made by hand: tests/storage/test_institution_level_upgrade.py upgrades PostgreSQL")
    async with make_api(tmp_path) as api:
        assert (await api.get("/api/v1/institutions/I1")).json()["level"] == ""
        r = await api.req("PUT", "/api/v1/institutions/I1", json={"name": "东村卫生室", "level": "村级"})
        assert r.status_code == 200 and r.json()["level"] == "village"
