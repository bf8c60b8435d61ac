"""The ingest boundary through the real app (real ingest path, real SQLite file, real roll-up pass).

Finding 3 of issue 12: one sample with ``cpu`` = NaN froze the hourly roll-ups of the whole fleet for as long
as the row was kept; a healthy unit's 600 of 600 slots a day became 0 of 0. And the server stored free-form
event data a terminal sent, names and ID numbers included.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from server.storage.sqlite import DEAD_LETTERS_KEPT  # noqa: F401  (the bound the docs name)
from tests.backend import db_execute, db_rows, storage_url
from tests.server.conftest import OK_CHECKS, Api, at, make_api
from wire import boundary, codec
from wire.messages import Event

DAY = {"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-04T00:00:00+08:00"}


async def _raw(api: Api, sn: str, batch: dict) -> None:
    payload = b"\x01" + msgspec.msgpack.encode({"sn": sn, "e": 1, **batch})
    await api.app.state.ingest._process([(f"pf/{sn}/t", payload, 0, 0)])


def _slots(body: dict, sn: str) -> tuple[int, int, int]:
    u = {i["sn"]: i for i in body["items"]}[sn]
    return u["service_slots"], u["intact_slots"], u["no_data_slots"]


def test_inbound_structs_match_the_outbound_ones() -> None:
    """The strict structs decode exactly the fields the agent encodes (no field silently ignored)."""
    for out, strict in boundary.PAIRS:
        assert boundary.check_fields(out, strict) == [], out.__name__


async def test_nan_cpu_does_not_freeze_the_fleets_rollups(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        for sn in ("HNA0000001", "HNB0000001"):
            assert (await api.req("PUT", f"/api/v1/registry/units/{sn}", json={})).status_code == 200
        await api.minutes("HNA0000001", at("2025-03-03 08:00"), 600)
        checks = {k: [v.state] for k, v in OK_CHECKS.items()}
        # B's whole day, each sample with a CPU no machine reports
        await _raw(api, "HNB0000001", {"S": [{"q": k, "t": at("2025-03-03 08:00") + 60 * k, "h": checks,
                                              "u": float("nan"), "l": float("inf")} for k in range(600)]})
        api.clock.t = at("2025-03-04 00:00")
        await api.settle()
        body = (await api.get("/api/v1/availability", group_by="unit", **DAY)).json()
        assert body["complete"] is True
        assert _slots(body, "HNA0000001") == (600, 600, 0)
        assert _slots(body, "HNB0000001") == (600, 600, 0)  # the bad fields dropped, the slots still count
        stats = (await api.get("/api/v1/ingest/stats")).json()
        assert stats["fields_dropped"] == 1200
        # nothing non-finite was stored
        assert db_rows(storage_url(tmp_path), "select count(*) from samples where body like '%NaN%' or "
                       "body like '%Infinity%'") == [("0",)]


async def test_a_stored_row_the_counter_cannot_use_is_skipped_not_fatal(tmp_path: Path) -> None:
    """A row that reached the database before the boundary existed (or by hand) is skipped and reported."""
    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        for sn in ("HNA0000001", "HNB0000001"):
            assert (await api.req("PUT", f"/api/v1/registry/units/{sn}", json={})).status_code == 200
        await api.minutes("HNA0000001", at("2025-03-03 08:00"), 600)
        await api.minutes("HNB0000001", at("2025-03-03 08:00"), 600)
        db_execute(storage_url(tmp_path), "UPDATE samples SET checks = '{not json' WHERE sn = 'HNB0000001' AND seq = 5")
        api.clock.t = at("2025-03-04 00:00")
        await api.settle()
        body = (await api.get("/api/v1/availability", group_by="unit", **DAY)).json()
        assert body["complete"] is True
        assert _slots(body, "HNA0000001") == (600, 600, 0)
        assert _slots(body, "HNB0000001") == (600, 599, 1)  # that one minute: no data
        # reported: once by each pass that read it (the background pass the feed woke may have read it too)
        assert api.app.state.availability.stats["rows_skipped"] >= 1


async def test_event_data_outside_the_schema_is_never_stored(tmp_path: Path) -> None:
    """Rule 4 at the server: a terminal's name, ID number, address and phone number in event data are not stored
    (fields outside the kind's schema are dropped; numbers inside allowed free text are masked)."""
    async with make_api(tmp_path) as api:
        now = int(api.clock.t)
        person = {"name": "张三丰", "id_number": "11010519491231002X", "address": "海南省海口市秀英区长滨路1号",
                  "phone": "13912345678"}
        await api.feed("HN00000001", [], events=[
            Event(seq=1, ts=now, kind="inventory", data={"agent": "1.0", "hostname": "pos-01", **person}),
            Event(seq=2, ts=now, kind="cmd", data={"id": "c1", "type": "selftest", "state": "done", "code": 0,
                                                   "output": "card 11010519491231002X read; call 13912345678"}),
        ])
        url = storage_url(tmp_path)
        text = " ".join(r[0] for r in db_rows(url, "select data from events"))
        text += " ".join(str(r) for r in db_rows(url, "select * from units"))
        for value in ("张三丰", "11010519491231002X", "长滨路", "13912345678", "id_number", "address"):
            assert value not in text, value
        assert "pos-01" in text and "1101**********002X" in text
        units = (await api.get("/api/v1/units/HN00000001/events")).text
        assert "11010519491231002X" not in units and "张三丰" not in units


async def test_unknown_event_kinds_and_old_dates_are_refused_and_named(tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        now = int(api.clock.t)
        await _raw(api, "HN00000002", {
            "S": [{"q": 1, "t": 86400, "h": {}}, {"q": 2, "t": now - 90 * 86400, "h": {}}],
            "E": [{"q": 3, "t": now, "e": "x" * 200_000}, {"q": 4, "t": now, "e": "shell", "d": {"cmd": "id"}}],
        })
        stats = (await api.get("/api/v1/ingest/stats")).json()
        assert stats["rejected_items"] == {"too_old": 1, "schema": 1, "event_kind": 1}
        url = storage_url(tmp_path)
        assert db_rows(url, "select count(*) from samples") == [("1",)]  # 90 days old is kept
        assert db_rows(url, "select count(*) from events") == [("0",)]


async def test_events_have_a_retention(tmp_path: Path) -> None:
    async with make_api(tmp_path, extra={"ingest": {"event_retention_days": 30}}) as api:
        now = int(api.clock.t)
        await api.feed("HN00000003", [], events=[
            Event(seq=1, ts=now - 40 * 86400, kind="identity", data={"iccid": "898600"}),
            Event(seq=2, ts=now - 1, kind="identity", data={"iccid": "898601"})])
        from server.app import purge_raw_samples

        await purge_raw_samples(api.app)
        assert db_rows(storage_url(tmp_path), "select seq from events") == [("2",)]


def test_codec_turns_deep_nesting_into_a_counted_reason() -> None:
    payload = b"\x01" + b"\x81\xa2sn" + b"\x91" * 100_000 + b"\x01"
    try:
        codec.decode(payload, boundary.InBatch)
    except codec.DecodeError as err:
        assert err.reason in ("nesting", "schema")
    else:
        raise AssertionError("decoded")


def test_a_true_seq_is_not_named_as_seq_one() -> None:
    """msgpack ``true`` is a Python int; named in an acknowledgement it came back as ``[true, true, why]``, which the
    terminal cannot decode (so it dropped the whole acknowledgement, good ranges included) and which stopped the
    fuzz test's terminal session."""
    for q, named in ((True, None), (False, None), (7, 7)):
        raw = msgspec.Raw(msgspec.msgpack.encode({"q": q, "t": "not a time"}))
        try:
            boundary.sample(raw)
        except boundary.ItemError as err:
            assert err.seq == named, (q, err.seq)
        else:
            raise AssertionError(f"a sample with a text time was accepted (q={q!r})")
