"""The API's conventions (issue 14, docs/api.md) hold for every operation: each declares its answer; lists are
``{total, limit, offset, items}`` pages; times in answers are ISO 8601 with the fleet's offset (no epoch numbers);
every error, whatever raised it (a route, parameter validation, the role check, the body limit, the rate limit),
has the one documented body."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from server.alerts.lifecycle import raise_alert
from server.answers import iso
from server.auth.guard import MAX_BODY
from server.auth.openapi import ErrorBody
from tests.server.conftest import Api, at, make_api, sample
from wire.messages import Event

EPOCH_RANGE = (946_684_800, 4_102_444_800)  # what a time in epoch seconds (2000..2099) looks like
OFFSET_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?\+08:00")
NOT_TIMES = ("_bytes", "bytes", "_mb", "size", "id")  # large numbers that are no times
OPAQUE = {"data", "params", "detail", "output", "identity", "inventory", "body"}  # as terminals and people wrote


def _declared(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, ops in spec["paths"].items() for m, op in ops.items()]


async def test_every_operation_declares_its_answer_errors_and_pages(tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        spec = (await api.client.get("/openapi.json")).json()
    ops = _declared(spec)
    assert len(ops) >= 46, len(ops)
    schemas = spec["components"]["schemas"]

    def resolve(s: dict[str, Any]) -> dict[str, Any]:
        return schemas[s["$ref"].rsplit("/", 1)[1]] if "$ref" in s else s

    for method, path, op in ops:
        ok = {c: r for c, r in op["responses"].items() if c.startswith("2")}
        assert ok, (method, path)
        for code, r in ok.items():
            for media, body in r["content"].items():
                s = resolve(body["schema"])
                if media == "application/json":  # a model with named properties, not "any object"
                    assert s.get("properties"), (method, path, code, s)
                    props = s["properties"]
                    if "items" in props and props["items"].get("type") == "array" and path.startswith("/api/"):
                        assert {"total", "limit", "offset"} <= set(props), (method, path, "a page")
                        names = {p["name"] for p in op.get("parameters", [])}
                        assert {"limit", "offset"} <= names, (method, path, names)
                    for name, p in props.items():  # a time is a string with format date-time
                        if name.endswith("_ts") or name in ("ts", "last_seen", "first_seen", "created"):
                            alts = p.get("anyOf", [p])
                            assert any(a.get("format") == "date-time" for a in alts), (method, path, name, p)
                else:
                    assert s.get("type") == "string", (method, path, media)
        if path.startswith(("/api/", "/dashboard/api/")):
            for code, r in op["responses"].items():
                if code[0] in "45":
                    ref = r["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (method, path, code)


def _epochs(value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in OPAQUE:
                _epochs(v, f"{path}.{k}", out)
    elif isinstance(value, list):
        for v in value:
            _epochs(v, f"{path}[]", out)
    elif isinstance(value, int | float) and not isinstance(value, bool) and EPOCH_RANGE[0] <= value <= EPOCH_RANGE[1]:
        if not path.rsplit(".", 1)[-1].endswith(NOT_TIMES):
            out.append(f"{path}={value}")


async def _fleet(api: Api) -> None:
    await api.req("PUT", "/api/v1/institutions/I1", json={"name": "石山镇卫生院", "county": "C1"})
    await api.req("PUT", "/api/v1/registry/units/HN00000001", json={"institution": "I1"})
    t = at("2025-03-03 08:00")
    await api.feed("HN00000001", [sample(k, t + 60 * k, uptime_s=600 + 60 * k) for k in range(30)],
                   [Event(seq=1, ts=t, kind="identity", data={"iccid": "89860012345678901234"})])
    await api.feed("HN00000002", [sample(0, t, connected=False, rtt_ms=None)])
    await api.req("POST", "/api/v1/registry/units/HN00000001/status", json={"status": "in_repair", "at": "2025-03-03T09:00"})
    await api.req("POST", "/api/v1/registry/units/HN00000001/status", json={"status": "in_service"})
    api.clock.t = at("2025-03-03 12:00")
    await api.settle()
    await api.req("POST", "/api/v1/alerts/evaluate")
    storage = api.app.state.storage  # two alerts (as a rule raises them), one acknowledged, one closed
    for key in ("a", "b"):
        await raise_alert(storage, key, "sim_changed", "HN00000001", "C1", at("2025-03-03 10:00"), "SIM changed",
                          {"old_iccid": "1", "new_iccid": "2"}, False)
    first, second = (await api.get("/api/v1/alerts", kind="sim_changed")).json()["items"]
    assert (await api.req("POST", f"/api/v1/alerts/{first['id']}/ack", json={"note": "on it"})).status_code == 200
    assert (await api.req("POST", f"/api/v1/alerts/{second['id']}/close", json={"note": "done"})).status_code == 200


async def test_no_answer_carries_an_epoch_number_and_times_carry_the_offset(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        await _fleet(api)
        alerts = (await api.get("/api/v1/alerts", open="false")).json()
        assert alerts["total"] >= 2 and all(OFFSET_TIME.fullmatch(a["opened_ts"]) for a in alerts["items"])
        assert any(a["acked_ts"] for a in alerts["items"]) and any(a["closed_ts"] for a in alerts["items"])
        day = {"from": "2025-03-03", "to": "2025-03-03"}
        gets = [("/api/v1/units", {}), ("/api/v1/units/HN00000001", {}), ("/api/v1/units/HN00000001/samples", {}),
                ("/api/v1/units/HN00000001/events", {}), ("/api/v1/institutions", {}), ("/api/v1/institutions/I1", {}),
                ("/api/v1/registry/units", {}), ("/api/v1/registry/units/HN00000001", {}),
                ("/api/v1/availability", {**day, "group_by": "unit"}), ("/api/v1/availability/flagged", day),
                ("/api/v1/units/HN00000001/slots", {"date": "2025-03-03"}), ("/api/v1/availability/status", {}),
                ("/api/v1/analytics/live", {}), ("/api/v1/alerts", {"open": "false"}), ("/dashboard/api/context", {}),
                ("/dashboard/api/units", {}), ("/api/v1/audit", {}), ("/api/v1/audit/limits", {}),
                ("/api/v1/ingest/stats", {}), ("/api/v1/ingest/dead-letters", {}), ("/healthz", {})]
        seen_times = 0
        for path, params in gets:
            r = await api.get(path, **params)
            assert r.status_code == 200, (path, r.text)
            leaks: list[str] = []
            _epochs(r.json(), path, leaks)
            assert not leaks, leaks
            text = r.text
            seen_times += len(OFFSET_TIME.findall(text))
        assert seen_times > 50
        unit = (await api.get("/api/v1/units/HN00000001")).json()
        assert OFFSET_TIME.fullmatch(unit["last_seen"]) and unit["latest"]["ts"] == "2025-03-03T08:29:00+08:00"
        assert datetime.fromisoformat(unit["latest"]["boot_time"]) == datetime.fromisoformat("2025-03-03T07:50:00+08:00")
        page = (await api.get("/api/v1/units/HN00000001/samples", limit=10, offset=10)).json()
        assert (page["total"], page["limit"], page["offset"]) == (None, 10, 10)
        assert page["items"][0]["ts"] == "2025-03-03T08:19:00+08:00", "the 11th newest"
        audit = (await api.get("/api/v1/audit", since="2025-03-03", limit=1, offset=0)).json()
        assert audit["limit"] == 1 and audit["total"] >= 1 and len(audit["items"]) == 1


_ERROR = TypeAdapter(ErrorBody)


def _error_body(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (status, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    _ERROR.validate_python(body, strict=True)
    assert set(body) <= {"detail", "errors", "reason"} and isinstance(body["detail"], str), body
    return body  # type: ignore[no-any-return]


async def test_every_error_has_the_one_body(tmp_path: Path) -> None:
    async with make_api(tmp_path, extra={"api": {"rate_per_s": 1, "burst": 8}}) as api:
        c = api.client
        _error_body(await c.get("/api/v1/units"), 401)
        _error_body(await c.get("/api/v1/units", headers={"Authorization": "Bearer pf_nobody"}), 401)
        _error_body(await api.req("POST", "/api/v1/alerts/evaluate", role="viewer"), 403)
        b = _error_body(await api.get("/api/v1/units/HN29999999", role="engineer"), 404)
        assert b["errors"][0]["field"] == "sn"
        b = _error_body(await api.get("/api/v1/units", role="engineer", limit=0), 422)
        assert b["errors"][0]["field"] == "limit"
        b = _error_body(await api.req("PUT", "/api/v1/registry/units/HN1", role="engineer", content=b"{"), 403)
        big = b"x" * (MAX_BODY + 1)
        b = _error_body(await api.req("POST", "/api/v1/registry/units/import", role="engineer", content=big), 413)
        assert b["errors"][0]["field"] == "body"

        async def chunks() -> Any:  # no Content-Length: refused as it grows past the limit
            for _ in range(MAX_BODY // 2**20 + 2):
                yield b"y" * 2**20

        _error_body(await c.post("/api/v1/registry/units/import", content=chunks(), headers=api.h()), 413)
        for _ in range(12):  # the viewer's budget: 8 at once, one a second
            r = await api.get("/api/v1/units", role="viewer")
        _error_body(r, 429)
        assert int(r.headers["retry-after"]) >= 1


@settings(max_examples=300, deadline=None, derandomize=True)
@given(ts=st.integers(EPOCH_RANGE[0] - 10**6, EPOCH_RANGE[1] + 10**6),
       zone=st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "America/Santiago", "UTC", "Asia/Kolkata"]))
def test_answer_times_read_back_to_the_same_instant(ts: int, zone: str) -> None:
    text = iso(ts, ZoneInfo(zone))
    assert text == datetime.fromtimestamp(ts, ZoneInfo(zone)).isoformat(timespec="seconds")
    assert datetime.fromisoformat(text).timestamp() == ts


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(ts=st.floats(EPOCH_RANGE[0] - 10**6, EPOCH_RANGE[1] + 10**6) | st.integers(EPOCH_RANGE[0], EPOCH_RANGE[1]).map(
    lambda s: s + 0.0005) | st.integers(EPOCH_RANGE[0], EPOCH_RANGE[1]).map(lambda s: s + 0.9995),
       zone=st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "UTC", "Asia/Kolkata"]))
def test_answer_times_with_a_fraction_are_the_milliseconds_datetime_writes(ts: float, zone: str) -> None:
    """Command and job timings keep fractions; the fixed-offset short way writes what a zone-aware datetime writes,
    rounding included (a fraction rounding up to the next second)."""
    text = iso(ts, ZoneInfo(zone))
    if ts.is_integer():
        assert text == datetime.fromtimestamp(int(ts), ZoneInfo(zone)).isoformat(timespec="seconds")
    else:
        assert text == datetime.fromtimestamp(round(ts, 3), ZoneInfo(zone)).isoformat(timespec="milliseconds")


async def test_a_failure_of_the_servers_own_answers_with_the_error_body_too(tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        async def broken() -> None:  # a route that fails as a bug would: the answer, not the route, is tested
            raise RuntimeError("a bug")

        api.app.add_api_route("/api/v1/broken", broken)
        transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            body = _error_body(await c.get("/api/v1/broken", headers=api.h()), 500)
        assert "RuntimeError" in body["detail"] and "a bug" not in body["detail"], body



async def test_every_declared_answer_time_is_converted_from_epoch(tmp_path: Path) -> None:
    """The class behind ``last_used`` coming out as an epoch number under an ISO schema: every answer property the
    schema calls a date-time is a key :func:`server.answers.timed` converts, or one the code writes as text."""
    from server.answers import TIME_KEYS

    async with make_api(tmp_path) as api:
        spec = (await api.client.get("/openapi.json")).json()

    def is_time(prop: dict[str, Any]) -> bool:
        return prop.get("format") == "date-time" or any(is_time(p) for p in prop.get("anyOf", []))

    declared = {name for schema in spec["components"]["schemas"].values()
                for name, prop in (schema.get("properties") or {}).items() if is_time(prop)}
    written_as_text = {"now_iso", "from", "to", "start"}  # made as ISO strings where they are answered
    assert declared - TIME_KEYS - written_as_text == set()
